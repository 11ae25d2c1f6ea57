package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/daemon/state"
)

// Options configure a Daemon. Config, Hub and Converter are required.
type Options struct {
	// Config is the loaded configuration. ConfigPath, when set, is the file
	// it came from: Reload re-reads it, and Run watches it for changes.
	Config     *config.Config
	ConfigPath string
	Hub        Hub
	Converter  Converter
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registry receives the metrics and backs /metrics; nil makes a new one.
	Registry *prometheus.Registry
	// Clock defaults to the wall clock.
	Clock Clock
	// Rand returns jitter in [0, 1); defaults to math/rand/v2.
	Rand func() float64
	// DryRun discovers and plans but never writes state or pushes.
	DryRun bool
}

// Daemon watches, plans, migrates and pushes. Create it with New; use
// either Run (long-running) or RunOnce (one pass), then Close.
type Daemon struct {
	cfg     atomic.Pointer[config.Config]
	cfgPath string
	hub     Hub
	conv    Converter
	store   *state.Store
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *Metrics
	clock   Clock
	rnd     func() float64
	dryRun  bool
	pairs   *keyedLocks // base pairs being analysed
	targets *keyedLocks // push targets
	notify  *notifier
	// localRevs remembers local adapters' revisions while their files are
	// unchanged.
	localRevs *revMemo
	// gc removes what the caches no longer need (gc.go).
	gc *gcState

	kickCh   chan struct{}
	mu       sync.Mutex
	inflight map[state.JobKey]*runningJob // see dispatch.go
	workers  sync.WaitGroup

	loopsMu      sync.Mutex
	loops        map[string]*loop
	loopCtx      context.Context // parent of track loops while Run runs
	prevSchedule string          // schedule the running loops were started with

	reloadMu  sync.Mutex
	triedSum  [32]byte // checksum of the last config content tried (valid or not)
	ready     atomic.Bool
	storeErr  atomic.Pointer[string]
	heartbeat atomic.Int64 // unix nanos of the main loop's last turn

	// testHookAfterPush, when it returns true, makes the job stop right
	// after its push as if the process died there.
	testHookAfterPush func(state.JobKey) bool
}

// loop is one running track loop.
type loop struct {
	track  config.Track
	cancel context.CancelFunc
	done   chan struct{}
}

