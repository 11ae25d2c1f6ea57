package daemon

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/daemon/state"
)

// errSimulatedCrash is returned by runJob when a test hook simulates the
// process dying right after a push: nothing is recorded.
var errSimulatedCrash = errors.New("simulated crash after push")

// kick wakes the dispatcher (new jobs, a finished job, a reload).
func (d *Daemon) kick() {
	select {
	case d.kickCh <- struct{}{}:
	default:
	}
}

// startRunnable starts runnable jobs (oldest first) while fewer than
// concurrency run. Jobs whose track or adapter is no longer registered
// wait (the next plan orphans them; this covers the moment between a
// reload's new config and its re-plan). A job whose push would land on the
// branch a running job pushes to waits for it: two jobs of one target never
// run at once, so the order of their pushes is the order they started in,
// and the one that pushes second checks, under the target's lock, whether
// it was superseded meanwhile (see checkSuperseded). skip, when not nil,
// holds jobs this pass already ran (RunOnce runs each job at most once). It
// returns the earliest future retry time (zero if none).
func (d *Daemon) startRunnable(ctx context.Context, skip map[state.JobKey]bool) (next time.Time, started int) {
	cfg := d.Config()
	now := d.clock.Now()
	var jobs []state.Job
	if err := d.store.View(func(tx *state.Tx) error {
		var err error
		jobs, err = tx.Jobs("")
		return err
	}); err != nil {
		d.storeFailed(err)
		return now.Add(time.Minute), 0 // try again soon
	}
	slices.SortStableFunc(jobs, func(a, b state.Job) int { return a.Created.Compare(b.Created) })
	type registered struct {
		adapters map[string]Adapter
		targets  targetOf
	}
	registry := map[string]registered{}
	for _, j := range jobs {
		if j.Status == state.Failed && j.NextAttempt.After(now) && skip == nil {
			if next.IsZero() || j.NextAttempt.Before(next) {
				next = j.NextAttempt
			}
		}
		if !j.Runnable(now) || skip[j.Key] || d.isInflight(j.Key) {
			continue
		}
		if d.inflightCount() >= cfg.Concurrency {
			break
		}
		tr, ok := cfg.Track(j.Key.Track)
		if !ok {
			continue
		}
		reg, ok := registry[tr.Name]
		if !ok {
			reg = registered{adapters: map[string]Adapter{}, targets: branchTargets(tr)}
			list, _ := registeredAdapters(tr)
			for _, a := range list {
				reg.adapters[a.ID] = a
			}
			registry[tr.Name] = reg
		}
		ad, ok := reg.adapters[j.Key.Adapter]
		if !ok {
			continue
		}
		tg := reg.targets(ad, j.Key.BaseRepo)
		if k, r, busy := d.pushingTo(tg); busy {
			d.log.Debug("job held back: a job pushing to the same target is running",
				"job", j.Key.String(), "target", tg, "running", k.String())
			d.stopIfSuperseded(k, r)
			continue
		}
		if skip != nil {
			skip[j.Key] = true
		}
		if d.launch(ctx, cfg, tr, ad, j, tg) {
			started++
		}
	}
	return next, started
}

func (d *Daemon) isInflight(k state.JobKey) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.inflight[k]
	return ok
}

func (d *Daemon) inflightCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.inflight)
}

// runningJob is a job in flight.
type runningJob struct {
	target string // the branch it pushes to (see targetOf)
	tr     config.Track
	ad     Adapter
	// stop cancels the job, the cause saying why (see stopIfSuperseded).
	stop     context.CancelCauseFunc
	stopping bool // d.mu
}

