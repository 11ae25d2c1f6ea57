package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lorasync/lorasync/daemon"
	"github.com/lorasync/lorasync/daemon/state"
	"github.com/lorasync/lorasync/hub/hubtest"
)

func TestCheckCommand(t *testing.T) {
	t.Setenv("HF_TOKEN", "hf_secret_value")
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	out, err := runCLI(t, "check", "--config", "../../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"config ", ": OK", "token from environment HF_TOKEN", "track qwen-small: base Qwen/Qwen1.5-1.8B@main", "target: a pull request"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hf_secret_value") {
		t.Error("check printed the token")
	}
	_, err = runCLI(t, "check", "--config", "../../daemon/config/testdata/bad-adapter-repo.bad.yaml")
	if err == nil || !strings.Contains(err.Error(), "tracks[1].adapters[0].repo") {
		t.Errorf("check of a bad config: %v", err)
	}
}

func TestStatusCommand(t *testing.T) {
	dir := t.TempDir()
	s, err := state.Open(dir, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	s.Update(func(tx *state.Tx) error {
		tx.PutTrack(state.TrackState{Track: "qwen", BaseRepo: "Qwen/a", BaseRevision: "main", BaselineCommit: "c0", LastPoll: now})
		tx.PutJob(state.Job{Key: state.JobKey{Track: "qwen", Adapter: "hub:acme/x@main", BaseRepo: "Qwen/b", BaseCommit: "c1"},
			Status: state.Parked, Attempts: 1, LastError: "adapter hub:acme/x@main: malformed adapter_config.json", Created: now})
		tx.PutJob(state.Job{Key: state.JobKey{Track: "qwen", Adapter: "hub:acme/z@main", BaseRepo: "Qwen/b", BaseCommit: "c1"},
			Status: state.Orphaned, LastError: "adapter removed from track qwen", Created: now})
		return tx.PutJob(state.Job{Key: state.JobKey{Track: "qwen", Adapter: "hub:acme/y@main", BaseRepo: "Qwen/b", BaseCommit: "c1"},
			Status: state.Done, Attempts: 1, OutputRepo: "acme/y-b", OutputRevision: "main", OutputCommit: "abc", Created: now})
	})
	out, err := runCLI(t, "status", "--state-dir", dir, "--json=false", "--config", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"track qwen: base Qwen/a@main", "1 parked, 1 done, 0 superseded, 1 orphaned", "malformed adapter_config.json", "acme/y-b@main abc", "adapter removed from track qwen"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, "status", "--state-dir", dir, "--json", "--config", "")
	if err != nil {
		t.Fatal(err)
	}
	var snap state.Snapshot
	if err := json.Unmarshal([]byte(out), &snap); err != nil || len(snap.Jobs) != 3 || snap.Counts[state.Parked] != 1 || snap.Counts[state.Orphaned] != 1 {
		t.Errorf("status --json: %v\n%s", err, out)
	}
	// retry requeues the parked job by a substring of its description.
	out, err = runCLI(t, "retry", "--state-dir", dir, "--all=false", "--config", "", "acme/x")
	if err != nil || !strings.Contains(out, "1 jobs requeued") {
		t.Fatalf("retry: %v\n%s", err, out)
	}
	out, _ = runCLI(t, "status", "--state-dir", dir, "--json=false", "--config", "")
	if !strings.Contains(out, "1 pending, 0 failed, 0 parked, 1 done") {
		t.Errorf("status after retry:\n%s", out)
	}
	if _, err := runCLI(t, "retry", "--state-dir", dir, "--all", "--config", "", "x"); err == nil {
		t.Error("retry with both --all and MATCH succeeded")
	}

	// No database: a clear error, and nothing is created.
	empty := t.TempDir()
	if _, err := runCLI(t, "status", "--state-dir", empty, "--json=false", "--config", ""); err == nil || !strings.Contains(err.Error(), "no database") {
		t.Errorf("status of an empty dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(empty, state.FileName)); !os.IsNotExist(err) {
		t.Error("status created a database")
	}
}

// `run` drives the real Hub client: against hubtest, a dry run reports the
// baseline and plans nothing, and writes no state; a real run records it.
func TestRunCommandAgainstHubtest(t *testing.T) {
	srv := hubtest.NewTB(t)
	srv.AddToken("hf_cmdrun", "acme", "org")
	if err := srv.CreateRepo("org/base", false); err != nil {
		t.Fatal(err)
	}
	c0, err := srv.Commit("org/base", "main", map[string][]byte{"config.json": []byte(`{}`)}, "seed")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfg, []byte(`
hub: {endpoint: "`+srv.URL+`"}
state_dir: state
cache_dir: cache
listen: ""
log: {format: json, level: warn}
tracks:
  - name: t
    base: {repo: org/base}
    follow: {commits: true}
    adapters: [{repo: acme/math}]
    target: {repo_template: "{adapter}-{base_name}"}
`), 0o644)
	t.Setenv("HF_TOKEN", "hf_cmdrun")
	t.Setenv("CREDENTIALS_DIRECTORY", "")

	out, err := runCLI(t, "run", "--config", cfg, "--dry-run", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		DryRun bool `json:"dry_run"`
		Tracks []struct {
			Baseline string `json:"baseline"`
		} `json:"tracks"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.DryRun || len(rep.Tracks) != 1 || rep.Tracks[0].Baseline != c0 {
		t.Fatalf("dry run report: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); !os.IsNotExist(err) {
		t.Fatal("a dry run created state")
	}
	out, err = runCLI(t, "run", "--config", cfg, "--dry-run=false", "--json=false")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "track t: baseline "+c0[:12]) {
		t.Errorf("run output:\n%s", out)
	}
	out, err = runCLI(t, "status", "--config", cfg, "--state-dir", "", "--json=false")
	if err != nil || !strings.Contains(out, "baseline "+c0[:12]) {
		t.Errorf("status after run: %v\n%s", err, out)
	}
}

// TestPrintReport checks that a run's report shows what did not stop the
// poll (warnings) and why a job was set aside.
func TestPrintReport(t *testing.T) {
	key := state.JobKey{Track: "qwen", Adapter: "hub:acme/z@main", BaseRepo: "Qwen/b", BaseCommit: "c1"}
	rep := &daemon.Report{
		Tracks: []daemon.TrackReport{{Track: "qwen", Baseline: "c0", Warnings: []string{"drop-in dir /srv/adapters: permission denied"},
			Superseded: []daemon.SupersededJob{{Key: key, Why: "superseded by Qwen/c@c2: a newer base"}}}},
		Jobs: []state.Job{{Key: key, Status: state.Orphaned, LastError: "adapter removed from track qwen"}},
	}
	var b strings.Builder
	printReport(&b, rep)
	for _, want := range []string{"warning: drop-in dir /srv/adapters: permission denied", "orphaned: adapter removed from track qwen",
		"superseded: " + key.String() + " (superseded by Qwen/c@c2: a newer base)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