// New opens the state and prepares a daemon. It starts nothing.
func New(opts Options) (*Daemon, error) {
	if opts.Config == nil || opts.Hub == nil || opts.Converter == nil {
		return nil, errors.New("daemon: Options.Config, Hub and Converter are required")
	}
	d := &Daemon{
		cfgPath:   opts.ConfigPath,
		hub:       opts.Hub,
		conv:      opts.Converter,
		log:       opts.Logger,
		reg:       opts.Registry,
		clock:     opts.Clock,
		rnd:       opts.Rand,
		dryRun:    opts.DryRun,
		pairs:     newKeyedLocks(),
		targets:   newKeyedLocks(),
		localRevs: newRevMemo(),
		gc:        newGCState(),
		kickCh:    make(chan struct{}, 1),
		inflight:  map[state.JobKey]*runningJob{},
		loops:     map[string]*loop{},
		notify:    newNotifier(),
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	if d.reg == nil {
		d.reg = prometheus.NewRegistry()
	}
	if d.clock == nil {
		d.clock = realClock{}
	}
	if d.rnd == nil {
		d.rnd = defaultRand()
	}
	var err error
	if d.metrics, err = NewMetrics(d.reg); err != nil {
		return nil, err
	}
	d.cfg.Store(opts.Config)
	if sum, err := fileSum(d.cfgPath); err == nil {
		d.triedSum = sum
	}
	if err := d.openStore(opts.Config.StateDir); err != nil {
		return nil, err
	}
	d.metrics.ConfigReloadOK.Set(1)
	d.metrics.ConfigReloadTime.Set(float64(d.clock.Now().Unix()))
	d.refreshGauges()
	return d, nil
}

func (d *Daemon) openStore(dir string) error {
	var err error
	if !d.dryRun {
		d.store, err = state.Open(dir, state.Options{})
		return err
	}
	d.store, err = state.OpenReadOnly(dir, state.Options{})
	if errors.Is(err, state.ErrNoState) {
		d.store, err = state.Empty(), nil // a dry run before the first real run
	}
	return err
}

// Close releases what New acquired. The state file is already closed after
// every transaction, so there is nothing left to release today; callers
// still Close, so that one can be added without changing them.
func (d *Daemon) Close() error { return nil }

// Config returns the running configuration (read-only).
func (d *Daemon) Config() *config.Config { return d.cfg.Load() }

// Store is the daemon's state database.
func (d *Daemon) Store() *state.Store { return d.store }

// Report is the outcome of RunOnce.
type Report struct {
	DryRun bool          `json:"dry_run"`
	Tracks []TrackReport `json:"tracks"`
	// Jobs are the jobs this pass ran, in their final state.
	Jobs []state.Job `json:"jobs,omitempty"`
}

// Err summarises poll errors and jobs that neither ended done nor were
// superseded.
func (r *Report) Err() error {
	var errs []error
	for _, t := range r.Tracks {
		if t.Error != "" {
			errs = append(errs, fmt.Errorf("track %s: %s", t.Track, t.Error))
		}
	}
	for _, j := range r.Jobs {
		if j.Status != state.Done && j.Status != state.Superseded {
			errs = append(errs, fmt.Errorf("%s: %s: %s", j.Key, j.Status, j.LastError))
		}
	}
	return errors.Join(errs...)
}

// RunOnce polls every track once, then runs every runnable job once (a
// failed job is retried by a later run when its backoff allows), and
// returns what happened. With DryRun it plans and runs nothing.
func (d *Daemon) RunOnce(ctx context.Context) (*Report, error) {
	rep := &Report{DryRun: d.dryRun}
	if !d.dryRun {
		owner, err := state.AcquireOwner(d.Config().StateDir)
		if err != nil {
			return nil, err
		}
		defer owner.Release()
		if err := d.recoverInterrupted(); err != nil {
			return nil, err
		}
	}
	for _, tr := range d.Config().Tracks {
		rep.Tracks = append(rep.Tracks, d.pollTrack(ctx, tr.Name))
	}
	if d.dryRun || ctx.Err() != nil {
		return rep, ctx.Err()
	}
	if err := d.replan(); err != nil { // drop-ins of tracks the poll could not reach
		return rep, err
	}
	ran := d.drainOnce(ctx)
	d.workers.Wait()
	d.collectCaches(ctx)
	err := d.store.View(func(tx *state.Tx) error {
		jobs, err := tx.Jobs("")
		for _, j := range jobs {
			if ran[j.Key] {
				rep.Jobs = append(rep.Jobs, j)
			}
		}
		return err
	})
	return rep, err
}

func (d *Daemon) recoverInterrupted() error {
	// No job runs yet: the work dirs there are a killed process's (a job's
	// next attempt makes its own again; one that never runs again, superseded
	// or orphaned meanwhile, would leave its migrated adapter for good).
	if err := removeWorkDirs(filepath.Join(d.Config().CacheDir, "work")); err != nil {
		d.log.Warn("cannot remove the work dirs a killed process left", "err", err)
	}
	jobs, err := d.store.RecoverInterrupted(d.clock.Now(), d.Config().Retry.MaxAttempts)
	for _, j := range jobs {
		if j.Status == state.Parked {
			d.log.Error("job parked: the process died during it at every attempt", "job", j.Key.String(), "attempts", j.Attempts)
			continue
		}
		d.log.Info("resuming a job interrupted by the previous process", "job", j.Key.String(), "attempt", j.Attempts+1)
	}
	return err
}

// Run runs the daemon until ctx is cancelled: track loops, the worker pool,
// config and drop-in watching, SIGHUP reloads, the HTTP server and
// sd_notify. Cancellation is a clean stop and returns nil; in-flight jobs
// are interrupted and resume on the next start.
func (d *Daemon) Run(ctx context.Context) error {
	if d.dryRun {
		return errors.New("daemon: Run does not support dry runs; use RunOnce")
	}
	cfg := d.Config()
	owner, err := state.AcquireOwner(cfg.StateDir)
	if err != nil {
		return err
	}
	defer owner.Release()
	if err := d.recoverInterrupted(); err != nil {
		return err
	}
	// Jobs of tracks or adapters removed from the config while the daemon was
	// stopped are orphaned before anything runs (and the ones configured
	// again adopted); a failure is logged and retried at the next re-plan.
	_ = d.replan()
	srv, err := d.serveHTTP(cfg.Listen)
	if err != nil {
		return err
	}
	defer srv.shutdown()

	jobsCtx, cancelJobs := context.WithCancel(ctx)
	defer cancelJobs()
	d.loopsMu.Lock()
	d.loopCtx = jobsCtx
	d.loopsMu.Unlock()
	if err := d.applyTracks(cfg); err != nil {
		return err
	}
	dispatchDone := make(chan struct{})
	go func() {
		defer close(dispatchDone)
		d.dispatchLoop(jobsCtx)
	}()
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		d.gcLoop(jobsCtx)
	}()
	// However Run ends: loops stopped, no job starts any more, running jobs
	// interrupted (they record themselves as pending) and waited for.
	defer func() {
		d.stopLoops()
		cancelJobs()
		<-dispatchDone
		d.workers.Wait()
		<-gcDone
		d.log.Info("stopped")
	}()

	fw, err := d.newFileWatcher()
	if err != nil {
		return err
	}
	defer fw.close()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	d.ready.Store(true)
	d.notify.ready()
	d.updateStatus()
	d.log.Info("daemon running", "tracks", len(cfg.Tracks), "listen", srv.addr(), "watchdog", d.notify.watchdogInterval())

	beat := d.notify.watchdogInterval() / 2
	if beat <= 0 || beat > 10*time.Second {
		beat = 10 * time.Second
	}
	ticker := time.NewTicker(beat)
	defer ticker.Stop()
	for {
		d.heartbeat.Store(time.Now().UnixNano())
		select {
		case <-ctx.Done():
			d.ready.Store(false)
			d.notify.stopping()
			d.log.Info("stopping: interrupting in-flight jobs; they resume at the next start")
			return nil
		case <-hup:
			d.log.Info("SIGHUP: reloading config")
			if d.Reload() == nil { // logs its own outcome
				d.watchDropins(fw) // drop-in dirs the new config added
			}
		case ev := <-fw.events:
			d.handleFileEvent(ev, fw)
		case <-ticker.C:
			d.notify.watchdog()
			d.updateStatus()
		}
	}
}

