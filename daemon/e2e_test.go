package daemon

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/peft"
	"github.com/lorasync/lorasync/convert/safetensors"
	"github.com/lorasync/lorasync/convert/synth"
	"github.com/lorasync/lorasync/daemon/state"
	"github.com/lorasync/lorasync/hub/hubtest"
)

// The tests in this file run the daemon end to end against hubtest (the
// protocol-faithful fake Hub, over loopback, through hub.Client) with the real
// converter (convert.Convert) on generated models: the acceptance scenarios
// of the daemon, with nothing faked but the Hub's host.

// e2eModels writes an old base, an upgraded base (wider, deeper, GQA) and an
// adapter trained on the old one, and returns their directories' files.
type e2eModels struct {
	old, new, adapter map[string][]byte
	newCfg            *arch.Config
}

func makeModels(t *testing.T) e2eModels {
	t.Helper()
	dir := t.TempDir()
	old, err := synth.Random(synth.Spec{ModelType: "qwen2", Hidden: 32, Layers: 3, Heads: 4, Intermediate: 48, Vocab: 500, DType: safetensors.BF16}, 21)
	if err != nil {
		t.Fatal(err)
	}
	nw, _, err := synth.Upgrade(old, synth.UpgradeSpec{Hidden: 48, Layers: 4, KVHeads: 2, Intermediate: 64, ExtraVocab: 30, Seed: 22})
	if err != nil {
		t.Fatal(err)
	}
	for name, m := range map[string]*synth.Model{"old": old, "new": nw} {
		if err := m.Write(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := synth.WriteAdapter(filepath.Join(dir, "adapter"), old.Config, "org/base", synth.AdapterSpec{R: 4, Seed: 23}); err != nil {
		t.Fatal(err)
	}
	return e2eModels{dirFiles(t, filepath.Join(dir, "old")), dirFiles(t, filepath.Join(dir, "new")), dirFiles(t, filepath.Join(dir, "adapter")), nw.Config}
}

// pushedAdapter downloads repo@main from the fake Hub's store and checks it
// is a PEFT adapter for newCfg with a card and a provenance naming newCommit.
func pushedAdapter(t *testing.T, srv *hubtest.Server, repo, newRepo, newCommit string, newCfg *arch.Config) {
	t.Helper()
	dir := t.TempDir()
	files, err := srv.Files(repo, "main")
	if err != nil {
		t.Fatalf("%s: %v", repo, err)
	}
	for _, f := range files {
		data, err := srv.File(repo, "main", f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a, err := peft.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Check(newCfg); err != nil {
		t.Fatalf("pushed adapter does not fit the new base: %v", err)
	}
	if a.Config.BaseModel != newRepo || a.Config.Revision != newCommit {
		t.Errorf("pushed adapter names %s@%s, want %s@%s", a.Config.BaseModel, a.Config.Revision, newRepo, newCommit)
	}
	card, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil || !strings.Contains(string(card), "base_model: "+newRepo) {
		t.Errorf("model card: %v\n%s", err, card)
	}
	data, err := os.ReadFile(filepath.Join(dir, ProvenanceFile))
	if err != nil {
		t.Fatal(err)
	}
	if p := readProvenance(t, data); p.NewBase.Commit != newCommit || p.NewBase.Repo != newRepo {
		t.Errorf("provenance names %+v", p.NewBase)
	}
}

func commitCount(t *testing.T, srv *hubtest.Server, repo string) int {
	t.Helper()
	cs, err := srv.Commits(repo, "main")
	if err != nil {
		t.Fatal(err)
	}
	return len(cs)
}

// A new commit on the tracked revision is migrated and pushed with card and
// provenance; a later pass with nothing new pushes nothing.
func TestE2ENewCommitOnTrackedRevision(t *testing.T) {
	h, srv := hubtestBed(t, oneAdapterTrack)
	h.realConv = LoRASuite{Logger: slog.New(slog.DiscardHandler)}
	m := makeModels(t)
	seed(t, srv, "org/base", m.old)
	seed(t, srv, "acme/math", m.adapter)
	h.runOnce()
	if n := len(h.jobs()); n != 0 {
		t.Fatalf("the baseline poll created %d jobs", n)
	}
	commit := seed(t, srv, "org/base", m.new) // same repo, new commit: the upgrade
	h.runOnce()
	j := h.job("acme/math")
	if j.Status != state.Done {
		t.Fatalf("job %+v", j)
	}
	pushedAdapter(t, srv, j.OutputRepo, "org/base", commit, m.newCfg)
	before := commitCount(t, srv, j.OutputRepo)
	h.runOnce()
	if after := commitCount(t, srv, j.OutputRepo); after != before {
		t.Fatalf("a pass with nothing new pushed: %d -> %d commits", before, after)
	}
}

// A Hub outage (503s from the real HTTP stack) fails the job, which is
// retried after its backoff and then succeeds, with exactly one push.
func TestE2EHubOutageRetried(t *testing.T) {
	h, srv := hubtestBed(t, oneAdapterTrack)
	h.realConv = LoRASuite{Logger: slog.New(slog.DiscardHandler)}
	m := makeModels(t)
	seed(t, srv, "org/base", m.old)
	seed(t, srv, "acme/math", m.adapter)
	h.runOnce()
	commit := seed(t, srv, "org/base", m.new)
	// The outage: the next download from the Hub answers 503 (the client here
	// does no retries of its own, so the daemon sees it).
	srv.Inject(hubtest.Fault{PathPrefix: "/org/base/resolve/", Status: 503, Times: 1})
	h.runOnce()
	j := h.job("acme/math")
	if j.Status != state.Failed || j.Attempts != 1 || !strings.Contains(j.LastError, "503") {
		t.Fatalf("during the outage: %+v", j)
	}
	h.clock.Advance(time.Hour)
	h.runOnce()
	j = h.job("acme/math")
	if j.Status != state.Done || j.Attempts != 2 {
		t.Fatalf("after the outage: %+v", j)
	}
	pushedAdapter(t, srv, j.OutputRepo, "org/base", commit, m.newCfg)
	if n := commitCount(t, srv, j.OutputRepo); n != 2 { // the repo's initial commit + one push
		t.Fatalf("%s has %d commits, want the initial one and one push", j.OutputRepo, n)
	}
}

// An adapter folder dropped into a drop-in directory registers itself and is
// migrated when the base moves.
func TestE2EDropinAdapter(t *testing.T) {
	h, srv := hubtestBed(t, `
tracks:
  - name: t
    base: {repo: org/base}
    follow: {commits: true}
    dropin_dirs: [dropin]
    target: {repo_template: "{adapter}-{base_name}", owner: acme}
`)
	h.realConv = LoRASuite{Logger: slog.New(slog.DiscardHandler)}
	m := makeModels(t)
	seed(t, srv, "org/base", m.old)
	writeAdapterDir(t, filepath.Join(h.dir, "dropin", "support-bot"), m.adapter)
	h.runOnce()
	commit := seed(t, srv, "org/base", m.new)
	h.runOnce()
	j := h.job("support-bot")
	if j.Status != state.Done || j.OutputRepo != "acme/support-bot-base" {
		t.Fatalf("drop-in job %+v", j)
	}
	pushedAdapter(t, srv, j.OutputRepo, "org/base", commit, m.newCfg)
}

// A Hub adapter published only as a pickle (adapter_model.bin) is parked
// with the converter's refusal, as a local one is, not with a "no such file"
// for the safetensors weights the download skipped.
func TestE2EPickleOnlyHubAdapterParkedWithClearError(t *testing.T) {
	h, srv := hubtestBed(t, oneAdapterTrack)
	m := makeModels(t)
	seed(t, srv, "org/base", m.old)
	seed(t, srv, "acme/math", map[string][]byte{
		adapterConfigFile:   m.adapter[adapterConfigFile],
		"adapter_model.bin": []byte("not unpickled, ever"),
	})
	h.runOnce()
	seed(t, srv, "org/base", m.new)
	h.runOnce()
	j := h.job("acme/math")
	if j.Status != state.Parked || !strings.Contains(j.LastError, "pickle") {
		t.Fatalf("job %+v, want parked with the pickle refusal", j)
	}
}
