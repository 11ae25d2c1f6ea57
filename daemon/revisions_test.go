package daemon

// Adapter sources that change: a new commit on a Hub adapter's branch or new
// content in a local adapter directory is migrated again (one new job, one new
// push); the same content is not; a waiting job for an older adapter revision
// is superseded; and jobs written before job keys carried the adapter revision
// keep their meaning.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lorasync/lorasync/daemon/state"
)

// jobsFor returns the jobs whose adapter id contains adapter, oldest first.
func (h *harness) jobsFor(adapter string) []state.Job {
	h.t.Helper()
	var out []state.Job
	for _, j := range h.jobs() {
		if strings.Contains(j.Key.Adapter, adapter) {
			out = append(out, j)
		}
	}
	return out
}

func TestHubAdapterNewCommitMigratedAgain(t *testing.T) {
	h := newHarness(t, oneAdapterTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	a1 := h.hub.commit("acme/math", "main", adapterFiles(8))
	h.runOnce()
	c1 := h.hub.commit("org/base", "main", baseFiles("v1"))
	h.runOnce()
	if j := h.job("acme/math"); j.Status != state.Done || j.AdapterCommit != a1 || h.hub.uploadCount() != 1 {
		t.Fatalf("first migration: %+v, uploads %d", j, h.hub.uploadCount())
	}

	// The team pushes a retrained adapter (still on the old base).
	retrained := adapterFiles(8)
	retrained[adapterWeightsFile] = []byte(strings.Repeat("retrained", 16))
	a2 := h.hub.commit("acme/math", "main", retrained)
	h.clock.Advance(time.Hour)
	h.runOnce()
	jobs := h.jobsFor("acme/math")
	if len(jobs) != 2 {
		t.Fatalf("after the adapter's new commit: %d jobs, want 2: %+v", len(jobs), jobs)
	}
	j := jobs[1]
	if j.Status != state.Done || j.AdapterCommit != a2 || j.Key.AdapterRev != a2 || j.Key.BaseCommit != c1 {
		t.Fatalf("re-migration job = %+v", j)
	}
	if n := h.hub.uploadCount(); n != 2 {
		t.Fatalf("%d uploads, want 2", n)
	}
	prov, _ := h.hub.file("acme/math-base", "main", ProvenanceFile)
	if p := readProvenance(t, prov); p.Adapter.Commit != a2 || p.NewBase.Commit != c1 {
		t.Errorf("provenance names adapter %s and base %s, want %s and %s", p.Adapter.Commit, p.NewBase.Commit, a2, c1)
	}
	if msg := h.hub.uploads[1].Message; !strings.Contains(msg, a2) {
		t.Errorf("commit message does not name the adapter commit %s:\n%s", a2, msg)
	}
	w, _ := h.hub.file("acme/math-base", "main", adapterWeightsFile)
	if string(w) != string(retrained[adapterWeightsFile]) {
		t.Error("the target does not hold the retrained adapter's migration")
	}

	// Nothing changed since: no job, no conversion, no push.
	convs := h.conv.count()
	h.clock.Advance(time.Hour)
	h.runOnce()
	if len(h.jobsFor("acme/math")) != 2 || h.conv.count() != convs || h.hub.uploadCount() != 2 {
		t.Errorf("a pass with nothing new did work: jobs %d, conversions %d, uploads %d", len(h.jobsFor("acme/math")), h.conv.count()-convs, h.hub.uploadCount())
	}

	// The team resets the branch to the first commit: its migration goes
	// back on the target (its job runs once more), and only once.
	h.hub.mu.Lock()
	h.hub.repos["acme/math"].branches["main"] = a1
	h.hub.mu.Unlock()
	h.clock.Advance(time.Hour)
	h.runOnce()
	h.clock.Advance(time.Hour)
	h.runOnce()
	prov, _ = h.hub.file("acme/math-base", "main", ProvenanceFile)
	if p := readProvenance(t, prov); p.Adapter.Commit != a1 || h.hub.uploadCount() != 3 || len(h.jobsFor("acme/math")) != 2 {
		t.Errorf("after the reset: target holds adapter %s, %d uploads, %d jobs; want %s, 3, 2", p.Adapter.Commit, h.hub.uploadCount(), len(h.jobsFor("acme/math")), a1)
	}
}

func TestLocalAdapterContentChangeMigratedAgain(t *testing.T) {
	adapter := filepath.Join(t.TempDir(), "adapters", "math")
	h, _ := localAdapterHarness(t, adapter)
	h.runOnce()
	first := h.job("math")
	if first.Status != state.Done || !strings.HasPrefix(first.AdapterCommit, "sha256:") || h.hub.uploadCount() != 1 {
		t.Fatalf("first migration: %+v, uploads %d", first, h.hub.uploadCount())
	}

	// Rewriting the same bytes (a new mtime, same content) is no change.
	writeAdapterDir(t, adapter, adapterFiles(8))
	h.clock.Advance(time.Hour)
	later := time.Now().Add(time.Minute)
	os.Chtimes(filepath.Join(adapter, adapterWeightsFile), later, later)
	h.runOnce()
	if n := len(h.jobsFor("math")); n != 1 || h.hub.uploadCount() != 1 {
		t.Fatalf("same content: %d jobs, %d uploads; want 1, 1", n, h.hub.uploadCount())
	}

	// New weights: one new job and one new push, naming the new content.
	writeAdapterDir(t, adapter, map[string][]byte{adapterWeightsFile: []byte(strings.Repeat("retrained", 16))})
	h.clock.Advance(time.Hour)
	h.runOnce()
	jobs := h.jobsFor("math")
	if len(jobs) != 2 || h.hub.uploadCount() != 2 {
		t.Fatalf("new content: %d jobs, %d uploads; want 2, 2: %+v", len(jobs), h.hub.uploadCount(), jobs)
	}
	j := jobs[1]
	if j.Status != state.Done || j.AdapterCommit == first.AdapterCommit || j.Key.AdapterRev != j.AdapterCommit {
		t.Fatalf("re-migration job = %+v", j)
	}
	prov, _ := h.hub.file("acme/math-base", "main", ProvenanceFile)
	if p := readProvenance(t, prov); p.Adapter.Commit != j.AdapterCommit {
		t.Errorf("provenance names adapter %s, want %s", p.Adapter.Commit, j.AdapterCommit)
	}
	h.runOnce()
	if len(h.jobsFor("math")) != 2 || h.hub.uploadCount() != 2 {
		t.Error("a pass with nothing new did work")
	}
}

// A new commit that leaves the adapter's files as they were (a model card
// edit) makes a job that neither converts nor pushes; the next real change
// does both.
func TestHubAdapterCommitWithSameFilesPushesNothing(t *testing.T) {
	h := hubAdapterHarness(t)
	h.runOnce()
	first := h.job("acme/math")
	if first.Status != state.Done || first.AdapterContent == "" || h.hub.uploadCount() != 1 {
		t.Fatalf("first migration: %+v", first)
	}
	convs, baseSnaps := h.conv.count(), h.hub.count("Snapshot")

	card := h.hub.commit("acme/math", "main", map[string][]byte{"README.md": []byte("# math, now with a card")})
	h.clock.Advance(time.Hour)
	h.runOnce()
	jobs := h.jobsFor("acme/math")
	if len(jobs) != 2 {
		t.Fatalf("jobs %+v", jobs)
	}
	j := jobs[1]
	if j.Status != state.Done || j.Key.AdapterRev != card || j.AdapterContent != first.AdapterContent ||
		j.OutputCommit != first.OutputCommit || !strings.Contains(j.Summary, "unchanged") {
		t.Fatalf("card-only commit: %+v", j)
	}
	if h.conv.count() != convs || h.hub.uploadCount() != 1 || h.hub.count("Snapshot") != baseSnaps+1 {
		t.Errorf("card-only commit: %d conversions, %d uploads, %d snapshots (want 0, 1, only the adapter's)",
			h.conv.count()-convs, h.hub.uploadCount(), h.hub.count("Snapshot")-baseSnaps)
	}

	h.hub.commit("acme/math", "main", adapterFiles(4))
	h.clock.Advance(time.Hour)
	h.runOnce()
	if n := len(h.jobsFor("acme/math")); n != 3 || h.conv.count() != convs+1 || h.hub.uploadCount() != 2 {
		t.Errorf("real change: %d jobs, %d conversions, %d uploads; want 3, 1, 2", n, h.conv.count()-convs, h.hub.uploadCount())
	}
}

// A job waiting for a retry is superseded when the adapter gets a newer
// commit: only the newer adapter's migration is pushed.
func TestWaitingJobSupersededByNewAdapterRevision(t *testing.T) {
	h := newHarness(t, oneAdapterTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	a1 := h.hub.commit("acme/math", "main", adapterFiles(8))
	h.runOnce()
	h.hub.commit("org/base", "main", baseFiles("v1"))
	h.hub.failNext("Upload", 1)
	h.runOnce()
	if j := h.job("acme/math"); j.Status != state.Failed {
		t.Fatalf("want a failed job waiting for its retry: %+v", j)
	}
	a2 := h.hub.commit("acme/math", "main", adapterFiles(4))
	h.clock.Advance(time.Hour)
	h.runOnce()
	byRev := map[string]state.Job{}
	for _, j := range h.jobsFor("acme/math") {
		byRev[j.AdapterCommit] = j
	}
	if j := byRev[a1]; j.Status != state.Superseded || !strings.Contains(j.LastError, a2[:12]) {
		t.Errorf("job for adapter %s = %+v", a1, j)
	}
	if j := byRev[a2]; j.Status != state.Done {
		t.Errorf("job for adapter %s = %+v", a2, j)
	}
	if n := h.hub.uploadCount(); n != 1 || !strings.Contains(h.hub.uploads[0].Message, a2) {
		t.Fatalf("%d uploads; want exactly the migration of adapter %s", n, a2)
	}
}

// Jobs stored before keys carried the adapter revision (AdapterRev "") keep
// their meaning after an upgrade: a finished one is not run again, parked and
// failed ones stay as they are, and only a real change of the adapter makes a
// new job.
func TestJobsWithoutAdapterRevisionKeepWorking(t *testing.T) {
	h := newHarness(t, `
tracks:
  - name: t
    base: {repo: org/base}
    follow: {commits: true}
    adapters: [{repo: acme/a1}, {repo: acme/a2}, {repo: acme/a3}]
    target: {repo_template: "{adapter}-{base_name}"}
`)
	c0 := h.hub.commit("org/base", "main", baseFiles("v0"))
	c1 := h.hub.commit("org/base", "main", baseFiles("v1"))
	revs := map[string]string{}
	for _, a := range []string{"acme/a1", "acme/a2", "acme/a3"} {
		revs[a] = h.hub.commit(a, "main", adapterFiles(8))
	}
	// The state an older lorasync left: base moved c0 -> c1; a1 migrated,
	// a2 parked, a3 failed and due for a retry.
	st, err := state.Open(filepath.Join(h.dir, "state"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	legacy := func(a string, s state.Status, attempts int) state.Job {
		return state.Job{Key: state.JobKey{Track: "t", Adapter: "hub:" + a + "@main", BaseRepo: "org/base", BaseCommit: c1},
			Status: s, Attempts: attempts, AdapterCommit: revs[a], OldBaseRepo: "org/base", OldBaseCommit: c0,
			LastError: map[state.Status]string{state.Parked: "a broken adapter", state.Failed: "503"}[s], Created: t0, Updated: t0}
	}
	err = st.Update(func(tx *state.Tx) error {
		ts := state.TrackState{Track: "t", BaseRepo: "org/base", BaseRevision: "main", BaselineCommit: c0,
			Heads:    map[string]state.RepoHead{"org/base": {Commit: c1, Seen: t0}},
			Versions: []state.Version{{Repo: "org/base", Commit: c1, Found: t0, Why: "commit"}}}
		done := legacy("acme/a1", state.Done, 1)
		done.OutputRepo, done.OutputRevision, done.OutputCommit = "acme/a1-base", "main", "feedface"
		for _, err := range []error{tx.PutTrack(ts), tx.PutJob(done), tx.PutJob(legacy("acme/a2", state.Parked, 3)), tx.PutJob(legacy("acme/a3", state.Failed, 1))} {
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	h.runOnce()
	if n := len(h.jobs()); n != 3 {
		t.Fatalf("the upgraded daemon planned new jobs for unchanged adapters: %+v", h.jobs())
	}
	if j := h.job("acme/a1"); j.Status != state.Done || j.OutputCommit != "feedface" {
		t.Errorf("finished job: %+v", j)
	}
	if j := h.job("acme/a2"); j.Status != state.Parked || j.Attempts != 3 {
		t.Errorf("parked job: %+v", j)
	}
	if j := h.job("acme/a3"); j.Status != state.Done || j.Attempts != 2 || j.AdapterCommit != revs["acme/a3"] {
		t.Errorf("failed job, retried: %+v", j)
	}
	if n := h.hub.uploadCount(); n != 1 {
		t.Errorf("%d uploads, want 1 (the retried a3)", n)
	}

	// Now a1 changes: exactly one new job, for the new commit.
	a1v2 := h.hub.commit("acme/a1", "main", adapterFiles(4))
	h.runOnce()
	jobs := h.jobsFor("acme/a1")
	if len(jobs) != 2 || jobs[1].Key.AdapterRev != a1v2 || jobs[1].Status != state.Done || len(h.jobs()) != 4 {
		t.Fatalf("after a1 changed: %+v", h.jobs())
	}
}

// A local adapter whose files change between planning and running is not
// migrated under the old revision: that job is superseded and the new
// content's job, planned at once, migrates it.
func TestLocalAdapterChangedAfterPlanning(t *testing.T) {
	adapter := filepath.Join(t.TempDir(), "math")
	h, _ := localAdapterHarness(t, adapter)
	d := h.daemon(false)
	ctx := context.Background()
	if rep := d.pollTrack(ctx, "t"); len(rep.NewJobs) != 1 {
		t.Fatalf("poll: %+v", rep)
	}
	planned := h.job("math")
	writeAdapterDir(t, adapter, adapterFiles(4))
	d.drainOnce(ctx)
	d.workers.Wait()
	jobs := h.jobsFor("math")
	if len(jobs) != 2 {
		t.Fatalf("jobs = %+v", jobs)
	}
	for _, j := range jobs {
		switch j.Key.AdapterRev {
		case planned.Key.AdapterRev:
			if j.Status != state.Superseded || !strings.Contains(j.LastError, "changed since the job was planned") {
				t.Errorf("job for the planned content = %+v", j)
			}
		default:
			if j.Status != state.Done || j.AdapterCommit != j.Key.AdapterRev {
				t.Errorf("job for the new content = %+v", j)
			}
		}
	}
	if n := h.hub.uploadCount(); n != 1 {
		t.Fatalf("%d uploads, want 1", n)
	}
	ac, _ := h.hub.file("acme/math-base", "main", adapterConfigFile)
	if !strings.Contains(string(ac), `"r":4`) {
		t.Errorf("pushed %s, want the new content (r=4)", ac)
	}
}

// A new adapter commit recorded while a job converts stops that job before
// its push: an older adapter's migration never lands on a newer one's.
func TestRunningJobSupersededByNewAdapterRevision(t *testing.T) {
	h := newHarness(t, oneAdapterTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	a1 := h.hub.commit("acme/math", "main", adapterFiles(8))
	h.runOnce()
	h.hub.commit("org/base", "main", baseFiles("v1"))
	d := h.daemon(false)
	var a2 string
	h.conv.onConvert = func(req ConvertRequest) {
		if req.AdapterCommit != a1 || a2 != "" {
			return
		}
		a2 = h.hub.commit("acme/math", "main", adapterFiles(4))
		if rep := d.pollTrack(context.Background(), "t"); len(rep.NewJobs) != 1 {
			t.Errorf("poll during the conversion: %+v", rep)
		}
	}
	if _, err := d.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	byRev := map[string]state.Job{}
	for _, j := range h.jobsFor("acme/math") {
		byRev[j.Key.AdapterRev] = j
	}
	if j := byRev[a1]; j.Status != state.Superseded || !strings.Contains(j.LastError, "adapter revision "+a2[:12]) {
		t.Errorf("job for %s = %+v", a1, j)
	}
	if j := byRev[a2]; j.Status != state.Done {
		t.Errorf("job for %s = %+v", a2, j)
	}
	if n := h.hub.uploadCount(); n != 1 || !strings.Contains(h.hub.uploads[0].Message, a2) {
		t.Errorf("%d uploads; want exactly the migration of %s", n, a2)
	}
}

// A local adapter is often links: a "current" link to the directory of the
// latest training run, weights linked from a download cache. Its revision
// is the content the converter reads through them: the directory behind a
// linked path is hashed, a linked file counts with its target's bytes, and
// pointing a link at new weights is a new revision (the memo sees it too).
func TestLocalAdapterRevisionFollowsLinkedFiles(t *testing.T) {
	root := t.TempDir()
	runs := filepath.Join(root, "runs")
	for i, w := range []string{"weights-1", "weights-2"} {
		if err := os.MkdirAll(filepath.Join(runs, fmt.Sprint(i)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(runs, fmt.Sprint(i), "w.safetensors"), []byte(w), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(root, "adapter")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, adapterConfigFile), []byte(`{"r":8}`), 0o644); err != nil {
		t.Fatal(err)
	}
	weights := filepath.Join(dir, adapterWeightsFile)
	point := func(i int) {
		t.Helper()
		_ = os.Remove(weights)
		if err := os.Symlink(filepath.Join(runs, fmt.Sprint(i), "w.safetensors"), weights); err != nil {
			t.Fatal(err)
		}
	}
	current := filepath.Join(root, "current")
	if err := os.Symlink(dir, current); err != nil {
		t.Fatal(err)
	}
	memo := newRevMemo()
	point(0)
	first, err := hashDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if viaLink, err := hashDir(current); err != nil || viaLink != first {
		t.Errorf("through the linked directory: %q, %v; want %q", viaLink, err, first)
	}
	if m, err := memo.rev(current); err != nil || m != first {
		t.Errorf("memo through the linked directory: %q, %v; want %q", m, err, first)
	}
	point(1)
	second, err := hashDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Fatal("the weights link points at other weights, and the revision is the same")
	}
	if m, err := memo.rev(current); err != nil || m != second {
		t.Errorf("memo after the link moved: %q, %v; want %q", m, err, second)
	}
	// The hash covers the bytes read through the link: a copy of the same
	// files in a plain directory has the same revision.
	plain := filepath.Join(root, "plain")
	if err := os.MkdirAll(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{adapterConfigFile: `{"r":8}`, adapterWeightsFile: "weights-2"} {
		if err := os.WriteFile(filepath.Join(plain, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := hashDir(plain); err != nil || p != second {
		t.Errorf("plain copy: %q, %v; want %q", p, err, second)
	}
}
