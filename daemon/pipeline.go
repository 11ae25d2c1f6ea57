package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/lorasync/lorasync/convert/peft"
	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/daemon/state"
)

// runJob takes one job through the pipeline:
//
//	resolve -> download -> pair analysis + migrate -> check output -> push -> (record)
//
// and returns the job with its outputs filled in. Recording is the
// caller's (dispatch.go). Before pushing, the target is searched for an
// earlier push of the same migration (reconcile), so a crash between push
// and record never leads to a second push.
func (d *Daemon) runJob(ctx context.Context, cfg *config.Config, tr config.Track, ad Adapter, job state.Job) (state.Job, error) {
	defer d.jobEnded(job.Key) // caches are collected once its outcome is recorded (gc.go)
	// resolve: the job migrates the adapter revision of its key. A local
	// adapter is hashed again at every attempt, so that what is recorded is
	// what was migrated: content that changed since planning is the next
	// job's (errAdapterChanged). A key without a revision (planned before it
	// could be resolved, or by a lorasync before schema 2) pins a Hub
	// adapter's revision at the first attempt, so that every retry migrates
	// the same commit, and records a local adapter's content as it is.
	pinned := job.AdapterCommit
	if job.Key.AdapterRev != "" && !ad.Local() {
		job.AdapterCommit = job.Key.AdapterRev
	} else if job.AdapterCommit == "" || ad.Local() {
		c, err := d.resolveAdapter(ctx, ad)
		if err != nil {
			return job, fmt.Errorf("resolve adapter %s: %w", ad.ID, err)
		}
		if job.Key.AdapterRev != "" && c != job.Key.AdapterRev {
			return job, fmt.Errorf("%w (now %s, planned %s)", errAdapterChanged, short(c), short(job.Key.AdapterRev))
		}
		job.AdapterCommit = c
	}
	if job.AdapterCommit != pinned {
		if err := d.saveJob(job); err != nil {
			return job, err
		}
	}
	tg, err := targetFor(tr, ad, job.Key.BaseRepo)
	if err != nil {
		return job, err
	}
	if err := d.checkSuperseded(tr, ad, job); err != nil {
		return job, err
	}

	// A cheap early reconcile: if an earlier (crashed) attempt already
	// pushed, there is nothing to download or convert.
	if found, _, err := reconcile(ctx, d.hub, tg, ad, job); err != nil {
		return job, err
	} else if found != nil {
		return d.reconciled(job, tg, found), nil
	}

	// download: the adapter first, which is small, and may turn out to hold
	// the files already migrated to this base (a new commit that only
	// touched its model card): then there is nothing to migrate or push.
	if err := checkFreeDisk(cfg.CacheDir, int64(cfg.MinFreeDisk)); err != nil {
		return job, err
	}
	adapterDir := ad.Path
	if !ad.Local() {
		var err error
		if adapterDir, err = d.snapshot(ctx, ad.Repo, job.AdapterCommit, "adapter"); err != nil {
			return job, err
		}
	}
	content, err := peftContent(adapterDir)
	if err != nil {
		if _, lerr := peft.Load(adapterDir); lerr != nil {
			err = lerr // the converter's own refusal: a pickle-only adapter, ...
		}
		if !ad.Local() && errors.Is(err, fs.ErrNotExist) {
			// The download takes safetensors weights only, so a repo that
			// publishes a pickle has no weights here at all.
			return job, permanentf("adapter %s@%s has no %s: lorasync reads safetensors weights only and never loads a pickle (adapter_model.bin); convert the adapter to safetensors and push that: %w",
				ad.ID, short(job.AdapterCommit), adapterWeightsFile, err)
		}
		return job, permanentf("adapter %s: %w", ad.ID, err)
	}
	job.AdapterContent = content
	if err := checkTrainedOn(adapterDir, ad, job); err != nil {
		return job, err
	}
	if prev, err := d.sameContentDone(job, tg); err != nil {
		return job, err
	} else if prev != nil {
		return d.unchanged(job, *prev), nil
	}
	oldDir, err := d.snapshot(ctx, job.OldBaseRepo, job.OldBaseCommit, "old base")
	if err != nil {
		return job, err
	}
	newDir, err := d.snapshot(ctx, job.Key.BaseRepo, job.Key.BaseCommit, "new base")
	if err != nil {
		return job, err
	}

	// pair analysis + migrate
	work := filepath.Join(cfg.CacheDir, "work", jobDirName(job.Key))
	if err := os.RemoveAll(work); err != nil {
		return job, fmt.Errorf("clean work dir %s: %w", work, err)
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		return job, fmt.Errorf("work dir: %w", err)
	}
	defer os.RemoveAll(work)
	out := filepath.Join(work, "out")
	req := ConvertRequest{
		AdapterDir: adapterDir, OldBaseDir: oldDir, NewBaseDir: newDir, OutDir: out,
		CacheDir:    filepath.Join(cfg.CacheDir, "convert"),
		NewBaseRepo: job.Key.BaseRepo, NewBaseCommit: job.Key.BaseCommit,
		OldBaseRepo: job.OldBaseRepo, OldBaseCommit: job.OldBaseCommit,
		AdapterID: ad.PublicID(), AdapterCommit: job.AdapterCommit,
		Options: tr.Convert,
	}
	unlock, err := d.pairs.lock(ctx, job.OldBaseRepo+"@"+job.OldBaseCommit+" -> "+job.Key.BaseRepo+"@"+job.Key.BaseCommit)
	if err != nil {
		return job, err
	}
	res, err := d.conv.Convert(ctx, req)
	unlock()
	if err != nil {
		return job, fmt.Errorf("migrate %s to %s@%s: %w", ad.ID, job.Key.BaseRepo, short(job.Key.BaseCommit), err)
	}
	job.Summary = res.Summary

	// check output
	if err := d.conv.Verify(ctx, out, newDir); err != nil {
		return job, permanentf("check migrated adapter %s: %w", ad.ID, err)
	}
	if err := writeProvenance(out, newProvenance(job, ad, tr.Convert, res, d.clock.Now())); err != nil {
		return job, err
	}
	title := fmt.Sprintf("lorasync: migrate %s to %s", ad.Name(), job.Key.BaseRepo)
	message := fmt.Sprintf("Migrated %s at revision %s from %s@%s to %s@%s with LoRASuite.\n\n%s",
		ad.PublicID(), job.AdapterCommit, job.OldBaseRepo, job.OldBaseCommit, job.Key.BaseRepo, job.Key.BaseCommit, res.Summary)
	if err := checkNoLocalPaths(out, []string{title, message}, ad.Path, adapterDir, oldDir, newDir,
		cfg.CacheDir, cfg.StateDir, tr.Convert.Calibration, tr.Convert.SimilarityFile); err != nil {
		return job, err
	}

	// push, after a last supersede check and reconcile against the head we
	// build on, all under the target's lock.
	if err := ctx.Err(); err != nil {
		return job, err
	}
	unlockTarget, err := d.targets.lock(ctx, tg.String())
	if err != nil {
		return job, err
	}
	defer unlockTarget()
	if err := d.checkSuperseded(tr, ad, job); err != nil {
		return job, err
	}
	if err := d.checkRegistered(job); err != nil {
		return job, err
	}
	found, parent, err := reconcile(ctx, d.hub, tg, ad, job)
	if err != nil {
		return job, err
	}
	if found != nil {
		return d.reconciled(job, tg, found), nil
	}
	pushed, err := d.hub.Upload(ctx, Upload{
		Repo: tg.Repo, Revision: tg.Revision, Dir: out, ParentCommit: parent,
		CreatePR: tg.CreatePR, Private: tg.Private, Summary: title, Message: message,
	})
	if err != nil {
		return job, fmt.Errorf("push to %s: %w", tg, err)
	}
	d.metrics.Pushes.WithLabelValues("pushed").Inc()
	if d.testHookAfterPush != nil && d.testHookAfterPush(job.Key) {
		return job, errSimulatedCrash
	}
	job.OutputRepo, job.OutputRevision, job.OutputCommit, job.PullRequest = tg.Repo, tg.Revision, pushed.Commit, pushed.PullRequest
	job.Reconciled = false
	return job, nil
}

