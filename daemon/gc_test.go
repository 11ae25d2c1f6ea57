package daemon

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lorasync/lorasync/convert"
	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/daemon/state"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Which snapshots stay, case by case: a configured track's baseline and
// each of its repos' latest version; both ends of pending, running and
// failed jobs; nothing for done, parked, superseded and orphaned ones;
// every snapshot of a track's repos while it was never polled; adapter
// repos entirely; repos the state does not know are not the daemon's.
func TestBaseSnapshotNeeds(t *testing.T) {
	c := func(n byte) string { return strings.Repeat(string(rune('0'+n)), 40) }
	cfg := &config.Config{Tracks: []config.Track{
		{Name: "t", Base: config.RepoRef{Repo: "org/base"}, Adapters: []config.AdapterRef{{Repo: "acme/math"}, {Repo: "acme/new"}}},
		{Name: "own", Base: config.RepoRef{Repo: "org/own"}, Adapters: []config.AdapterRef{{Repo: "acme/self"}}, Target: config.Target{Branch: "lorasync"}},
		// Successors whose migrations share one target: only the newest's
		// latest version is a migration's destination.
		{Name: "shared", Base: config.RepoRef{Repo: "org/gen1"}, Follow: config.Follow{Successors: []string{"org/gen2", "org/gen3"}},
			Adapters: []config.AdapterRef{{Repo: "acme/bot"}}, Target: config.Target{RepoTemplate: "{adapter}-latest", Owner: "acme"}},
		{Name: "apart", Base: config.RepoRef{Repo: "org/sep1"}, Follow: config.Follow{Successors: []string{"org/sep2", "org/sep3"}},
			Adapters: []config.AdapterRef{{Repo: "acme/bot2"}}, Target: config.Target{RepoTemplate: "{adapter}-{base_name}", Owner: "acme"}},
		{Name: "new", Base: config.RepoRef{Repo: "org/fresh"}, Follow: config.Follow{Successors: []string{"org/fresh2"}}},
	}}
	snap := &state.Snapshot{
		Tracks: []state.TrackState{
			{Track: "t", BaseRepo: "org/base", BaselineCommit: c(0), Versions: []state.Version{
				{Repo: "org/base", Commit: c(1)}, {Repo: "org/next", Commit: c(2)}, {Repo: "org/base", Commit: c(3)}},
				Adapters: map[string]state.AdapterHead{"hub:acme/math@": {Rev: c(5)}}}, // acme/new: not resolved yet
			{Track: "own", BaseRepo: "org/own", BaselineCommit: c(0), Adapters: map[string]state.AdapterHead{"hub:acme/self@": {Rev: c(5)}}},
			{Track: "shared", BaseRepo: "org/gen1", BaselineCommit: c(0), Versions: []state.Version{
				{Repo: "org/gen2", Commit: c(1)}, {Repo: "org/gen3", Commit: c(2)}}},
			{Track: "apart", BaseRepo: "org/sep1", BaselineCommit: c(0), Versions: []state.Version{
				{Repo: "org/sep2", Commit: c(1)}, {Repo: "org/sep3", Commit: c(2)}}},
			{Track: "gone", BaseRepo: "org/removed", BaselineCommit: c(9)},
		},
	}
	job := func(commit string, st state.Status) state.Job {
		return state.Job{Key: state.JobKey{Track: "t", Adapter: "a", BaseRepo: "org/base", BaseCommit: commit},
			OldBaseRepo: "org/base", OldBaseCommit: c(0), Status: st}
	}
	snap.Jobs = []state.Job{job(c(4), state.Pending), job(c(5), state.Running), job(c(6), state.Failed),
		job(c(1), state.Done), job(c(7), state.Parked), job(c(8), state.Superseded), job(strings.Repeat("e", 40), state.Orphaned)}
	// Adapter revisions of waiting jobs stay too; done ones' go.
	adJob := func(rev string, st state.Status) state.Job {
		j := job(c(4), st)
		j.Key.Adapter, j.AdapterCommit = "hub:acme/math@", rev
		return j
	}
	snap.Jobs = append(snap.Jobs, adJob(c(6), state.Pending), adJob(c(7), state.Done))
	n := baseSnapshotNeeds(cfg, snap)
	for _, tc := range []struct {
		repo, commit, want string
	}{
		{"org/base", c(0), needBaseline},
		{"org/base", c(3), needLatest},
		{"org/next", c(2), needLatest},
		{"org/base", c(1), ""}, // an older version, its job done
		{"org/base", c(4), needJob},
		{"org/base", c(5), needJob},
		{"org/base", c(6), needJob},
		{"org/base", c(7), ""},
		{"org/base", c(8), ""},
		{"org/base", strings.Repeat("e", 40), ""},
		{"org/removed", c(9), ""}, // a track no longer configured
		{"org/fresh", c(1), needUnpolled},
		{"org/fresh2", c(1), needUnpolled},
		{"acme/math", c(5), needAdapterRev}, // the revision the adapter is at
		{"acme/math", c(6), needJob},        // a waiting job's revision
		{"acme/math", c(7), ""},             // an older revision, its job done
		{"acme/math", c(1), ""},             // an older revision, no job
		{"acme/new", c(1), needAdapter},     // revision not resolved yet: all stay
		{"acme/self", c(1), needAdapter},    // pushed to (a branch of its own): all stay
		{"org/gen1", c(0), needBaseline},
		{"org/gen2", c(1), ""}, // overtaken by gen3 on the shared target
		{"org/gen3", c(2), needLatest},
		{"org/sep2", c(1), needLatest}, // a target of its own
		{"org/sep3", c(2), needLatest},
		{"someone/else", c(1), "not a base repo"},
	} {
		if got := n.why(tc.repo, tc.commit); got != tc.want {
			t.Errorf("%s@%s: kept for %q, want %q", tc.repo, tc.commit[:1], got, tc.want)
		}
	}
}

