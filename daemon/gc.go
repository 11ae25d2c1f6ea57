package daemon

import (
	"cmp"
	"context"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lorasync/lorasync/convert"
	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/daemon/state"
)

// What the daemon keeps under cache_dir, and what goes:
//
//   - base-model snapshots (cache_dir/hub, the huggingface_hub layout) that
//     no job needs: a snapshot stays while a pending, running or failed job
//     migrates from or to its commit, and while it is a configured track's
//     baseline or the latest version of one of its repos (the next adapter
//     registered, or the next revision of one, migrates between those),
//     unless every adapter's migration to that repo goes to the same
//     branch as a newer repo's (then no job ever migrates to it).
//     Repos of tracks never polled are left alone. A Hub adapter's repo
//     keeps the snapshot of the revision the adapter is at and those of
//     waiting or running jobs (all of them until its revision is first
//     resolved). cache.keep_base_snapshots turns this off;
//   - the converter's caches (cache_dir/convert: pair analyses with their
//     MLP operators) beyond cache.max_size, least recently used first
//     (convert.PruneCache).
//
// The daemon collects after every job (a background pass in Run, once at
// the end of RunOnce); `lorasync cache prune` runs the same collection by
// hand.

// ConvertCacheDir is where a daemon with this cache_dir keeps the
// converter's caches.
func ConvertCacheDir(cacheDir string) string { return filepath.Join(cacheDir, "convert") }

// HubCacheDir is where a daemon with this cache_dir downloads models
// (Backends).
func HubCacheDir(cacheDir string) string { return filepath.Join(cacheDir, "hub") }

// Why a snapshot is kept (SnapshotUsage.Needed).
const (
	needBaseline   = "baseline"
	needLatest     = "latest version"
	needJob        = "waiting or running job"
	needUnpolled   = "track not polled yet"
	needAdapter    = "adapter repo"
	needAdapterRev = "adapter's revision"
	needKeepAll    = "cache.keep_base_snapshots"
)

// snapshotNeeds says, for every base repo the state knows, which commits'
// snapshots must stay and why. Repos in keepAll are never collected (tracks
// not polled yet, registered adapter repos).
type snapshotNeeds struct {
	managed map[string]map[string]string // repo -> commit -> why kept
	keepAll map[string]string            // repo -> why
}

// baseSnapshotNeeds computes what must stay from the config and the state.
func baseSnapshotNeeds(cfg *config.Config, snap *state.Snapshot) *snapshotNeeds {
	n := &snapshotNeeds{managed: map[string]map[string]string{}, keepAll: map[string]string{}}
	manage := func(repo string) map[string]string {
		m := n.managed[repo]
		if m == nil {
			m = map[string]string{}
			n.managed[repo] = m
		}
		return m
	}
	need := func(repo, commit, why string) {
		if m := manage(repo); m[commit] == "" && commit != "" {
			m[commit] = why
		}
	}
	states := map[string]state.TrackState{}
	for _, ts := range snap.Tracks {
		states[ts.Track] = ts
		manage(ts.BaseRepo)
		for _, v := range ts.Versions {
			manage(v.Repo)
		}
	}
	for _, tr := range cfg.Tracks {
		ts, ok := states[tr.Name]
		if !ok || ts.BaselineCommit == "" {
			n.keepAll[tr.Base.Repo] = needUnpolled
			for _, s := range tr.Follow.Successors {
				n.keepAll[s] = needUnpolled
			}
			continue
		}
		need(ts.BaseRepo, ts.BaselineCommit, needBaseline)
		latest := ts.Latest()
		over := overtakenForAll(tr, ts, latest)
		for _, v := range latest {
			if !over[v.Repo] {
				need(v.Repo, v.Commit, needLatest)
			}
		}
		for _, r := range tr.Adapters {
			if r.IsLocal() {
				continue
			}
			// A Hub adapter keeps the snapshot of the revision it is at;
			// older ones go. Until its revision is resolved, all stay, and
			// so do those of an adapter repo the track pushes to (a branch
			// or a pull request of its own): pushes are read back from it
			// outside the download lock.
			h, ok := ts.Adapters[adapterFromRef(r).ID]
			if ok && h.Rev != "" && tr.Target.Branch == "" && !tr.Target.PR {
				need(r.Repo, h.Rev, needAdapterRev)
			} else {
				n.keepAll[r.Repo] = needAdapter
			}
		}
	}
	for _, j := range snap.Jobs {
		if j.Status == state.Pending || j.Status == state.Running || j.Status == state.Failed {
			need(j.Key.BaseRepo, j.Key.BaseCommit, needJob)
			need(j.OldBaseRepo, j.OldBaseCommit, needJob)
			if repo, ok := hubAdapterRepo(j.Key.Adapter); ok {
				need(repo, cmp.Or(j.AdapterCommit, j.Key.AdapterRev), needJob)
			}
		}
	}
	return n
}