func (d *Daemon) reconciled(job state.Job, tg target, found *existing) state.Job {
	d.log.Info("found an earlier push of this migration on the Hub; recording it instead of pushing again",
		"job", job.Key.String(), "target", tg.String(), "commit", found.Commit)
	d.metrics.Pushes.WithLabelValues("reconciled").Inc()
	job.OutputRepo, job.OutputRevision, job.OutputCommit, job.PullRequest = tg.Repo, tg.Revision, found.Commit, found.PullRequest
	job.Reconciled = true
	return job
}

// errUnregistered is wrapped when the job's track, or its adapter in the
// track, left the configuration while the job ran: it is orphaned instead
// of pushed, as it would have been had it still been waiting.
var errUnregistered = errors.New("no longer registered")

// checkRegistered returns an errUnregistered error when the configuration
// in force (reloaded since the job started, perhaps) no longer has the job's
// track or adapter. An unreadable drop-in dir proves nothing: the job goes
// on.
func (d *Daemon) checkRegistered(job state.Job) error {
	for _, tr := range d.Config().Tracks {
		if tr.Name != job.Key.Track {
			continue
		}
		ads, errs := registeredAdapters(tr)
		if len(errs) > 0 {
			return nil
		}
		for _, a := range ads {
			if a.ID == job.Key.Adapter {
				return nil
			}
		}
		return fmt.Errorf("adapter %s is %w in track %s; the job waits until it is again", job.Key.Adapter, errUnregistered, job.Key.Track)
	}
	return fmt.Errorf("track %s is %w; the job waits until it is again", job.Key.Track, errUnregistered)
}

