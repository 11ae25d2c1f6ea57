package daemon

import (
	"context"
	"fmt"
	"maps"
	"slices"
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
	Error    string         `json:"error,omitempty"`
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
	for _, e := range scanErrs {
		d.log.Warn("drop-in scan", "track", name, "err", e)
	}
	if d.dryRun {
		rep.NewJobs, rep.Runnable, err = d.planDry(tr, next, adapters, now)
	} else {
		err = d.store.Update(func(tx *state.Tx) error {
			if err := tx.PutTrack(next); err != nil {
				return err
			}
			created, err := ensureJobs(tx, tr, next, adapters, now)
			rep.NewJobs = created
			return err
		})
		if err == nil {
			rep.Runnable, err = d.runnableKeys(name, now)
		}
	}
	if err != nil {
		d.storeFailed(err)
		rep.Error = err.Error()
		return rep
	}
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

// ensureJobs creates the missing jobs of a track: every registered adapter
// times the latest version of every repo the track has moved to. A job
// that exists (in any status) is left alone, so nothing is migrated twice.
// Waiting jobs (pending, failed) for an older commit of a repo are marked
// superseded: the newer commit's job replaces them. (A running one is
// stopped before its push; see runJob.)
func ensureJobs(tx *state.Tx, tr config.Track, ts state.TrackState, adapters []Adapter, now time.Time) ([]state.JobKey, error) {
	if ts.BaselineCommit == "" {
		return nil, nil // never polled: no versions yet
	}
	latest := map[string]string{}
	for _, v := range ts.Latest() {
		latest[v.Repo] = v.Commit
	}
	jobs, err := tx.Jobs(tr.Name)
	if err != nil {
		return nil, err
	}
	for _, j := range jobs {
		c, ok := latest[j.Key.BaseRepo]
		if !ok || c == j.Key.BaseCommit || (j.Status != state.Pending && j.Status != state.Failed) {
			continue
		}
		j.Status, j.Updated, j.Finished = state.Superseded, now, now
		j.LastError = fmt.Sprintf("superseded by %s@%s", j.Key.BaseRepo, short(c))
		if err := tx.PutJob(j); err != nil {
			return nil, err
		}
	}
	var created []state.JobKey
	for _, v := range ts.Latest() {
		for _, a := range adapters {
			k := state.JobKey{Track: tr.Name, Adapter: a.ID, BaseRepo: v.Repo, BaseCommit: v.Commit}
			_, exists, err := tx.Job(k)
			if err != nil {
				return nil, err
			}
			if exists {
				continue
			}
			j := state.Job{Key: k, Status: state.Pending, OldBaseRepo: ts.BaseRepo, OldBaseCommit: ts.BaselineCommit, Created: now, Updated: now}
			if err := tx.PutJob(j); err != nil {
				return nil, err
			}
			created = append(created, k)
		}
	}
	return created, nil
}

// planDry computes what ensureJobs would create, without writing.
func (d *Daemon) planDry(tr config.Track, ts state.TrackState, adapters []Adapter, now time.Time) (created, runnable []state.JobKey, err error) {
	err = d.store.View(func(tx *state.Tx) error {
		jobs, err := tx.Jobs(tr.Name)
		if err != nil {
			return err
		}
		have := map[state.JobKey]bool{}
		for _, j := range jobs {
			have[j.Key] = true
			if j.Runnable(now) {
				runnable = append(runnable, j.Key)
			}
		}
		if ts.BaselineCommit == "" {
			return nil
		}
		for _, v := range ts.Latest() {
			for _, a := range adapters {
				k := state.JobKey{Track: tr.Name, Adapter: a.ID, BaseRepo: v.Repo, BaseCommit: v.Commit}
				if !have[k] {
					created = append(created, k)
					runnable = append(runnable, k)
				}
			}
		}
		return nil
	})
	return created, runnable, err
}

// replan creates missing jobs for every track from the recorded state,
// without asking the Hub: after a reload or a drop-in change.
func (d *Daemon) replan() error {
	if d.dryRun {
		return nil
	}
	cfg := d.Config()
	now := d.clock.Now()
	total := 0
	err := d.store.Update(func(tx *state.Tx) error {
		for _, tr := range cfg.Tracks {
			ts, ok, err := tx.Track(tr.Name)
			if err != nil {
				return err
			}
			if !ok || ts.BaseRepo != tr.Base.Repo || ts.BaseRevision != tr.Base.Revision {
				continue // the next poll sets the baseline
			}
			adapters, scanErrs := registeredAdapters(tr)
			for _, e := range scanErrs {
				d.log.Warn("drop-in scan", "track", tr.Name, "err", e)
			}
			created, err := ensureJobs(tx, tr, ts, adapters, now)
			if err != nil {
				return err
			}
			for _, k := range created {
				d.log.Info("job planned", "job", k.String())
			}
			total += len(created)
		}
		return nil
	})
	if err != nil {
		d.storeFailed(err)
		return fmt.Errorf("replan: %w", err)
	}
	if total > 0 {
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