// The daemon end to end (hub.Client against hubtest, the real converter)
// with a converter cache bound far below one pair's analysis and a base
// that moves twice: after each job the old version's snapshot goes and the
// baseline and the latest version stay (the next adapter needs them), and
// the converter's cache holds no more than its bound; the migrations are
// pushed all the same.
func TestE2ECachesCollectedAfterJobs(t *testing.T) {
	h, srv := hubtestBed(t, oneAdapterTrack)
	h.realConv = LoRASuite{Logger: slog.New(slog.DiscardHandler)}
	h.writeConfig(oneAdapterTrack, "min_free_disk: 1KiB", "min_free_disk: 1KiB\ncache: {max_size: 1KB}")
	m := makeModels(t)
	c0 := seed(t, srv, "org/base", m.old)
	seed(t, srv, "acme/math", m.adapter)
	h.runOnce()
	hubDir := filepath.Join(h.dir, "hf")
	convDir := ConvertCacheDir(h.config().CacheDir)
	snapshots := func() []string { return cachedSnapshots(t, hubDir, "org/base") }
	var versions []string
	for i, files := range []map[string][]byte{m.new, withVersion(m.new, "2")} {
		c := seed(t, srv, "org/base", files)
		versions = append(versions, c)
		if err := h.runOnce().Err(); err != nil {
			t.Fatal(err)
		}
		done := 0
		for _, j := range h.jobs() {
			if j.Status == state.Done {
				done++
			}
		}
		if done != i+1 {
			t.Fatalf("round %d: %d jobs done, want %d: %+v", i, done, i+1, h.jobs())
		}
		want := []string{c0, c}
		slices.Sort(want)
		if got := snapshots(); !slices.Equal(got, want) {
			t.Fatalf("round %d: base snapshots %v, want the baseline and the new version %v", i, got, want)
		}
		cs, err := convert.CacheUsage(convDir)
		if err != nil {
			t.Fatal(err)
		}
		if cs.TotalBytes() > 1000 {
			t.Fatalf("round %d: converter cache %d bytes, bound 1KB: %+v", i, cs.TotalBytes(), cs)
		}
	}
	// The first version's snapshot went, and a job for it would fetch it
	// again: nothing of it is left half.
	if _, err := os.Lstat(filepath.Join(hubDir, "models--org--base", "snapshots", versions[0])); err == nil {
		t.Fatal("the superseded version's snapshot is still there")
	}
	if !strings.Contains(h.logs.String(), "removed base snapshots no job needs") {
		t.Errorf("no log of the collection:\n%s", h.logs.String())
	}
}