// errSuperseded is wrapped when a newer commit of the job's base repo, a
// newer revision of its adapter, or a newer base repo whose migration goes
// to the same target was recorded: its own job migrates instead, and
// pushing this one could put an older migration on top of a newer one.
var errSuperseded = errors.New("superseded")

// errAdapterChanged is wrapped when a local adapter's content is no longer
// the revision the job was planned for. The job is superseded, and a re-plan
// (see finish) plans the new content's job.
var errAdapterChanged = fmt.Errorf("%w: the adapter's files changed since the job was planned", errSuperseded)

func (d *Daemon) checkSuperseded(tr config.Track, ad Adapter, job state.Job) error {
	var ts state.TrackState
	err := d.store.View(func(tx *state.Tx) error {
		var err error
		ts, _, err = tx.Track(job.Key.Track)
		return err
	})
	if err != nil {
		return err
	}
	for _, v := range ts.Latest() {
		if v.Repo == job.Key.BaseRepo && v.Commit != job.Key.BaseCommit {
			return fmt.Errorf("%w by %s@%s", errSuperseded, job.Key.BaseRepo, short(v.Commit))
		}
	}
	// The recorded revision and its job are written together, so a
	// different one means a newer job exists. (A job without a revision in
	// its key pinned its own at the first attempt, possibly a newer one than
	// recorded: it is not compared.)
	if h, ok := ts.Adapters[job.Key.Adapter]; ok && job.Key.AdapterRev != "" && h.Rev != job.Key.AdapterRev {
		return fmt.Errorf("%w by adapter revision %s", errSuperseded, short(h.Rev))
	}
	if o, ok := overtaken(ts, ts.Latest(), ad, branchTargets(tr))[job.Key.BaseRepo]; ok {
		return fmt.Errorf("%w %s", errSuperseded, o.reason(job.Key.BaseRepo))
	}
	return nil
}

func (d *Daemon) resolveAdapter(ctx context.Context, ad Adapter) (string, error) {
	if ad.Local() {
		if _, err := os.Stat(filepath.Join(ad.Path, adapterConfigFile)); err != nil {
			return "", permanentf("adapter %s: %w", ad.Path, err)
		}
		return hashDir(ad.Path)
	}
	return d.hub.Head(ctx, ad.Repo, ad.Revision)
}

