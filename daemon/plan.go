package daemon

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/daemon/state"
)

// TrackReport is the outcome of polling one track.
type TrackReport struct {
	Track string `json:"track"`
	// Baseline is the base commit adapters were trained on.
	Baseline string `json:"baseline"`
	// NewVersions were found by this poll.
	NewVersions []state.Version `json:"new_versions,omitempty"`
	// NewJobs were created (or, in a dry run, would be).
	NewJobs []state.JobKey `json:"new_jobs,omitempty"`
	// Runnable jobs of the track after the poll (including NewJobs).
	Runnable []state.JobKey `json:"runnable,omitempty"`
	// Superseded are the jobs the poll's plan superseded (or, in a dry run,
	// would), each with why: a newer base commit or adapter revision, or a
	// newer base repo whose migration goes to the same target.
	Superseded []SupersededJob `json:"superseded,omitempty"`
	// Warnings did not stop the poll: a drop-in dir that could not be read,
	// an adapter whose revision could not be resolved.
	Warnings []string `json:"warnings,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// SupersededJob is a job a plan superseded, and why (its LastError).
type SupersededJob struct {
	Key state.JobKey `json:"key"`
	Why string       `json:"why"`
}

// supersededIn lists the jobs plan p supersedes.
func supersededIn(p trackPlan) []SupersededJob {
	var out []SupersededJob
	for _, j := range p.Changed {
		if j.Status == state.Superseded {
			out = append(out, SupersededJob{Key: j.Key, Why: j.LastError})
		}
	}
	return out
}

// pollTrack discovers new versions of one track and records them together
// with the jobs they imply, in one transaction. Errors are recorded in the
// track's state (visible in status) and returned in the report.
func (d *Daemon) pollTrack(ctx context.Context, name string) TrackReport {
	rep := TrackReport{Track: name}
	cfg := d.Config()
	tr, ok := cfg.Track(name)
	if !ok {
		rep.Error = "track no longer configured"
		return rep
	}
	now := d.clock.Now()
	var prev state.TrackState
	if err := d.store.View(func(tx *state.Tx) error {
		var err error
		prev, _, err = tx.Track(name)
		return err
	}); err != nil {
		d.storeFailed(err)
		rep.Error = err.Error()
		return rep
	}
	next, found, err := discover(ctx, d.hub, tr, prev, now)
	if err != nil {
		if ctx.Err() != nil {
			rep.Error = ctx.Err().Error()
			return rep
		}
		d.log.Warn("poll failed", "track", name, "err", err)
		d.metrics.PollErrors.WithLabelValues(name).Inc()
		rep.Error = err.Error()
		if !d.dryRun {
			d.recordPollError(name, prev, now, err)
		}
		return rep
	}
	next.LastPoll, next.LastPollOK, next.LastPollError = now, now, ""
	rep.Baseline, rep.NewVersions = next.BaselineCommit, found
	adapters, scanErrs := registeredAdapters(tr)
	var revs map[string]string
	var revErrs []error
	if len(next.Latest()) > 0 { // only then are there jobs to plan
		revs, revErrs = d.adapterRevs(ctx, adapters, true)
	}
	if ctx.Err() != nil {
		rep.Error = ctx.Err().Error()
		return rep
	}
	recordAdapterRevs(&next, adapters, revs, now)
	for _, e := range scanErrs {
		d.log.Warn("drop-in scan", "track", name, "err", e)
		rep.Warnings = append(rep.Warnings, e.Error())
	}
	for _, e := range revErrs {
		d.log.Warn("cannot resolve the adapter's revision; planning with the last one known", "track", name, "err", e)
		rep.Warnings = append(rep.Warnings, e.Error())
	}
	var p trackPlan
	if d.dryRun {
		p, rep.Runnable, err = d.planDry(tr, next, adapters, len(scanErrs) == 0, now)
		for _, j := range p.Created {
			rep.NewJobs = append(rep.NewJobs, j.Key)
		}
	} else {
		err = d.store.Update(func(tx *state.Tx) error {
			if err := tx.PutTrack(next); err != nil {
				return err
			}
			jobs, err := tx.Jobs(name)
			if err != nil {
				return err
			}
			p = planTrack(next, adapters, len(scanErrs) == 0, jobs, branchTargets(tr), now)
			return writePlan(tx, p)
		})
		if err == nil {
			rep.NewJobs = d.logPlan(p)
			rep.Runnable, err = d.runnableKeys(name, now)
		}
	}
	if err != nil {
		d.storeFailed(err)
		rep.Error = err.Error()
		return rep
	}
	rep.Superseded = supersededIn(p)
	d.metrics.LastSuccessfulPoll.WithLabelValues(name).Set(float64(now.Unix()))
	for _, v := range found {
		d.log.Info("new base version", "track", name, "repo", v.Repo, "commit", v.Commit, "why", v.Why)
	}
	if len(rep.NewJobs) > 0 {
		d.log.Info("jobs planned", "track", name, "new", len(rep.NewJobs), "dry_run", d.dryRun)
		d.kick()
	}
	d.refreshGauges()
	return rep
}

func (d *Daemon) recordPollError(name string, prev state.TrackState, now time.Time, perr error) {
	prev.Track = name
	prev.LastPoll, prev.LastPollError = now, perr.Error()
	if err := d.store.Update(func(tx *state.Tx) error {
		// Only the poll fields: re-read so a concurrent write is not lost.
		cur, _, err := tx.Track(name)
		if err != nil {
			return err
		}
		cur.Track, cur.LastPoll, cur.LastPollError = name, now, perr.Error()
		return tx.PutTrack(cur)
	}); err != nil {
		d.storeFailed(err)
	}
}

// writePlan stores every job a plan changes or creates.
func writePlan(tx *state.Tx, p trackPlan) error {
	for _, j := range p.jobs() {
		if err := tx.PutJob(j); err != nil {
			return err
		}
	}
	return nil
}

// logPlan logs a plan once it is stored, and returns the keys of the jobs
// it created.
func (d *Daemon) logPlan(p trackPlan) []state.JobKey {
	for _, j := range p.Changed {
		d.log.Info("job "+string(j.Status), "job", j.Key.String(), "why", j.LastError)
	}
	var created []state.JobKey
	for _, j := range p.Created {
		d.log.Info("job planned", "job", j.Key.String())
		created = append(created, j.Key)
	}
	return created
}

// planDry computes what planning would do, without writing: the plan, and
// the jobs runnable after it.
func (d *Daemon) planDry(tr config.Track, ts state.TrackState, adapters []Adapter, complete bool, now time.Time) (p trackPlan, runnable []state.JobKey, err error) {
	err = d.store.View(func(tx *state.Tx) error {
		jobs, err := tx.Jobs(ts.Track)
		if err != nil {
			return err
		}
		p = planTrack(ts, adapters, complete, jobs, branchTargets(tr), now)
		after := map[state.JobKey]state.Job{}
		for _, j := range jobs {
			after[j.Key] = j
		}
		for _, j := range p.jobs() {
			after[j.Key] = j
		}
		for _, j := range after {
			if j.Runnable(now) {
				runnable = append(runnable, j.Key)
			}
		}
		slices.SortFunc(runnable, func(a, b state.JobKey) int { return strings.Compare(a.String(), b.String()) })
		return nil
	})
	return p, runnable, err
}

// replan plans every track again from the recorded state, without asking
// the Hub: at startup, after a reload or a drop-in change, and after a
// pass's polls. Local adapters' revisions are read again (from disk, see
// revMemo); Hub adapters' are the ones the last poll resolved. The waiting
// jobs of tracks and adapters no longer configured are orphaned, and those
// configured again adopted.
func (d *Daemon) replan() error {
	if d.dryRun {
		return nil
	}
	cfg := d.Config()
	now := d.clock.Now()
	type input struct {
		tr       config.Track
		adapters []Adapter
		complete bool
		revs     map[string]string
	}
	var inputs []input
	configured := map[string]bool{}
	for _, tr := range cfg.Tracks { // disk reads before the transaction
		configured[tr.Name] = true
		adapters, scanErrs := registeredAdapters(tr)
		for _, e := range scanErrs {
			d.log.Warn("drop-in scan", "track", tr.Name, "err", e)
		}
		revs, revErrs := d.adapterRevs(context.Background(), adapters, false)
		for _, e := range revErrs {
			d.log.Warn("cannot read the adapter's revision", "track", tr.Name, "err", e)
		}
		inputs = append(inputs, input{tr, adapters, len(scanErrs) == 0, revs})
	}
	var plans []trackPlan
	err := d.store.Update(func(tx *state.Tx) error {
		all, err := tx.Jobs("")
		if err != nil {
			return err
		}
		gone := trackPlan{Changed: orphanUnconfigured(all, configured, now)}
		if err := writePlan(tx, gone); err != nil {
			return err
		}
		plans = append(plans, gone)
		for _, in := range inputs {
			ts, ok, err := tx.Track(in.tr.Name)
			if err != nil {
				return err
			}
			if !ok || ts.BaseRepo != in.tr.Base.Repo || ts.BaseRevision != in.tr.Base.Revision {
				// The next poll sets the baseline; until then only which
				// adapters are registered is known.
				ts = state.TrackState{Track: in.tr.Name}
			} else if recordAdapterRevs(&ts, in.adapters, in.revs, now) {
				if err := tx.PutTrack(ts); err != nil {
					return err
				}
			}
			jobs, err := tx.Jobs(in.tr.Name)
			if err != nil {
				return err
			}
			p := planTrack(ts, in.adapters, in.complete, jobs, branchTargets(in.tr), now)
			if err := writePlan(tx, p); err != nil {
				return err
			}
			plans = append(plans, p)
		}
		return nil
	})
	if err != nil {
		d.storeFailed(err)
		return fmt.Errorf("replan: %w", err)
	}
	changed := 0
	for _, p := range plans {
		changed += len(d.logPlan(p)) + len(p.Changed)
	}
	if changed > 0 {
		d.kick()
		d.refreshGauges()
	}
	return nil
}

func (d *Daemon) runnableKeys(track string, now time.Time) ([]state.JobKey, error) {
	var out []state.JobKey
	err := d.store.View(func(tx *state.Tx) error {
		jobs, err := tx.Jobs(track)
		for _, j := range jobs {
			if j.Runnable(now) {
				out = append(out, j.Key)
			}
		}
		return err
	})
	return out, err
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
