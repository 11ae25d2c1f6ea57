package daemon

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/lorasync/lorasync/daemon/state"
)

// Jobs whose pushes land on one branch: a track that follows two successor
// repos with a target template without {base_name}. The target must end on
// the newest base's migration, never on an older one pushed on top of it.

const sharedTargetTrack = `
tracks:
  - name: t
    base: {repo: org/base}
    follow: {successors: [org/base-2, org/base-3]}
    adapters: [{repo: acme/math}]
    target: {repo_template: "{adapter}-latest"}
`

// sharedTarget is where sharedTargetTrack pushes acme/math's migrations.
const sharedTarget = "acme/math-latest"

// jobFor returns the one job of adapter for baseRepo.
func (h *harness) jobFor(adapter, baseRepo string) state.Job {
	h.t.Helper()
	var found []state.Job
	for _, j := range h.jobsFor(adapter) {
		if j.Key.BaseRepo == baseRepo {
			found = append(found, j)
		}
	}
	if len(found) != 1 {
		h.t.Fatalf("want exactly one job of %s for %s, got %+v", adapter, baseRepo, found)
	}
	return found[0]
}

// targetBase returns the new base named by the provenance on repo's main.
func (h *harness) targetBase(repo string) RepoCommit {
	h.t.Helper()
	data, ok := h.hub.file(repo, "main", ProvenanceFile)
	if !ok {
		h.t.Fatalf("%s has no %s", repo, ProvenanceFile)
	}
	return readProvenance(h.t, data).NewBase
}