// applyTracks starts, restarts and stops track loops so that exactly the
// configured tracks run, each with the current schedule. Unchanged tracks
// keep running. Only effective while Run runs.
func (d *Daemon) applyTracks(cfg *config.Config) error {
	sched, err := config.ParseSchedule(cfg.Schedule)
	if err != nil {
		return fmt.Errorf("schedule %q: %w", cfg.Schedule, err) // Validate checked it
	}
	d.loopsMu.Lock()
	defer d.loopsMu.Unlock()
	if d.loopCtx == nil {
		return nil
	}
	old := d.loops
	d.loops = map[string]*loop{}
	prevSched := d.prevSchedule
	for _, tr := range cfg.Tracks {
		if l, ok := old[tr.Name]; ok && l.track.Equal(tr) && prevSched == cfg.Schedule {
			d.loops[tr.Name] = l
			delete(old, tr.Name)
			continue
		}
		if l, ok := old[tr.Name]; ok {
			l.stop()
			delete(old, tr.Name)
		}
		ctx, cancel := context.WithCancel(d.loopCtx)
		l := &loop{track: tr, cancel: cancel, done: make(chan struct{})}
		go func(name string) {
			defer close(l.done)
			d.trackLoop(ctx, name, sched)
		}(tr.Name)
		d.loops[tr.Name] = l
	}
	for _, l := range old {
		l.stop()
	}
	d.prevSchedule = cfg.Schedule
	return nil
}

// stop cancels the loop and waits for it to exit.
func (l *loop) stop() {
	l.cancel()
	<-l.done
}

func (d *Daemon) stopLoops() {
	d.loopsMu.Lock()
	defer d.loopsMu.Unlock()
	for name, l := range d.loops {
		l.stop()
		delete(d.loops, name)
	}
	d.loopCtx = nil
}

// storeFailed records a state database error for /readyz and logs it.
func (d *Daemon) storeFailed(err error) {
	msg := err.Error()
	d.storeErr.Store(&msg)
	d.log.Error("state database", "err", err)
}
