package daemon

// Jobs of adapters removed from a track, or of removed tracks, are orphaned:
// never run, shown apart from pending ones, and back to what they were when
// the adapter or track is configured again, by a reload or at a restart.

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lorasync/lorasync/daemon/state"
)

const twoAdapterTrack = `
tracks:
  - name: t
    base: {repo: org/base}
    follow: {commits: true}
    adapters: [{repo: acme/a1}, {repo: acme/a2}]
    target: {repo_template: "{adapter}-{base_name}"}
`

func counts(t *testing.T, h *harness) map[state.Status]int {
	t.Helper()
	s, err := state.OpenReadOnly(filepath.Join(h.dir, "state"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return snap.Counts
}

func TestRemovedAdapterOrphanedOnReloadAndBack(t *testing.T) {
	h := newHarness(t, twoAdapterTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/a1", "main", adapterFiles(8))
	h.hub.commit("acme/a2", "main", adapterFiles(4))
	h.runOnce()
	h.hub.commit("org/base", "main", baseFiles("v1"))
	h.hub.failNext("Upload", 2)
	d := h.daemon(false)
	ctx := context.Background()
	if _, err := d.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"acme/a1", "acme/a2"} {
		if j := h.job(a); j.Status != state.Failed {
			t.Fatalf("%s: %+v, want failed and waiting", a, j)
		}
	}

	// a2 leaves the config: a hot reload orphans its waiting job.
	h.writeConfig(strings.Replace(twoAdapterTrack, ", {repo: acme/a2}", "", 1))
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	j := h.job("acme/a2")
	if j.Status != state.Orphaned || !strings.Contains(j.LastError, "no longer registered") || j.Orphan == nil || j.Orphan.Status != state.Failed {
		t.Fatalf("a2 after the reload: %+v", j)
	}
	if c := counts(t, h); c[state.Orphaned] != 1 || c[state.Pending] != 0 || c[state.Failed] != 1 {
		t.Errorf("counts %v: want 1 orphaned, 1 failed, 0 pending", c)
	}
	h.clock.Advance(time.Hour)
	if _, err := d.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if j := h.job("acme/a1"); j.Status != state.Done {
		t.Errorf("a1: %+v", j)
	}
	if j := h.job("acme/a2"); j.Status != state.Orphaned || h.hub.uploadCount() != 1 {
		t.Fatalf("an orphaned job ran: %+v, uploads %d", j, h.hub.uploadCount())
	}

	// a2 comes back: its job is failed again (with its error) and runs.
	h.writeConfig(twoAdapterTrack)
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	if j := h.job("acme/a2"); j.Status != state.Failed || !strings.Contains(j.LastError, "503") || j.Attempts != 1 || j.Orphan != nil {
		t.Fatalf("a2 re-added: %+v", j)
	}
	if _, err := d.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if j := h.job("acme/a2"); j.Status != state.Done || j.Attempts != 2 || h.hub.uploadCount() != 2 {
		t.Fatalf("a2 after re-adding: %+v, uploads %d", j, h.hub.uploadCount())
	}
}

func TestRemovedTrackOrphanedAcrossRestart(t *testing.T) {
	other := `
  - name: u
    base: {repo: org/other}
    follow: {commits: true}
    adapters: [{repo: acme/b}]
    target: {repo_template: "{adapter}-{base_name}"}
`
	h := newHarness(t, twoAdapterTrack+other)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("org/other", "main", baseFiles("w0"))
	h.hub.commit("acme/a1", "main", adapterFiles(8))
	h.hub.commit("acme/a2", "main", adapterFiles(4))
	h.hub.commit("acme/b", "main", adapterFiles(4))
	h.runOnce()
	h.hub.commit("org/base", "main", baseFiles("v1"))
	// A poll plans t's jobs; the process stops before they run.
	if rep := h.daemon(false).pollTrack(context.Background(), "t"); len(rep.NewJobs) != 2 {
		t.Fatalf("poll: %+v", rep)
	}

	// Restarted without track t: its pending jobs are orphaned at startup,
	// before any poll, and never run; the same again with a one-shot run.
	h.writeConfig("\ntracks:" + other)
	stop := running(t, h.daemon(false))
	eventually(t, "jobs orphaned at startup", func() bool { return counts(t, h)[state.Orphaned] == 2 })
	stop()
	h.runOnce()
	for _, a := range []string{"acme/a1", "acme/a2"} {
		if j := h.job(a); j.Status != state.Orphaned || !strings.Contains(j.LastError, "track t is no longer configured") {
			t.Errorf("%s: %+v", a, j)
		}
	}
	if c := counts(t, h); c[state.Orphaned] != 2 || c[state.Pending] != 0 || h.conv.count() != 0 {
		t.Fatalf("counts %v, conversions %d: want 2 orphaned, none pending or run", c, h.conv.count())
	}

	// Restarted with t again: the jobs are pending again and run.
	h.writeConfig(twoAdapterTrack + other)
	h.runOnce()
	for _, a := range []string{"acme/a1", "acme/a2"} {
		if j := h.job(a); j.Status != state.Done {
			t.Errorf("%s: %+v", a, j)
		}
	}
	if n := h.hub.uploadCount(); n != 2 {
		t.Errorf("%d uploads, want 2", n)
	}
}

// A job whose adapter leaves the config while it converts is not pushed: at
// its last check before the push it is orphaned (remembering pending), as it
// would have been while waiting, and it runs when the adapter comes back.
func TestAdapterRemovedWhileRunningNotPushed(t *testing.T) {
	h := newHarness(t, twoAdapterTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/a1", "main", adapterFiles(8))
	h.hub.commit("acme/a2", "main", adapterFiles(4))
	h.runOnce()
	h.hub.commit("org/base", "main", baseFiles("v1"))
	d := h.daemon(false)
	ctx := context.Background()
	removed := false
	h.conv.onConvert = func(req ConvertRequest) {
		if !removed && strings.Contains(req.AdapterID, "acme/a2") {
			removed = true
			h.writeConfig(strings.Replace(twoAdapterTrack, ", {repo: acme/a2}", "", 1))
			if err := d.Reload(); err != nil {
				t.Error(err)
			}
		}
	}
	if _, err := d.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if !removed {
		t.Fatal("a2 was never converted")
	}
	j := h.job("acme/a2")
	if j.Status != state.Orphaned || !strings.Contains(j.LastError, "no longer registered") || j.Orphan == nil || j.Orphan.Status != state.Pending {
		t.Fatalf("a2 after its adapter left mid-run: %+v", j)
	}
	if h.job("acme/a1").Status != state.Done || h.hub.uploadCount() != 1 {
		t.Fatalf("uploads %d, want only a1's", h.hub.uploadCount())
	}
	h.writeConfig(twoAdapterTrack)
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if j := h.job("acme/a2"); j.Status != state.Done || h.hub.uploadCount() != 2 {
		t.Fatalf("a2 after coming back: %+v, uploads %d", j, h.hub.uploadCount())
	}
}
