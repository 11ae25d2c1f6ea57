package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lorasync/lorasync/daemon/state"
)

const oneAdapterTrack = `
tracks:
  - name: t
    base: {repo: org/base}
    follow: {commits: true}
    adapters: [{repo: acme/math}]
    target: {repo_template: "{adapter}-{base_name}"}
`

// dropinTrack follows org/base's commits with the drop-in dir "dropin"
// (relative to the harness dir) and pushes to migrated/{adapter}-{base_name}.
const dropinTrack = `
tracks:
  - name: t
    base: {repo: org/base}
    follow: {commits: true}
    dropin_dirs: [dropin]
    target: {repo_template: "{adapter}-{base_name}", owner: migrated}
`

func TestNewCommitMigratedAndPushedOnce(t *testing.T) {
	h := newHarness(t, oneAdapterTrack)
	c0 := h.hub.commit("org/base", "main", baseFiles("v0"))
	adapterCommit := h.hub.commit("acme/math", "main", adapterFiles(8))

	// First pass: the head is the baseline the adapter was trained on.
	rep := h.runOnce()
	if rep.Tracks[0].Baseline != c0 || len(rep.Tracks[0].NewVersions) != 0 || len(h.jobs()) != 0 {
		t.Fatalf("first pass: %+v, jobs %+v", rep.Tracks[0], h.jobs())
	}

	c1 := h.hub.commit("org/base", "main", baseFiles("v1"))
	h.clock.Advance(time.Hour)
	rep = h.runOnce()
	if len(rep.Tracks[0].NewVersions) != 1 || rep.Tracks[0].NewVersions[0].Commit != c1 {
		t.Fatalf("second pass found %+v, want org/base@%s", rep.Tracks[0].NewVersions, c1)
	}
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	j := h.job("acme/math")
	if j.Status != state.Done || j.OutputRepo != "acme/math-base" || j.OutputCommit == "" || j.Reconciled {
		t.Fatalf("job = %+v", j)
	}
	if j.OldBaseCommit != c0 || j.Key.BaseCommit != c1 || j.AdapterCommit != adapterCommit {
		t.Errorf("job versions = old %s new %s adapter %s", j.OldBaseCommit, j.Key.BaseCommit, j.AdapterCommit)
	}
	if n := h.hub.uploadCount(); n != 1 {
		t.Fatalf("%d uploads, want 1", n)
	}
	// What landed on the Hub: the adapter, a card and the provenance.
	prov, ok := h.hub.file("acme/math-base", "main", ProvenanceFile)
	if !ok {
		t.Fatal("no lorasync.json on the target")
	}
	p := readProvenance(t, prov)
	if p.NewBase != (RepoCommit{"org/base", c1}) || p.OldBase != (RepoCommit{"org/base", c0}) || p.Adapter.Commit != adapterCommit || p.Adapter.ID != "hub:acme/math@main" {
		t.Errorf("provenance = %+v", p)
	}
	card, _ := h.hub.file("acme/math-base", "main", "README.md")
	if !strings.Contains(string(card), "base_model: org/base") || !strings.Contains(string(card), c1) {
		t.Errorf("card:\n%s", card)
	}
	acRaw, _ := h.hub.file("acme/math-base", "main", adapterConfigFile)
	var ac map[string]any
	json.Unmarshal(acRaw, &ac)
	if ac["revision"] != c1 {
		t.Errorf("pushed adapter_config revision = %v, want %s", ac["revision"], c1)
	}

	// Nothing new: no job, no push, no conversion.
	h.clock.Advance(time.Hour)
	convs := h.conv.count()
	rep = h.runOnce()
	if len(rep.Tracks[0].NewVersions) != 0 || len(rep.Jobs) != 0 || h.hub.uploadCount() != 1 || h.conv.count() != convs {
		t.Errorf("third pass did work: %+v, uploads %d", rep, h.hub.uploadCount())
	}
}