// overtakenForAll returns the repos among latest whose migration, for every
// adapter of the track, goes to the same branch as a newer base repo's (see
// overtaken): no job will migrate to them, so their latest version need not
// stay. With no adapter, or a drop-in dir that cannot be read, it claims
// nothing.
func overtakenForAll(tr config.Track, ts state.TrackState, latest []state.Version) map[string]bool {
	ads, errs := registeredAdapters(tr)
	if len(ads) == 0 || len(errs) > 0 {
		return nil
	}
	targets := branchTargets(tr)
	count := map[string]int{}
	for _, a := range ads {
		for repo := range overtaken(ts, latest, a, targets) {
			count[repo]++
		}
	}
	out := map[string]bool{}
	for repo, n := range count {
		out[repo] = n == len(ads)
	}
	return out
}

// hubAdapterRepo returns the repo of a Hub adapter's id
// ("hub:owner/name@revision").
func hubAdapterRepo(id string) (string, bool) {
	rest, ok := strings.CutPrefix(id, "hub:")
	if !ok {
		return "", false
	}
	repo, _, _ := strings.Cut(rest, "@")
	return repo, repo != ""
}

// why returns why repo@commit is kept, "" when it may go.
func (n *snapshotNeeds) why(repo, commit string) string {
	if w, ok := n.keepAll[repo]; ok {
		return w
	}
	m, ok := n.managed[repo]
	if !ok {
		return "not a base repo"
	}
	return m[commit]
}

// manages reports whether the daemon collects in repo's folder: a base
// repo the state knows, not kept whole. Other folders (adapter repos, push
// targets whose files a reconcile reads, repos of tracks not polled yet)
// are not touched, not even their leftovers.
func (n *snapshotNeeds) manages(repo string) bool {
	_, kept := n.keepAll[repo]
	_, ok := n.managed[repo]
	return ok && !kept
}

// CacheCollectOptions say what CollectCaches does.
type CacheCollectOptions struct {
	// Config and State decide which base snapshots are needed. Without a
	// State no snapshot is removed.
	Config *config.Config
	State  *state.Snapshot
	// HubDir is the hub cache root; "" leaves snapshots alone.
	HubDir string
	// ConvertDir is the converter's cache dir; MaxConvertBytes its bound
	// (negative: none, only stale leftovers go).
	ConvertDir      string
	MaxConvertBytes int64
	DryRun          bool
	Logger          *slog.Logger
}

// CacheCollectReport says what was (or, dry, would be) removed.
type CacheCollectReport struct {
	DryRun bool `json:"dry_run"`
	// Snapshots removed and the blob bytes that freed.
	Snapshots     []SnapshotUsage `json:"snapshots,omitempty"`
	SnapshotBytes int64           `json:"snapshot_bytes"`
	// Convert is convert.PruneCache's result (nil when not run).
	Convert *convert.PruneResult `json:"convert,omitempty"`
}

// CollectCaches removes the base snapshots no job needs and prunes the
// converter's caches to their bound. The caller makes sure nothing
// downloads into HubDir meanwhile (the daemon holds its download lock;
// `lorasync cache prune` the state directory's owner lock).
func CollectCaches(ctx context.Context, o CacheCollectOptions) (*CacheCollectReport, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	rep := &CacheCollectReport{DryRun: o.DryRun}
	if o.HubDir != "" && o.State != nil && o.Config != nil {
		needs := baseSnapshotNeeds(o.Config, o.State)
		st, err := HubCacheUsage(o.HubDir)
		if err != nil {
			return nil, err
		}
		for _, r := range st.Repos {
			var drop []string
			for _, s := range r.Snapshots {
				if needs.why(r.Repo, s.Commit) == "" {
					drop = append(drop, s.Commit)
					rep.Snapshots = append(rep.Snapshots, s)
				}
			}
			if len(drop) == 0 && (r.Leftovers == 0 || !needs.manages(r.Repo)) {
				continue
			}
			if o.DryRun {
				n, err := freedBy(o.HubDir, r.Repo, drop)
				if err != nil {
					return nil, err
				}
				rep.SnapshotBytes += n
				continue
			}
			freed, err := removeSnapshots(ctx, o.HubDir, r.Repo, drop)
			rep.SnapshotBytes += freed
			if err != nil {
				return rep, err
			}
			if len(drop) > 0 {
				log.Info("removed base snapshots no job needs", "repo", r.Repo, "commits", drop, "freed_bytes", freed)
			} else if freed > 0 {
				log.Info("removed what an interrupted collection or download left", "repo", r.Repo, "freed_bytes", freed)
			}
		}
	}
	if o.ConvertDir != "" {
		res, err := convert.PruneCache(ctx, o.ConvertDir, convert.PruneOptions{MaxBytes: o.MaxConvertBytes, DryRun: o.DryRun})
		if err != nil {
			return rep, err
		}
		rep.Convert = res
		if len(res.Removed) > 0 && !o.DryRun {
			log.Info("pruned converter cache", "dir", o.ConvertDir, "pairs_removed", len(res.Removed),
				"bytes_before", res.Before, "bytes_after", res.After, "in_use", len(res.InUse))
		}
	}
	return rep, nil
}

