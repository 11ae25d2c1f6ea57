package daemon

import (
	"fmt"
	"time"

	"github.com/lorasync/lorasync/daemon/state"
)

// The planner decides, from a track's recorded state and its jobs, which jobs
// should exist and which waiting ones no longer should run. It is pure: the
// callers (plan.go) read its inputs, write its result in one transaction, or,
// in a dry run, only report it.

// trackPlan is what planning one track changes.
type trackPlan struct {
	// Changed are existing jobs with a new status: orphaned, adopted again,
	// superseded, or planned again.
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
// jobs.
//
//   - A waiting job (pending, failed) of an adapter no longer registered is
//     orphaned; an orphaned job of a registered adapter returns to what it
//     was.
//   - A waiting job for an older commit of a base repo, or for an older
//     revision of its adapter (ts.Adapters), is superseded: the newer one's
//     job migrates instead.
//   - Every registered adapter, at its current revision, gets a job for the
//     latest version of every repo the track moved to, unless one exists
//     (in any status: the same migration never runs twice). When the
//     revision is not known (never resolved), any job for the adapter and
//     base commit counts, and a new one pins the revision at its first
//     attempt.
func planTrack(ts state.TrackState, adapters []Adapter, complete bool, jobs []state.Job, now time.Time) trackPlan {
	var plan trackPlan
	registered := map[string]bool{}
	for _, a := range adapters {
		registered[a.ID] = true
	}
	latest := map[string]string{}
	for _, v := range ts.Latest() {
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
		if why := supersededBy(*j, latest, ts.Adapters[j.Key.Adapter].Rev); why != "" && j.Waiting() {
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
	for _, v := range ts.Latest() {
		for _, a := range adapters {
			rev := ts.Adapters[a.ID].Rev
			var same []*state.Job
			for i := range cur {
				k := cur[i].Key
				if k.Adapter == a.ID && k.BaseRepo == v.Repo && k.BaseCommit == v.Commit {
					same = append(same, &cur[i])
				}
			}
			if covered(same, rev) {
				continue
			}
			k := state.JobKey{Track: ts.Track, Adapter: a.ID, AdapterRev: rev, BaseRepo: v.Repo, BaseCommit: v.Commit}
			if old := findKey(same, k); old != nil {
				// Superseded before it pushed, and current again (the adapter
				// went back to this revision): it runs after all.
				old.Status, old.Attempts, old.NextAttempt, old.Finished, old.Updated = state.Pending, 0, time.Time{}, time.Time{}, now
				old.LastError = "planned again: adapter revision " + short(rev) + " is current again"
				plan.Changed = append(plan.Changed, *old)
				continue
			}
			plan.Created = append(plan.Created, state.Job{Key: k, Status: state.Pending,
				OldBaseRepo: ts.BaseRepo, OldBaseCommit: ts.BaselineCommit, Created: now, Updated: now})
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

// covered reports whether the jobs for one adapter and base commit already
// migrate revision rev ("" when not known: then any job does).
func covered(jobs []*state.Job, rev string) bool {
	if rev == "" {
		return len(jobs) > 0
	}
	for _, j := range jobs {
		if j.Status == state.Superseded {
			continue
		}
		// A job without a revision yet pins the current one when it runs (a
		// parked one, when an operator requeues it).
		if have := j.AdapterRevision(); have == rev || have == "" {
			return true
		}
	}
	return false
}

func findKey(jobs []*state.Job, k state.JobKey) *state.Job {
	for _, j := range jobs {
		if j.Key == k {
			return j
		}
	}
	return nil
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
