package daemon

// Failures: Hub outages, retries and parking, malformed adapters, a full
// disk, and versions overtaken by newer ones.

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lorasync/lorasync/daemon/state"
)

func TestHubOutageRetriedThenSucceeds(t *testing.T) {
	h := hubAdapterHarness(t)
	h.hub.failNext("Snapshot", 2)

	h.runOnce()
	j := h.job("acme/math")
	// backoff_base 1m, jitter 0.5 of the upper half: 45 s after attempt 1.
	if j.Status != state.Failed || j.Attempts != 1 || !strings.Contains(j.LastError, "503") || !j.NextAttempt.Equal(h.clock.Now().Add(45*time.Second)) {
		t.Fatalf("after attempt 1: %+v", j)
	}
	// Not due yet: a run now does not retry.
	h.runOnce()
	if j2 := h.job("acme/math"); j2.Attempts != 1 {
		t.Fatalf("retried before its backoff: %+v", j2)
	}
	h.clock.Advance(45 * time.Second)
	h.runOnce()
	j = h.job("acme/math")
	// Attempt 2 failed: 2m nominal, 1m30s with the fixed jitter.
	if j.Status != state.Failed || j.Attempts != 2 || !j.NextAttempt.Equal(h.clock.Now().Add(90*time.Second)) {
		t.Fatalf("after attempt 2: %+v", j)
	}
	h.clock.Advance(90 * time.Second)
	h.runOnce()
	j = h.job("acme/math")
	if j.Status != state.Done || j.Attempts != 3 || j.LastError != "" || h.hub.uploadCount() != 1 {
		t.Fatalf("after attempt 3: %+v, uploads %d", j, h.hub.uploadCount())
	}
}

func TestParkedAfterMaxAttempts(t *testing.T) {
	h := hubAdapterHarness(t)
	h.hub.failNext("Upload", 1000)
	for range 3 { // retry.max_attempts
		h.runOnce()
		h.clock.Advance(time.Hour)
	}
	j := h.job("acme/math")
	if j.Status != state.Parked || j.Attempts != 3 || !strings.Contains(j.LastError, "push to acme/math-base@main") {
		t.Fatalf("job = %+v", j)
	}
	calls := h.hub.count("Upload")
	h.runOnce()
	if h.hub.count("Upload") != calls {
		t.Error("a parked job ran again")
	}
}

func TestMalformedAdapterParksWhileOthersSucceed(t *testing.T) {
	h := newHarness(t, `
tracks:
  - name: t
    base: {repo: org/base}
    follow: {commits: true}
    adapters: [{repo: acme/a1}, {repo: acme/bad}, {repo: acme/a2}]
    target: {repo_template: "{adapter}-{base_name}"}
`)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/a1", "main", adapterFiles(8))
	bad := adapterFiles(8)
	bad[adapterConfigFile] = []byte(`{"r": 8, "target_modules": [`)
	h.hub.commit("acme/bad", "main", bad)
	h.hub.commit("acme/a2", "main", adapterFiles(4))
	h.runOnce()
	h.hub.commit("org/base", "main", baseFiles("v1"))
	h.runOnce()

	for _, name := range []string{"acme/a1", "acme/a2"} {
		if j := h.job(name); j.Status != state.Done {
			t.Errorf("%s: %+v", name, j)
		}
	}
	j := h.job("acme/bad")
	// Permanent: parked at the first attempt, the error names the adapter
	// and the file.
	if j.Status != state.Parked || j.Attempts != 1 || !strings.Contains(j.LastError, "hub:acme/bad@main") || !strings.Contains(j.LastError, "malformed adapter_config.json") {
		t.Errorf("bad adapter job = %+v", j)
	}
	if n := h.hub.uploadCount(); n != 2 {
		t.Errorf("%d uploads, want 2", n)
	}
}

func TestFreeDiskCheckedBeforeDownload(t *testing.T) {
	h := newHarness(t, oneAdapterTrack)
	h.writeConfig(oneAdapterTrack, "min_free_disk: 1KiB", "min_free_disk: 4096TiB")
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/math", "main", adapterFiles(8))
	h.runOnce()
	h.hub.commit("org/base", "main", baseFiles("v1"))
	h.runOnce()
	j := h.job("acme/math")
	if j.Status != state.Failed || !strings.Contains(j.LastError, "below min_free_disk") || !strings.Contains(j.LastError, filepath.Join(h.dir, "cache")) {
		t.Fatalf("job = %+v", j)
	}
	if n := h.hub.count("Snapshot"); n != 0 {
		t.Errorf("%d downloads despite the disk check", n)
	}
}