func TestNothingNewNoPush(t *testing.T) {
	h := newHarness(t, oneAdapterTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/math", "main", adapterFiles(8))
	for range 3 {
		h.runOnce()
		h.clock.Advance(time.Hour)
	}
	if n := h.hub.uploadCount(); n != 0 || len(h.jobs()) != 0 || h.hub.count("Snapshot") != 0 {
		t.Errorf("uploads %d, jobs %d, snapshots %d: want none", n, len(h.jobs()), h.hub.count("Snapshot"))
	}
}

func TestSuccessorRepoMigrated(t *testing.T) {
	h := newHarness(t, `
tracks:
  - name: t
    base: {repo: org/base}
    follow: {successors: [org/base-2, org/base-3]}
    adapters: [{repo: acme/math}]
    target: {repo_template: "{adapter}-{base_name}"}
`)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/math", "main", adapterFiles(8))
	h.runOnce()
	if len(h.jobs()) != 0 {
		t.Fatalf("no successor exists yet, but jobs %+v", h.jobs())
	}
	// base-3 appears before base-2: it is migrated; base-2 is not skipped
	// forever — it is migrated when it appears.
	c3 := h.hub.commit("org/base-3", "main", baseFiles("v3"))
	h.runOnce()
	j := h.job("acme/math")
	if j.Status != state.Done || j.Key.BaseRepo != "org/base-3" || j.Key.BaseCommit != c3 || j.OutputRepo != "acme/math-base-3" {
		t.Fatalf("job = %+v", j)
	}
	h.hub.commit("org/base-2", "main", baseFiles("v2"))
	h.runOnce()
	if n := h.hub.uploadCount(); n != 2 {
		t.Fatalf("%d uploads, want 2 (base-3, then base-2)", n)
	}
	if _, ok := h.hub.file("acme/math-base-2", "main", ProvenanceFile); !ok {
		t.Error("base-2 target missing")
	}
	// A successor's new commit is not followed unless follow.commits.
	h.hub.commit("org/base-3", "main", baseFiles("v3.1"))
	h.runOnce()
	if n := h.hub.uploadCount(); n != 2 {
		t.Errorf("%d uploads after a successor commit without follow.commits, want 2", n)
	}
}

func TestCrashBetweenPushAndRecordReconciles(t *testing.T) {
	for _, target := range []string{`{repo_template: "{adapter}-{base_name}"}`, `{branch: "lorasync/{base_name}"}`, `{pr: true}`} {
		t.Run(target, func(t *testing.T) {
			h := newHarness(t, strings.Replace(oneAdapterTrack, `{repo_template: "{adapter}-{base_name}"}`, target, 1))
			h.hub.commit("org/base", "main", baseFiles("v0"))
			h.hub.commit("acme/math", "main", adapterFiles(8))
			h.runOnce()
			h.hub.commit("org/base", "main", baseFiles("v1"))

			// The process "dies" right after the push: nothing is recorded.
			h.hook = func(state.JobKey) bool { return true }
			h.runOnce()
			j := h.job("acme/math")
			if j.Status != state.Running || h.hub.uploadCount() != 1 {
				t.Fatalf("after the crash: job %s, %d uploads; want running, 1", j.Status, h.hub.uploadCount())
			}
			pushed := h.hub.uploads[0]

			// Restart: the job resumes, finds its provenance, records it.
			h.hook = nil
			snapshots := h.hub.count("Snapshot")
			h.runOnce()
			j = h.job("acme/math")
			if j.Status != state.Done || !j.Reconciled || j.OutputCommit == "" {
				t.Fatalf("after restart: %+v", j)
			}
			if n := h.hub.uploadCount(); n != 1 {
				t.Fatalf("%d uploads after restart, want 1 (no duplicate push)", n)
			}
			if h.hub.count("Snapshot") != snapshots {
				t.Error("reconcile downloaded models it did not need")
			}
			if j.OutputRepo != pushed.Repo {
				t.Errorf("recorded %s, pushed to %s", j.OutputRepo, pushed.Repo)
			}
			if pushed.CreatePR && j.PullRequest != "refs/pr/1" {
				t.Errorf("pull request = %q, want refs/pr/1", j.PullRequest)
			}
		})
	}
}

// A provenance file for a different adapter revision or base commit is
// not a match: the migration is pushed.
func TestReconcileIgnoresOtherMigrations(t *testing.T) {
	h := newHarness(t, oneAdapterTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/math", "main", adapterFiles(8))
	h.runOnce()
	c1 := h.hub.commit("org/base", "main", baseFiles("v1"))
	stale, _ := json.Marshal(Provenance{Tool: "lorasync", Adapter: ProvenanceAdapter{ID: "hub:acme/math@main", Commit: "0000"}, NewBase: RepoCommit{"org/base", c1}})
	h.hub.commit("acme/math-base", "main", map[string][]byte{ProvenanceFile: stale})
	h.runOnce()
	j := h.job("acme/math")
	if j.Status != state.Done || j.Reconciled || h.hub.uploadCount() != 1 {
		t.Fatalf("job %+v, uploads %d: want a real push", j, h.hub.uploadCount())
	}
}

func TestDropinAdapterRegisteredAndMigrated(t *testing.T) {
	h := newHarness(t, dropinTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	dropin := filepath.Join(h.dir, "dropin")
	writeAdapterDir(t, filepath.Join(dropin, "support-bot"), adapterFiles(8))
	// Not adapters: a folder without weights (still copying), and a file.
	writeAdapterDir(t, filepath.Join(dropin, "half-copied"), map[string][]byte{adapterConfigFile: adapterFiles(8)[adapterConfigFile]})
	os.WriteFile(filepath.Join(dropin, "notes.txt"), []byte("hi"), 0o644)
	h.runOnce()
	c1 := h.hub.commit("org/base", "main", baseFiles("v1"))
	h.runOnce()
	jobs := h.jobs()
	if len(jobs) != 1 {
		t.Fatalf("jobs = %+v, want only support-bot", jobs)
	}
	j := jobs[0]
	if j.Status != state.Done || j.OutputRepo != "migrated/support-bot-base" || !strings.HasPrefix(j.AdapterCommit, "sha256:") {
		t.Fatalf("job = %+v", j)
	}
	// A folder dropped later registers and migrates to the current version.
	writeAdapterDir(t, filepath.Join(dropin, "late"), adapterFiles(4))
	h.runOnce()
	j = h.job("late")
	if j.Status != state.Done || j.Key.BaseCommit != c1 {
		t.Fatalf("late drop-in job = %+v", j)
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	h := newHarness(t, oneAdapterTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/math", "main", adapterFiles(8))

	// Before any real run: no state dir is created.
	rep, err := h.daemon(true).RunOnce(context.Background())
	if err != nil || !rep.DryRun || rep.Tracks[0].Baseline == "" {
		t.Fatalf("dry run: %+v, %v", rep, err)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "state")); !os.IsNotExist(err) {
		t.Fatalf("dry run created the state dir: %v", err)
	}
	h.runOnce()
	c1 := h.hub.commit("org/base", "main", baseFiles("v1"))
	rep, err = h.daemon(true).RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tr := rep.Tracks[0]
	if len(tr.NewVersions) != 1 || tr.NewVersions[0].Commit != c1 || len(tr.NewJobs) != 1 || len(tr.Runnable) != 1 {
		t.Fatalf("plan = %+v", tr)
	}
	if len(h.jobs()) != 0 || h.hub.uploadCount() != 0 || h.conv.count() != 0 {
		t.Fatal("the dry run ran something")
	}
	// The real run still sees the version as new.
	if rep := h.runOnce(); len(rep.Tracks[0].NewVersions) != 1 {
		t.Errorf("after a dry run the real run found %+v", rep.Tracks[0].NewVersions)
	}
}

// Adapters of the same base pair never convert concurrently, so the
// converter's pair analysis is computed once and shared.
func TestPairAnalysisSerialisedPerPair(t *testing.T) {
	h := newHarness(t, `
tracks:
  - name: t
    base: {repo: org/base}
    follow: {commits: true}
    adapters: [{repo: acme/a1}, {repo: acme/a2}, {repo: acme/a3}, {repo: acme/a4}]
    target: {repo_template: "{adapter}-{base_name}"}
`)
	h.writeConfig(`
tracks:
  - name: t
    base: {repo: org/base}
    follow: {commits: true}
    adapters: [{repo: acme/a1}, {repo: acme/a2}, {repo: acme/a3}, {repo: acme/a4}]
    target: {repo_template: "{adapter}-{base_name}"}
`, "concurrency: 2", "concurrency: 4")
	h.hub.commit("org/base", "main", baseFiles("v0"))
	for _, a := range []string{"acme/a1", "acme/a2", "acme/a3", "acme/a4"} {
		h.hub.commit(a, "main", adapterFiles(8))
	}
	h.runOnce()
	h.hub.commit("org/base", "main", baseFiles("v1"))
	h.conv.delay = 20 * time.Millisecond // widen the window for overlap
	h.runOnce()
	if h.conv.count() != 4 || h.hub.uploadCount() != 4 {
		t.Fatalf("converted %d, pushed %d; want 4, 4", h.conv.count(), h.hub.uploadCount())
	}
	if h.conv.maxPerPair != 1 {
		t.Errorf("%d conversions of one pair ran at once, want 1", h.conv.maxPerPair)
	}
}

// An adapter whose config says it was trained on the successor itself is
// refused for that migration (parked, saying why) rather than migrated as if
// its weights fit the old base; an adapter of the old base is migrated.
func TestAdapterTrainedOnTheNewBaseNotMigrated(t *testing.T) {
	h := newHarness(t, `
tracks:
  - name: t
    base: {repo: org/base}
    follow: {successors: [org/base-2]}
    adapters: [{repo: acme/math}, {repo: acme/chat}]
    target: {repo_template: "{adapter}-{base_name}"}
`)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/math", "main", adapterFiles(8)) // trained on org/base
	retrained := adapterFiles(8)
	retrained[adapterConfigFile] = bytes.Replace(retrained[adapterConfigFile], []byte(`"org/base"`), []byte(`"org/base-2"`), 1)
	h.hub.commit("acme/chat", "main", retrained)
	h.runOnce()
	h.hub.commit("org/base-2", "main", baseFiles("v2"))
	h.runOnce()
	if j := h.job("acme/math"); j.Status != state.Done {
		t.Errorf("old-base adapter: %+v", j)
	}
	j := h.job("acme/chat")
	if j.Status != state.Parked || !strings.Contains(j.LastError, `base_model_name_or_path "org/base-2", the new base itself`) {
		t.Fatalf("adapter trained on the new base: %+v", j)
	}
	if n := h.hub.uploadCount(); n != 1 {
		t.Errorf("%d uploads, want 1", n)
	}
}