// CacheStatus is what `lorasync cache status` shows.
type CacheStatus struct {
	Hub     *HubCacheStats      `json:"hub"`
	Convert *convert.CacheStats `json:"convert"`
}

// ReadCacheStatus scans a hub cache root and a converter cache dir. With
// a config and a state, every snapshot says whether (and why) the daemon
// keeps it.
func ReadCacheStatus(hubDir, convertDir string, cfg *config.Config, snap *state.Snapshot) (*CacheStatus, error) {
	h, err := HubCacheUsage(hubDir)
	if err != nil {
		return nil, err
	}
	if cfg != nil && snap != nil {
		needs := baseSnapshotNeeds(cfg, snap)
		for i := range h.Repos {
			for j := range h.Repos[i].Snapshots {
				s := &h.Repos[i].Snapshots[j]
				s.Needed = needs.why(s.Repo, s.Commit)
				if s.Needed == "" && cfg.Cache.KeepBaseSnapshots {
					s.Needed = needKeepAll // the collection keeps them all
				}
			}
		}
	}
	c, err := convert.CacheUsage(convertDir)
	if err != nil {
		return nil, err
	}
	sort.Slice(h.Repos, func(a, b int) bool { return h.Repos[a].Repo < h.Repos[b].Repo })
	return &CacheStatus{Hub: h, Convert: c}, nil
}

// hubCacheDirer is implemented by a Hub that downloads into a hub cache on
// this machine (HubClient); the daemon collects snapshots only there.
type hubCacheDirer interface{ hubCacheDir() string }

func (h *HubClient) hubCacheDir() string { return h.c.CacheDir() }

// collectCaches is the daemon's pass after jobs: the snapshot part only
// when no download is under way (it is tried again after the next job).
func (d *Daemon) collectCaches(ctx context.Context) {
	if d.dryRun {
		return
	}
	cfg := d.Config()
	// Base snapshots first, holding the download lock only for them; then
	// the converter's caches, which downloads never touch.
	if hc, ok := d.hub.(hubCacheDirer); ok && !cfg.Cache.KeepBaseSnapshots {
		if d.gc.downloads.TryLock() {
			snap, err := d.store.Snapshot()
			if err != nil {
				d.gc.downloads.Unlock()
				d.storeFailed(err)
				return
			}
			rep, err := CollectCaches(ctx, CacheCollectOptions{Config: cfg, State: snap, HubDir: hc.hubCacheDir(), Logger: d.log})
			d.gc.downloads.Unlock()
			d.recordCollection(ctx, rep, err)
		} else {
			d.log.Debug("downloads under way; base snapshots are collected after a later job")
		}
	}
	o := CacheCollectOptions{ConvertDir: ConvertCacheDir(cfg.CacheDir), MaxConvertBytes: int64(cfg.Cache.MaxSize), Logger: d.log}
	if cfg.Cache.MaxSize == 0 {
		o.MaxConvertBytes = -1
	}
	rep, err := CollectCaches(ctx, o)
	d.recordCollection(ctx, rep, err)
}

// recordCollection counts what a collection freed and logs its failure.
func (d *Daemon) recordCollection(ctx context.Context, rep *CacheCollectReport, err error) {
	if rep != nil {
		d.metrics.CacheRemovedBytes.WithLabelValues("base_snapshots").Add(float64(rep.SnapshotBytes))
		if c := rep.Convert; c != nil {
			d.metrics.CacheRemovedBytes.WithLabelValues("convert").Add(float64(max(c.Before-c.After, 0)))
			d.metrics.ConvertCacheBytes.Set(float64(c.After))
		}
	}
	if err != nil && ctx.Err() == nil {
		d.log.Warn("cache collection failed; tried again after the next job", "err", err)
	}
}

// gcState runs the daemon's collections.
type gcState struct {
	// downloads is held shared by every snapshot download and exclusively
	// by the collection of snapshots, so that no blob is removed while a
	// download links it.
	downloads sync.RWMutex
	// ended receives the jobs that finished since the last pass (Run).
	ended chan state.JobKey
}

func newGCState() *gcState { return &gcState{ended: make(chan state.JobKey, 64)} }

// jobEnded asks for a collection once the job is recorded (Run's loop; a
// full queue means a pass is due anyway).
func (d *Daemon) jobEnded(k state.JobKey) {
	select {
	case d.gc.ended <- k:
	default:
	}
}

// gcLoop collects after jobs until ctx is done: when a job ends it waits
// for its outcome to be recorded (the job leaves the in-flight set), so that
// a finished job's snapshots are not kept for it.
func (d *Daemon) gcLoop(ctx context.Context) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var keys []state.JobKey
		select {
		case <-ctx.Done():
			return
		case k := <-d.gc.ended:
			keys = append(keys, k)
		}
		for recorded := false; !recorded; {
			for more := true; more; {
				select {
				case k := <-d.gc.ended:
					keys = append(keys, k)
				default:
					more = false
				}
			}
			recorded = true
			for _, k := range keys {
				recorded = recorded && !d.isInflight(k)
			}
			if !recorded {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}
		d.collectCaches(ctx)
	}
}