func (d *Daemon) snapshot(ctx context.Context, repo, commit, what string) (string, error) {
	d.gc.downloads.RLock() // no snapshot collection meanwhile (gc.go)
	dir, n, err := d.hub.Snapshot(ctx, repo, commit)
	d.gc.downloads.RUnlock()
	if err != nil {
		return "", fmt.Errorf("download %s %s@%s: %w", what, repo, short(commit), err)
	}
	d.metrics.DownloadedBytes.Add(float64(n))
	return dir, nil
}

// checkTrainedOn refuses (permanently) an adapter whose adapter_config.json
// says it was trained on the new base repo of a job that migrates from
// another repo: a team that retrained it on the successor and pushed it to
// the same adapter repo wants it used as is, and migrating weights that
// already fit the new base as if they fit the old one would push nonsense.
// Names that are paths or other repos say nothing either way.
func checkTrainedOn(adapterDir string, ad Adapter, job state.Job) error {
	if job.Key.BaseRepo == job.OldBaseRepo {
		return nil // a new commit of the same repo: both bases share the name
	}
	path := filepath.Join(adapterDir, adapterConfigFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil // peftContent read it; a vanished file is the converter's to report
	}
	cfg, err := peft.ParseConfig(path, data)
	if err != nil || cfg.BaseModel != job.Key.BaseRepo {
		return nil
	}
	return permanentf("adapter %s declares base_model_name_or_path %q, the new base itself: it was trained on %s already, so there is nothing to migrate from %s (register it on a track of %s instead)",
		ad.ID, cfg.BaseModel, job.Key.BaseRepo, job.OldBaseRepo, job.Key.BaseRepo)
}

// checkFreeDisk refuses to download when dir's filesystem has less than
// min bytes available to unprivileged users. The error is transient: the
// job retries later, when space may have been freed.
func checkFreeDisk(dir string, min int64) error {
	if min <= 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cache_dir %s: %w", dir, err)
	}
	free, err := freeDisk(dir)
	if err != nil {
		return err
	}
	if free < min {
		return fmt.Errorf("cache_dir %s: %s free, below min_free_disk %s", dir, config.ByteSize(free), config.ByteSize(min))
	}
	return nil
}

// freeDisk returns the bytes available to unprivileged users on dir's
// filesystem.
func freeDisk(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// jobDirName is a filesystem-safe, stable name for a job's work dir.
func jobDirName(k state.JobKey) string {
	h := sha256.Sum256([]byte(k.Track + "\x00" + k.Adapter + "\x00" + k.BaseRepo + "@" + k.BaseCommit + "\x00" + k.AdapterRev))
	return hex.EncodeToString(h[:8])
}

// workDirRE matches the names jobDirName makes.
var workDirRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// removeWorkDirs removes the job work dirs under work (only names
// jobDirName makes: whatever else is there is not the daemon's; a link is
// not followed).
func removeWorkDirs(work string) error {
	des, err := readRealDir(work)
	if err != nil {
		return fmt.Errorf("work dir %s: %w", work, err)
	}
	for _, de := range des {
		if workDirRE.MatchString(de.Name()) {
			if err := os.RemoveAll(filepath.Join(work, de.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}

// keyedLocks are cancellable mutexes by name. The daemon keeps two sets:
// base pairs, so that the converter's pair-analysis cache is computed once
// and then shared, and push targets, so that the supersede check, the
// reconcile and the push of one target are never interleaved with another
// job's.
type keyedLocks struct {
	mu sync.Mutex
	m  map[string]chan struct{} // a 1-slot channel per pair: waiting is cancellable
}

func newKeyedLocks() *keyedLocks { return &keyedLocks{m: map[string]chan struct{}{}} }

// slot returns key's 1-slot channel, making it on first use: a send takes
// the lock, a receive releases it.
func (p *keyedLocks) slot(key string) chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch, ok := p.m[key]
	if !ok {
		ch = make(chan struct{}, 1)
		p.m[key] = ch
	}
	return ch
}

// lock waits for key's lock or ctx; the returned func releases it.
func (p *keyedLocks) lock(ctx context.Context, key string) (func(), error) {
	ch := p.slot(key)
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// tryLock takes key's lock if it is free; the returned func releases it.
func (p *keyedLocks) tryLock(key string) (func(), bool) {
	ch := p.slot(key)
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, true
	default:
		return nil, false
	}
}
