package daemon

import (
	"fmt"
	"time"

	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/daemon/state"
)

// The planner decides, from a track's recorded state and its jobs, which jobs
// should exist and which waiting ones no longer should run. It is pure: the
// callers (plan.go) read its inputs, write its result in one transaction, or,
// in a dry run, only report it.

// trackPlan is what planning one track changes.
type trackPlan struct {
	// Changed are existing jobs with a new status (orphaned, adopted again,
	// superseded, or planned again), and jobs recorded as superseded from
	// the start (see planTrack).
	Changed []state.Job
	// Created are new pending jobs.
	Created []state.Job
}

// jobs returns every job the plan writes.
func (p trackPlan) jobs() []state.Job {
	return append(append([]state.Job(nil), p.Changed...), p.Created...)
}

// planTrack plans one configured track. ts is the track's recorded state
// (a TrackState with only Track set when its baseline is not set yet: then
// nothing is created or superseded), adapters its registered adapters,
// complete false when a drop-in dir could not be scanned (adapters may be
// missing from the list, so none is taken for removed), jobs the track's
// jobs, targets where the track's jobs push.
//
//   - A waiting job (pending, failed) of an adapter no longer registered is
//     orphaned; an orphaned job of a registered adapter returns to what it
//     was.
//   - A waiting job for an older commit of a base repo, or for an older
//     revision of its adapter (ts.Adapters), is superseded: the newer one's
//     job migrates instead. So is a waiting job whose push would land on
//     the same branch as that of a newer base repo's job (see overtaken):
//     the target must end on the newest base's migration.
//   - Every registered adapter, at its current revision, gets a job for the
//     latest version of every repo the track moved to, unless one covers it
//     (see coverage: the same migration never runs twice, unless the
//     adapter went back to a revision whose push was since replaced). When
//     the revision is not known (never resolved), any job for the adapter
//     and base commit counts, and a new one pins the revision at its first
//     attempt. The job of a base repo whose target a newer one's shares is
//     recorded as superseded from the start (both found by one poll): it
//     never runs, and status says why, as when the newer one came later.
func planTrack(ts state.TrackState, adapters []Adapter, complete bool, jobs []state.Job, targets targetOf, now time.Time) trackPlan {
	var plan trackPlan
	registered := map[string]bool{}
	latestVersions := ts.Latest()
	over := map[string]map[string]overtaker{} // adapter id -> base repo -> the newer base
	for _, a := range adapters {
		registered[a.ID] = true
		over[a.ID] = overtaken(ts, latestVersions, a, targets)
	}
	latest := map[string]string{}
	for _, v := range latestVersions {
		latest[v.Repo] = v.Commit
	}
	cur := append([]state.Job(nil), jobs...)
	for i := range cur {
		j := &cur[i]
		changed := false
		switch {
		case j.Status == state.Orphaned && registered[j.Key.Adapter]:
			j.Adopt(now)
			changed = true
		case j.Waiting() && !registered[j.Key.Adapter] && complete:
			j.Orphaned(fmt.Sprintf("adapter %s is no longer registered in track %s; the job waits until it is again", j.Key.Adapter, j.Key.Track), now)
			changed = true
		}
		why := supersededBy(*j, latest, ts.Adapters[j.Key.Adapter].Rev)
		if o, ok := over[j.Key.Adapter][j.Key.BaseRepo]; ok && why == "" {
			why = "superseded " + o.reason(j.Key.BaseRepo)
		}
		if why != "" && j.Waiting() {
			j.Status, j.LastError, j.Finished, j.Updated = state.Superseded, why, now, now
			changed = true
		}
		if changed {
			plan.Changed = append(plan.Changed, *j)
		}
	}
	if ts.BaselineCommit == "" {
		return plan
	}
	for _, v := range latestVersions {
		for _, a := range adapters {
			rev := ts.Adapters[a.ID].Rev
			var same []*state.Job
			for i := range cur {
				k := cur[i].Key
				if k.Adapter == a.ID && k.BaseRepo == v.Repo && k.BaseCommit == v.Commit {
					same = append(same, &cur[i])
				}
			}
			covered, again := coverage(same, rev)
			o, overtakenHere := over[a.ID][v.Repo]
			switch {
			case overtakenHere && (covered || again != nil):
				// Its job ran, waits for the pre-push check, or was superseded.
			case overtakenHere:
				// Recorded as superseded, as it would have been had the newer
				// base been found by a later poll: status says why it never ran.
				k := state.JobKey{Track: ts.Track, Adapter: a.ID, AdapterRev: rev, BaseRepo: v.Repo, BaseCommit: v.Commit}
				plan.Changed = append(plan.Changed, state.Job{Key: k, Status: state.Superseded, LastError: "superseded " + o.reason(v.Repo),
					OldBaseRepo: ts.BaseRepo, OldBaseCommit: ts.BaselineCommit, Created: now, Updated: now, Finished: now})
			case covered:
			case again != nil:
				why := "planned again: the adapter is back at revision " + short(rev)
				if again.Status == state.Superseded { // by a revision since left, or a base no longer sharing its target
					why = "planned again: nothing supersedes it any more (the adapter is at revision " + short(rev) + ")"
				}
				again.Status, again.Attempts, again.NextAttempt, again.Finished, again.Updated = state.Pending, 0, time.Time{}, time.Time{}, now
				again.OutputCommit, again.PullRequest, again.Reconciled, again.Summary = "", "", false, ""
				again.LastError = why
				plan.Changed = append(plan.Changed, *again)
			default:
				k := state.JobKey{Track: ts.Track, Adapter: a.ID, AdapterRev: rev, BaseRepo: v.Repo, BaseCommit: v.Commit}
				plan.Created = append(plan.Created, state.Job{Key: k, Status: state.Pending,
					OldBaseRepo: ts.BaseRepo, OldBaseCommit: ts.BaselineCommit, Created: now, Updated: now})
			}
		}
	}
	return plan
}