// cachedSnapshots lists the commits of repo's snapshots in the hub cache.
func cachedSnapshots(t *testing.T, hubDir, repo string) []string {
	t.Helper()
	st, err := HubCacheUsage(hubDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range st.Repos {
		if r.Repo == repo {
			for _, s := range r.Snapshots {
				out = append(out, s.Commit)
			}
		}
	}
	slices.Sort(out)
	return out
}

// A Hub adapter's older revision leaves the cache once the new one is
// migrated: the adapter's repo keeps the snapshot of the revision it is at.
func TestE2EOldAdapterRevisionCollected(t *testing.T) {
	h, srv := hubtestBed(t, oneAdapterTrack)
	h.realConv = LoRASuite{Logger: slog.New(slog.DiscardHandler)}
	m := makeModels(t)
	seed(t, srv, "org/base", m.old)
	a1 := seed(t, srv, "acme/math", m.adapter)
	h.runOnce()
	seed(t, srv, "org/base", m.new)
	if err := h.runOnce().Err(); err != nil {
		t.Fatal(err)
	}
	hubDir := filepath.Join(h.dir, "hf")
	if got := cachedSnapshots(t, hubDir, "acme/math"); !slices.Equal(got, []string{a1}) {
		t.Fatalf("adapter snapshots %v, want the migrated revision %s", got, a1)
	}
	retrained := map[string][]byte{}
	for k, v := range m.adapter {
		retrained[k] = v
	}
	retrained[adapterConfigFile] = bytes.Replace(m.adapter[adapterConfigFile], []byte(`"lora_alpha": 8`), []byte(`"lora_alpha": 16`), 1)
	if bytes.Equal(retrained[adapterConfigFile], m.adapter[adapterConfigFile]) {
		t.Fatalf("test setup: lora_alpha not found in %s", m.adapter[adapterConfigFile])
	}
	a2 := seed(t, srv, "acme/math", retrained)
	if err := h.runOnce().Err(); err != nil {
		t.Fatal(err)
	}
	if n := len(h.jobs()); n != 2 {
		t.Fatalf("%d jobs, want 2 (one per adapter revision): %+v", n, h.jobs())
	}
	if got := cachedSnapshots(t, hubDir, "acme/math"); !slices.Equal(got, []string{a2}) {
		t.Fatalf("adapter snapshots %v, want only the current revision %s", got, a2)
	}
}

// withVersion returns files with a different config (another commit of the
// same model: the weights blobs are shared with files').
func withVersion(files map[string][]byte, v string) map[string][]byte {
	out := map[string][]byte{}
	for k, data := range files {
		out[k] = data
	}
	out["generation_config.json"] = []byte(`{"version":"` + v + `"}`)
	return out
}

// Run collects after every job, once the job's outcome is recorded, and
// not before any job ended: a stale pair entry over cache.max_size stays
// through the baseline poll and goes after the first migration.
func TestRunCollectsAfterJobs(t *testing.T) {
	h := newHarness(t, oneAdapterTrack)
	h.writeConfig(oneAdapterTrack, "min_free_disk: 1KiB", "min_free_disk: 1KiB\ncache: {max_size: 1KB}")
	pair := filepath.Join(ConvertCacheDir(h.config().CacheDir), "pairs", strings.Repeat("ab", 32)+".pair.safetensors")
	if err := os.MkdirAll(filepath.Dir(pair), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pair, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/math", "main", adapterFiles(8))
	d := h.daemon(false)
	running(t, d)
	eventually(t, "track loop waiting", func() bool { return h.clock.pending() >= 1 })
	h.clock.Advance(time.Minute)
	eventually(t, "baseline recorded", func() bool { return h.hub.count("Head") >= 1 && h.clock.pending() >= 1 })
	if _, err := os.Stat(pair); err != nil {
		t.Fatalf("collected before any job ended: %v", err)
	}
	h.hub.commit("org/base", "main", baseFiles("v1"))
	h.clock.Advance(time.Hour + time.Minute)
	eventually(t, "job recorded", func() bool {
		js := h.jobs()
		return len(js) == 1 && js[0].Status == state.Done
	})
	eventually(t, "converter cache pruned", func() bool {
		_, err := os.Stat(pair)
		return os.IsNotExist(err)
	})
	// The stale 4 KiB entry shows in the metrics once the pass that removed
	// it has recorded its report.
	eventually(t, "collection counted", func() bool {
		return testutil.ToFloat64(d.metrics.CacheRemovedBytes.WithLabelValues("convert")) >= 4096
	})
	if got := testutil.ToFloat64(d.metrics.ConvertCacheBytes); got > 1000 {
		t.Errorf("lorasync_convert_cache_bytes = %g after pruning to 1 KB", got)
	}
}

// With cache.keep_base_snapshots set, cache status says every snapshot is
// kept, and why, as the collection keeps it: it said the ones no job needs
// would go ("- (prune removes it)"), which prune then did not do.
func TestCacheStatusKeepBaseSnapshots(t *testing.T) {
	b := newGCBed(t)
	cfg := &config.Config{Tracks: []config.Track{{Name: "t", Base: config.RepoRef{Repo: "org/base"}}}}
	snap := &state.Snapshot{Tracks: []state.TrackState{{Track: "t", BaseRepo: "org/base", BaselineCommit: b.commits[1],
		Versions: []state.Version{{Repo: "org/base", Commit: b.commits[2]}}}}}
	for _, keep := range []bool{false, true} {
		cfg.Cache.KeepBaseSnapshots = keep
		st, err := ReadCacheStatus(b.root, filepath.Join(t.TempDir(), "convert"), cfg, snap)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range st.Hub.Repos[0].Snapshots {
			if gone := s.Commit == b.commits[0] && !keep; (s.Needed == "") != gone {
				t.Errorf("keep_base_snapshots %v: %s kept for %q", keep, s.Commit[:8], s.Needed)
			}
		}
	}
}

// A process killed during a job leaves its work directory (the migrated
// adapter before its push) under cache_dir/work. The job's next attempt
// cleans its own, but a job that never runs again (superseded or orphaned
// meanwhile) left it for good. The next start removes them all, before any
// job runs; a dry run, which may run beside a daemon, touches nothing.
func TestStartRemovesKilledJobsWorkDirs(t *testing.T) {
	h := newHarness(t, oneAdapterTrack)
	left := filepath.Join(h.config().CacheDir, "work", "0123456789abcdef", "out", "adapter_model.safetensors")
	if err := os.MkdirAll(filepath.Dir(left), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(left, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	theirs := filepath.Join(h.config().CacheDir, "work", "notes.txt") // not a job's: stays
	if err := os.WriteFile(theirs, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := h.daemon(true).RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(left); err != nil {
		t.Fatalf("a dry run removed a work dir: %v", err)
	}
	h.runOnce()
	if _, err := os.Stat(filepath.Dir(filepath.Dir(left))); !os.IsNotExist(err) {
		t.Fatalf("a killed job's work dir is still there after a start: %v", err)
	}
	if _, err := os.Stat(theirs); err != nil {
		t.Fatalf("a file under work/ that no job made went: %v", err)
	}
}