// pushingTo returns a running job that pushes to target (a targetOf name),
// if there is one; never for "".
func (d *Daemon) pushingTo(target string) (state.JobKey, *runningJob, bool) {
	if target == "" {
		return state.JobKey{}, nil, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, r := range d.inflight {
		if r.target == target {
			return k, r, true
		}
	}
	return state.JobKey{}, nil, false
}

// stopIfSuperseded stops running job k when it was superseded since it
// started (by a newer commit of its base, a newer adapter revision, or a
// newer base for its target): a job waits for its target, and would wait
// for a conversion that ends with nothing pushed. A job in its push (it
// holds the target's lock) is left alone: it passed its last supersede
// check, and what it pushes is then older than the waiting job's.
func (d *Daemon) stopIfSuperseded(k state.JobKey, r *runningJob) {
	d.mu.Lock()
	stopping := r.stopping
	d.mu.Unlock()
	if stopping {
		return
	}
	why := d.checkSuperseded(r.tr, r.ad, state.Job{Key: k})
	if !errors.Is(why, errSuperseded) {
		return
	}
	unlock, ok := d.targets.tryLock(r.target)
	if !ok {
		return
	}
	defer unlock()
	d.mu.Lock()
	r.stopping = true
	d.mu.Unlock()
	d.log.Info("stopping a running job: it can no longer push", "job", k.String(), "reason", why.Error())
	r.stop(why)
}

// launch marks the job running and runs it in a worker goroutine; target
// is the branch it pushes to (see targetOf). A job stopped because it was
// superseded (stopIfSuperseded) is recorded as superseded.
func (d *Daemon) launch(ctx context.Context, cfg *config.Config, tr config.Track, ad Adapter, j state.Job, target string) bool {
	now := d.clock.Now()
	err := d.store.Update(func(tx *state.Tx) error {
		cur, ok, err := tx.Job(j.Key)
		if err != nil || !ok || !cur.Runnable(now) {
			return errors.Join(err, errNotRunnable)
		}
		cur.Status, cur.Started, cur.Updated = state.Running, now, now
		j = cur
		return tx.PutJob(cur)
	})
	if errors.Is(err, errNotRunnable) {
		return false
	}
	if err != nil {
		d.storeFailed(err)
		return false
	}
	jobCtx, stop := context.WithCancelCause(ctx)
	d.mu.Lock()
	d.inflight[j.Key] = &runningJob{target: target, tr: tr, ad: ad, stop: stop}
	d.mu.Unlock()
	d.refreshGauges()
	d.workers.Add(1)
	go func() {
		defer d.workers.Done()
		defer d.kick()
		defer func() {
			d.mu.Lock()
			delete(d.inflight, j.Key)
			d.mu.Unlock()
		}()
		defer stop(nil)
		d.log.Info("job started", "job", j.Key.String(), "attempt", j.Attempts+1)
		start := d.clock.Now()
		out, err := d.runJob(jobCtx, cfg, tr, ad, j)
		if cause := context.Cause(jobCtx); err != nil && ctx.Err() == nil && errors.Is(cause, errSuperseded) {
			err = cause
		}
		d.finish(ctx, cfg, out, err, d.clock.Now().Sub(start))
	}()
	return true
}

var errNotRunnable = errors.New("job not runnable")

// finish records a job's outcome.
func (d *Daemon) finish(ctx context.Context, cfg *config.Config, j state.Job, runErr error, took time.Duration) {
	if errors.Is(runErr, errSimulatedCrash) {
		return // as if the process died: the job stays running
	}
	now := d.clock.Now()
	outcome := ""
	switch {
	case runErr == nil:
		j.Status, j.LastError, j.NextAttempt, j.Finished = state.Done, "", time.Time{}, now
		j.Attempts++
		outcome = "done"
	case errors.Is(runErr, errUnregistered):
		// Orphaned as a waiting job is: it comes back pending if the track
		// or adapter does.
		j.Status, j.LastError = state.Pending, ""
		j.Orphaned(runErr.Error(), now)
		outcome = "orphaned"
	case errors.Is(runErr, errSuperseded):
		j.Status, j.LastError, j.Finished = state.Superseded, runErr.Error(), now
		outcome = "superseded"
		if errors.Is(runErr, errAdapterChanged) {
			defer d.replan() // plans the new content's job (and logs its own errors)
		}
	case ctx.Err() != nil:
		// Shutdown: not the job's fault; it resumes on the next start.
		j.Status, j.LastError = state.Pending, "interrupted by shutdown; resumes on next start"
		outcome = "interrupted"
	default:
		j.Attempts++
		j.LastError = runErr.Error()
		if IsPermanent(runErr) || j.Attempts >= cfg.Retry.MaxAttempts {
			j.Status, j.Finished = state.Parked, now
			outcome = "parked"
		} else {
			j.Status = state.Failed
			j.NextAttempt = now.Add(backoffDelay(j.Attempts, cfg.Retry.BackoffBase, cfg.Retry.BackoffMax, d.rnd))
			outcome = "failed"
		}
	}
	j.Updated = now
	if err := d.record(ctx, j); err != nil {
		return // stopping: the job stays running and is recovered at the next start
	}
	d.metrics.JobDuration.WithLabelValues(outcome).Observe(took.Seconds())
	switch outcome {
	case "done":
		d.log.Info("job done", "job", j.Key.String(), "output", j.OutputRepo+"@"+j.OutputRevision,
			"commit", j.OutputCommit, "pull_request", j.PullRequest, "reconciled", j.Reconciled, "summary", j.Summary)
	case "failed":
		d.log.Warn("job failed; will retry", "job", j.Key.String(), "attempt", j.Attempts, "next_attempt", j.NextAttempt, "err", runErr)
	case "parked":
		d.log.Error("job parked; it will not be retried until reset", "job", j.Key.String(), "attempts", j.Attempts, "err", runErr)
	case "interrupted":
		d.log.Info("job interrupted by shutdown", "job", j.Key.String())
	case "superseded":
		d.log.Info("job superseded; not pushed", "job", j.Key.String(), "reason", j.LastError)
	case "orphaned":
		d.log.Info("job orphaned; not pushed", "job", j.Key.String(), "reason", j.LastError)
	}
	d.refreshGauges()
}

// record stores a finished job. A store that fails (the disk full, the
// database locked for longer than its timeout) is retried with a capped
// backoff on the daemon's clock until it works or ctx is done: giving up at
// once left the job "running" in the database, never retried, with its push
// unrecorded, until a restart. It returns the last error when ctx ends first;
// RecoverInterrupted then resumes the job at the next start, and reconciling
// finds a push it made.
func (d *Daemon) record(ctx context.Context, j state.Job) error {
	const maxDelay = time.Minute
	delay := time.Second
	for {
		err := d.store.Update(func(tx *state.Tx) error { return tx.PutJob(j) })
		if err == nil {
			return nil
		}
		d.storeFailed(err)
		select {
		case <-ctx.Done():
			return err
		case <-d.clock.After(delay):
		}
		delay = min(2*delay, maxDelay)
	}
}

// saveJob stores a job mid-run (e.g. its pinned adapter revision).
func (d *Daemon) saveJob(j state.Job) error {
	j.Updated = d.clock.Now()
	if err := d.store.Update(func(tx *state.Tx) error { return tx.PutJob(j) }); err != nil {
		d.storeFailed(err)
		return err
	}
	return nil
}

// dispatchLoop runs jobs until ctx is cancelled: on every kick and at the
// earliest pending retry time.
func (d *Daemon) dispatchLoop(ctx context.Context) {
	for {
		next, _ := d.startRunnable(ctx, nil)
		var retry <-chan time.Time
		if !next.IsZero() {
			retry = d.clock.After(next.Sub(d.clock.Now()))
		}
		select {
		case <-ctx.Done():
			return
		case <-d.kickCh:
		case <-retry:
		}
	}
}

// drainOnce runs every job runnable now, each at most once, and waits for
// them: the job half of RunOnce. Jobs that fail wait for their retry time
// in state (the next run picks them up). It returns the jobs it started.
func (d *Daemon) drainOnce(ctx context.Context) map[state.JobKey]bool {
	skip := map[state.JobKey]bool{}
	for {
		// Read the count first: with nothing in flight the concurrency limit
		// cannot hold a job back, so starting nothing means nothing is left.
		busy := d.inflightCount()
		if _, started := d.startRunnable(ctx, skip); started == 0 && busy == 0 {
			return skip
		}
		select {
		case <-ctx.Done():
			d.workers.Wait()
			return skip
		case <-d.kickCh:
		}
	}
}

// Clock is the daemon's source of time, injected so that tests control
// schedules and backoff without sleeping.
type Clock interface {
	Now() time.Time
	// After fires once d has elapsed (immediately for d <= 0).
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// backoffDelay is the wait before attempt+1 after `attempt` failed attempts
// (attempt >= 1): base*2^(attempt-1) capped at max, with "equal jitter" —
// half fixed, half uniform — so that jobs failing together (a Hub outage)
// do not retry in lockstep, while the delay never drops below half the
// nominal one. rnd returns a float64 in [0, 1).
func backoffDelay(attempt int, base, max time.Duration, rnd func() float64) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max || d <= 0 { // d <= 0: overflow
		d = max
	}
	half := d / 2
	return half + time.Duration(rnd()*float64(d-half))
}

// defaultRand is the jitter source outside tests.
func defaultRand() func() float64 { return rand.Float64 }