// supersededBy says why job j should not run any more ("" if it should): a
// newer latest commit of its base repo, or a newer revision of its adapter
// (adapterRev, "" when unknown). A job whose revision is not pinned yet
// pins the current one when it runs, so it is never outdated by the adapter.
func supersededBy(j state.Job, latest map[string]string, adapterRev string) string {
	if c, ok := latest[j.Key.BaseRepo]; ok && c != j.Key.BaseCommit {
		return fmt.Sprintf("superseded by %s@%s", j.Key.BaseRepo, short(c))
	}
	if have := j.AdapterRevision(); adapterRev != "" && have != "" && have != adapterRev {
		return fmt.Sprintf("superseded by adapter revision %s", short(adapterRev))
	}
	return ""
}

// targetOf names the branch that the jobs of adapter a for base repo push
// to ("owner/name@branch"), or "" when their pushes never land on another
// job's: a pull request per push, or a target that cannot be resolved (the
// job fails on that itself).
type targetOf func(a Adapter, baseRepo string) string

// branchTargets is the targetOf of a configured track (see targetFor).
func branchTargets(tr config.Track) targetOf {
	return func(a Adapter, baseRepo string) string {
		tg, err := targetFor(tr, a, baseRepo)
		if err != nil || tg.CreatePR {
			return ""
		}
		return tg.String()
	}
}

// overtaker is the newer base version whose migration lands on the same
// target (a branch) as that of an older base repo.
type overtaker struct {
	by     state.Version
	target string
}

// reason completes "superseded " for a job of base repo.
func (o overtaker) reason(repo string) string {
	return fmt.Sprintf("by %s@%s: it is a newer base than %s and its migration is pushed to the same target %s",
		o.by.Repo, short(o.by.Commit), repo, o.target)
}

// overtaken returns, for adapter a, the base repos among latest (the latest
// version of each repo of track state ts) whose migration would be pushed
// to the same branch as that of a newer base repo (see generations), each
// with that newer base. Only the newest base repo of a target is migrated:
// pushing an older one's after it would leave the target on a stale
// migration, and pushing it before is wasted.
func overtaken(ts state.TrackState, latest []state.Version, a Adapter, targets targetOf) map[string]overtaker {
	gen := generations(ts)
	newest := map[string]state.Version{} // target -> the newest base's version
	for _, v := range latest {
		if tg := targets(a, v.Repo); tg != "" {
			if n, ok := newest[tg]; !ok || gen[v.Repo] > gen[n.Repo] {
				newest[tg] = v
			}
		}
	}
	out := map[string]overtaker{}
	for _, v := range latest {
		tg := targets(a, v.Repo)
		if n := newest[tg]; tg != "" && n.Repo != v.Repo {
			out[v.Repo] = overtaker{by: n, target: tg}
		}
	}
	return out
}

// generations ranks a track's base repos from oldest (0) to newest: the
// track's own base repo first, then every other repo in the order its
// first version was found (a successor or a discovered repo is the next
// generation of the models before it). A repo's later commits keep its
// rank: a fix to an older model does not make it newer than its successor.
func generations(ts state.TrackState) map[string]int {
	gen := map[string]int{ts.BaseRepo: 0}
	for _, v := range ts.Versions {
		if _, ok := gen[v.Repo]; !ok {
			gen[v.Repo] = len(gen)
		}
	}
	return gen
}

// coverage decides for the jobs of one adapter and base commit whether
// revision rev ("" when not known: then any job does) is covered: a job
// migrates it, will (it waits, runs, or pins the revision when it runs), or
// needs a human first (parked). Otherwise again is rev's existing job that
// must run once more, if there is one: superseded before it pushed, or done
// while a later revision's push has replaced it on the target (the adapter
// went back to rev).
func coverage(jobs []*state.Job, rev string) (covered bool, again *state.Job) {
	if rev == "" {
		return len(jobs) > 0, nil
	}
	var last *state.Job // the last one done: its push is what the target holds
	for _, j := range jobs {
		if j.Status == state.Done && (last == nil || j.Finished.After(last.Finished)) {
			last = j
		}
	}
	for _, j := range jobs {
		have := j.AdapterRevision()
		switch {
		case have == "" && j.Status != state.Superseded:
			return true, nil // it pins the current revision when it runs
		case have != rev:
		case j.Status == state.Superseded, j.Status == state.Done && j != last:
			again = j
		default:
			return true, nil
		}
	}
	return false, again
}

// orphanUnconfigured orphans the waiting jobs of tracks that are no longer
// configured (configured holds the track names). They return with the
// track: planTrack adopts them.
func orphanUnconfigured(jobs []state.Job, configured map[string]bool, now time.Time) []state.Job {
	var out []state.Job
	for _, j := range jobs {
		if configured[j.Key.Track] || !j.Waiting() {
			continue
		}
		j.Orphaned(fmt.Sprintf("track %s is no longer configured; the job waits until it is again", j.Key.Track), now)
		out = append(out, j)
	}
	return out
}