// A job waiting for a retry is superseded when a newer commit of the same
// base arrives: only the newer migration is pushed.
func TestWaitingJobSupersededByNewerCommit(t *testing.T) {
	h := newHarness(t, oneAdapterTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/math", "main", adapterFiles(8))
	h.runOnce()
	c1 := h.hub.commit("org/base", "main", baseFiles("v1"))
	h.hub.failNext("Upload", 1)
	h.runOnce()
	c2 := h.hub.commit("org/base", "main", baseFiles("v2"))
	h.clock.Advance(time.Hour)
	h.runOnce()

	byCommit := map[string]state.Job{}
	for _, j := range h.jobs() {
		byCommit[j.Key.BaseCommit] = j
	}
	if j := byCommit[c1]; j.Status != state.Superseded || !strings.Contains(j.LastError, "superseded by org/base@") {
		t.Errorf("c1 job = %+v", j)
	}
	if j := byCommit[c2]; j.Status != state.Done {
		t.Errorf("c2 job = %+v", j)
	}
	if n := h.hub.uploadCount(); n != 1 {
		t.Fatalf("%d uploads, want 1 (c2 only)", n)
	}
	prov, _ := h.hub.file("acme/math-base", "main", ProvenanceFile)
	if p := readProvenance(t, prov); p.NewBase.Commit != c2 {
		t.Errorf("target holds the migration to %s, want %s", p.NewBase.Commit, c2)
	}
}

// A newer commit recorded while a job converts stops that job before its
// push, so an older migration never lands on top of a newer one.
func TestRunningJobSupersededBeforePush(t *testing.T) {
	h := newHarness(t, oneAdapterTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/math", "main", adapterFiles(8))
	h.runOnce()
	c1 := h.hub.commit("org/base", "main", baseFiles("v1"))
	d := h.daemon(false)
	var c2 string
	h.conv.onConvert = func(req ConvertRequest) {
		if req.NewBaseCommit != c1 || c2 != "" {
			return
		}
		c2 = h.hub.commit("org/base", "main", baseFiles("v2"))
		if rep := d.pollTrack(context.Background(), "t"); len(rep.NewVersions) != 1 {
			t.Errorf("poll during the conversion: %+v", rep)
		}
	}
	if _, err := d.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	byCommit := map[string]state.Job{}
	for _, j := range h.jobs() {
		byCommit[j.Key.BaseCommit] = j
	}
	if j := byCommit[c1]; j.Status != state.Superseded {
		t.Errorf("c1 job = %+v", j)
	}
	if j := byCommit[c2]; j.Status != state.Done {
		t.Errorf("c2 job = %+v", j)
	}
	if n := h.hub.uploadCount(); n != 1 || h.hub.uploads[0].Message == "" || !strings.Contains(h.hub.uploads[0].Message, c2) {
		t.Errorf("%d uploads; want exactly the c2 migration", n)
	}
}

// A local adapter with only pickle weights (adapter_model.bin) is parked
// with the converter's own refusal, which says why and what to do: the check
// for unchanged content, which runs first, parked it with a bare "no such
// file" for adapter_model.safetensors.
func TestPickleOnlyLocalAdapterParkedWithClearError(t *testing.T) {
	adapter := filepath.Join(t.TempDir(), "math")
	h, _ := localAdapterHarness(t, adapter)
	if err := os.Rename(filepath.Join(adapter, adapterWeightsFile), filepath.Join(adapter, "adapter_model.bin")); err != nil {
		t.Fatal(err)
	}
	cfg := `{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}`
	if err := os.WriteFile(filepath.Join(adapter, adapterConfigFile), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	h.runOnce()
	js := h.jobs()
	if len(js) != 1 || js[0].Status != state.Parked || !strings.Contains(js[0].LastError, "pickle") {
		t.Fatalf("jobs: %+v, want one parked with the pickle refusal", js)
	}
}