// Both successors found by one `lorasync run`: only the newer one's
// migration runs and is pushed; the older one's job is superseded, says
// why, and is not planned again by later runs.
func TestRunOnceSharedTargetMigratesNewestBaseOnly(t *testing.T) {
	h := newHarness(t, sharedTargetTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/math", "main", adapterFiles(8))
	h.runOnce()
	h.hub.commit("org/base-2", "main", baseFiles("v2"))
	c3 := h.hub.commit("org/base-3", "main", baseFiles("v3"))
	// `lorasync run --dry-run`, then `lorasync run`: both report the one job
	// planned and why base-2's is not run.
	dry, err := h.daemon(true).RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, rep := range []*Report{dry, h.runOnce()} {
		tr := rep.Tracks[0]
		if len(tr.NewJobs) != 1 || tr.NewJobs[0].BaseRepo != "org/base-3" {
			t.Errorf("dry run %v: new jobs %v, want base-3's only", rep.DryRun, tr.NewJobs)
		}
		if len(tr.Superseded) != 1 || tr.Superseded[0].Key.BaseRepo != "org/base-2" || !strings.Contains(tr.Superseded[0].Why, "org/base-3@"+c3[:12]) {
			t.Errorf("dry run %v: superseded %+v, want base-2's, by org/base-3", rep.DryRun, tr.Superseded)
		}
	}

	if j := h.jobFor("acme/math", "org/base-3"); j.Status != state.Done {
		t.Errorf("base-3 job = %+v, want done", j)
	}
	j2 := h.jobFor("acme/math", "org/base-2")
	if j2.Status != state.Superseded || !strings.Contains(j2.LastError, "org/base-3@"+c3[:12]) || !strings.Contains(j2.LastError, sharedTarget+"@main") {
		t.Errorf("base-2 job = %+v, want superseded by org/base-3@%s naming the target %s@main", j2, c3[:12], sharedTarget)
	}
	if n := h.hub.uploadCount(); n != 1 {
		t.Errorf("%d uploads, want 1 (base-3's migration only)", n)
	}
	if got := h.targetBase(sharedTarget); got.Repo != "org/base-3" || got.Commit != c3 {
		t.Errorf("%s holds the migration to %+v, want org/base-3@%s", sharedTarget, got, c3)
	}

	h.runOnce()
	if n, m := len(h.jobs()), h.hub.uploadCount(); n != 2 || m != 1 {
		t.Errorf("after another run: %d jobs, %d uploads; want 2 and 1 (base-2 not planned again)", n, m)
	}
	if j := h.jobFor("acme/math", "org/base-2"); j.Status != state.Superseded {
		t.Errorf("base-2 job after another run = %+v", j)
	}
}

// The defect: base-2's job is converting when base-3 is found. base-3's
// job must not run beside it (same target), and base-2's migration must not
// be pushed once base-3 is known: it is superseded before its push, and
// base-3's migration is what the target ends on.
func TestOlderBaseNeverPushedOverNewerOnSharedTarget(t *testing.T) {
	h := newHarness(t, sharedTargetTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/math", "main", adapterFiles(8))
	h.runOnce()
	h.hub.commit("org/base-2", "main", baseFiles("v2"))

	entered, release := make(chan struct{}), make(chan struct{})
	h.conv.onConvert = func(req ConvertRequest) {
		if req.NewBaseRepo == "org/base-2" {
			close(entered)
			<-release
		}
	}
	d := h.daemon(false)
	ran := runOnceInBackground(d)
	<-entered
	c3 := h.hub.commit("org/base-3", "main", baseFiles("v3"))
	if rep := d.pollTrack(context.Background(), "t"); len(rep.NewJobs) != 1 {
		t.Errorf("poll during base-2's conversion: %+v", rep)
	}
	// Either base-3's job ran beside base-2's (the defect) or the dispatcher
	// held it back: only then let base-2's conversion finish.
	eventually(t, "base-3's job done or held back", func() bool {
		return strings.Contains(h.logs.String(), "job held back") || h.jobFor("acme/math", "org/base-3").Status == state.Done
	})
	close(release)
	if err := <-ran; err != nil {
		t.Fatal(err)
	}

	if got := h.targetBase(sharedTarget); got.Repo != "org/base-3" || got.Commit != c3 {
		t.Errorf("%s holds the migration to %+v, want org/base-3@%s", sharedTarget, got, c3)
	}
	if j := h.jobFor("acme/math", "org/base-2"); j.Status != state.Superseded || !strings.Contains(j.LastError, "org/base-3@"+c3[:12]) {
		t.Errorf("base-2 job = %+v, want superseded by org/base-3", j)
	}
	if j := h.jobFor("acme/math", "org/base-3"); j.Status != state.Done {
		t.Errorf("base-3 job = %+v, want done", j)
	}
	if n := h.hub.uploadCount(); n != 1 {
		t.Errorf("%d uploads, want 1 (base-2's migration is never pushed)", n)
	}
}

// Two tracks whose drop-in dirs each hold an adapter folder "math" push to
// one repo (a collision only the run can see: config validation refuses it
// for listed adapters): nothing orders their bases, so neither supersedes
// the other, but their jobs never run at once and both pushes land, one
// after the other.
func TestJobsOfOneTargetNeverRunAtOnce(t *testing.T) {
	root := t.TempDir()
	dirA, dirB := filepath.Join(root, "a"), filepath.Join(root, "b")
	h := newHarness(t, `
tracks:
  - name: a
    base: {repo: org/a}
    follow: {commits: true}
    dropin_dirs: [`+dirA+`]
    target: {repo_template: "{adapter}-shared", owner: acme}
  - name: b
    base: {repo: org/b}
    follow: {commits: true}
    dropin_dirs: [`+dirB+`]
    target: {repo_template: "{adapter}-shared", owner: acme}
`)
	writeAdapterDir(t, filepath.Join(dirA, "math"), adapterFiles(8))
	writeAdapterDir(t, filepath.Join(dirB, "math"), adapterFiles(8))
	h.hub.commit("org/a", "main", baseFiles("a0"))
	h.hub.commit("org/b", "main", baseFiles("b0"))
	h.runOnce()
	h.hub.commit("org/a", "main", baseFiles("a1"))
	h.hub.commit("org/b", "main", baseFiles("b1"))

	var mu sync.Mutex
	converting, most, calls := 0, 0, 0
	entered, release := make(chan struct{}), make(chan struct{})
	h.conv.onConvert = func(ConvertRequest) {
		mu.Lock()
		converting++
		most = max(most, converting)
		calls++
		first := calls == 1
		mu.Unlock()
		if first { // the first conversion waits for the test
			close(entered)
			<-release
		}
		mu.Lock()
		converting--
		mu.Unlock()
	}
	d := h.daemon(false)
	ran := runOnceInBackground(d)
	<-entered
	eventually(t, "the other job done or held back", func() bool {
		if strings.Contains(h.logs.String(), "job held back") {
			return true
		}
		for _, j := range h.jobs() {
			if j.Status == state.Done {
				return true
			}
		}
		return false
	})
	close(release)
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	if most != 1 {
		t.Errorf("%d conversions for one target ran at once, want 1", most)
	}
	for _, j := range h.jobs() {
		if j.Status != state.Done {
			t.Errorf("job %s = %s, want done", j.Key, j.Status)
		}
	}
	if n := h.hub.uploadCount(); n != 2 {
		t.Errorf("%d uploads, want 2", n)
	}
}

// stallingConverter converts like the fake, except to base repo stall,
// where it waits for its context to end.
type stallingConverter struct {
	*fakeConverter
	stall   string
	entered chan struct{}
}

func (c *stallingConverter) Convert(ctx context.Context, req ConvertRequest) (ConvertResult, error) {
	if req.NewBaseRepo != c.stall {
		return c.fakeConverter.Convert(ctx, req)
	}
	close(c.entered)
	<-ctx.Done()
	return ConvertResult{}, ctx.Err()
}

// A job converting for an older base when a newer base's job for its
// target is planned is stopped at once: it could no longer push, and the
// newer job waits for the target. Here the older conversion would never end
// by itself.
func TestRunningOlderJobStoppedForNewerBaseOnSharedTarget(t *testing.T) {
	h := newHarness(t, sharedTargetTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/math", "main", adapterFiles(8))
	h.runOnce()
	h.hub.commit("org/base-2", "main", baseFiles("v2"))
	conv := &stallingConverter{fakeConverter: h.conv, stall: "org/base-2", entered: make(chan struct{})}
	h.realConv = conv
	d := h.daemon(false)
	ran := runOnceInBackground(d)
	<-conv.entered
	c3 := h.hub.commit("org/base-3", "main", baseFiles("v3"))
	if rep := d.pollTrack(context.Background(), "t"); len(rep.NewJobs) != 1 {
		t.Errorf("poll during base-2's conversion: %+v", rep)
	}
	eventually(t, "base-3's job done", func() bool { return h.jobFor("acme/math", "org/base-3").Status == state.Done })
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	if j := h.jobFor("acme/math", "org/base-2"); j.Status != state.Superseded || j.Attempts != 0 ||
		!strings.Contains(j.LastError, "superseded by org/base-3@"+c3[:12]) {
		t.Errorf("base-2 job = %+v, want superseded by org/base-3 (no attempt counted)", j)
	}
	if got := h.targetBase(sharedTarget); got.Repo != "org/base-3" || got.Commit != c3 {
		t.Errorf("%s holds the migration to %+v, want org/base-3@%s", sharedTarget, got, c3)
	}
	if n := h.hub.uploadCount(); n != 1 {
		t.Errorf("%d uploads, want 1", n)
	}
}
