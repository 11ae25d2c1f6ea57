package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lorasync/lorasync/daemon"
	"github.com/lorasync/lorasync/daemon/state"
)

// cacheBed is a daemon's config, state and cache_dir: org/base's baseline
// c0 and versions c1, c2 downloaded (one blob each, in the huggingface_hub
// layout, refs/main naming c2), and two pair entries in the converter's
// cache, an old one and a recent one.
type cacheBed struct {
	cfg, cache, stateDir string
	commits              []string
	pairs                []string // oldest first
}

func newCacheBed(t *testing.T) *cacheBed {
	t.Helper()
	dir := t.TempDir()
	b := &cacheBed{cfg: filepath.Join(dir, "config.yaml"), cache: filepath.Join(dir, "cache"), stateDir: filepath.Join(dir, "state")}
	if err := os.WriteFile(b.cfg, []byte(`
state_dir: state
cache_dir: cache
listen: ""
tracks:
  - name: t
    base: {repo: org/base}
    follow: {commits: true}
    adapters: [{repo: acme/math}]
    target: {repo_template: "{adapter}-{base_name}"}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(b.cache, "hub", "models--org--base")
	for i := range 3 {
		c, etag := strings.Repeat(fmt.Sprint(i), 40), strings.Repeat(fmt.Sprint(i+5), 40)
		b.commits = append(b.commits, c)
		mustWrite(t, filepath.Join(repo, "blobs", etag), strings.Repeat("w", 1000*(i+1)))
		if err := os.MkdirAll(filepath.Join(repo, "snapshots", c), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../../blobs/"+etag, filepath.Join(repo, "snapshots", c, "model.safetensors")); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(t, filepath.Join(repo, "refs", "main"), b.commits[2])
	for i, age := range []time.Duration{48 * time.Hour, time.Hour} {
		key := strings.Repeat(fmt.Sprint(i+1), 64)
		p := filepath.Join(b.cache, "convert", "pairs", key+".pair.safetensors")
		mustWrite(t, p, strings.Repeat("p", 100))
		used := time.Now().Add(-age)
		if err := os.Chtimes(p, used, used); err != nil {
			t.Fatal(err)
		}
		b.pairs = append(b.pairs, key)
	}
	s, err := state.Open(b.stateDir, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *state.Tx) error {
		return tx.PutTrack(state.TrackState{Track: "t", BaseRepo: "org/base", BaseRevision: "main", BaselineCommit: b.commits[0],
			Versions: []state.Version{{Repo: "org/base", Commit: b.commits[1]}, {Repo: "org/base", Commit: b.commits[2]}}})
	}); err != nil {
		t.Fatal(err)
	}
	return b
}

func mustWrite(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// cache status says what is kept and why; cache prune (dry, then for real)
// removes the superseded version's snapshot and blob and the least recently
// used pair beyond --max-size, and nothing else.
func TestCacheStatusAndPrune(t *testing.T) {
	b := newCacheBed(t)
	out, err := runCLI(t, "cache", "status", "--config", b.cfg, "--cache-dir", "", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st daemon.CacheStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(st.Hub.Repos) != 1 || len(st.Hub.Repos[0].Snapshots) != 3 || len(st.Convert.Entries) != 2 {
		t.Fatalf("status: %s", out)
	}
	for i, want := range []string{"baseline", "", "latest version"} {
		if s := st.Hub.Repos[0].Snapshots[i]; s.Needed != want || s.Bytes != int64(1000*(i+1)) {
			t.Errorf("snapshot %d: %+v, want kept for %q", i, s, want)
		}
	}
	out, err = runCLI(t, "cache", "status", "--config", b.cfg, "--cache-dir", "", "--json=false")
	if err != nil || !strings.Contains(out, "prune removes it") || !strings.Contains(out, "pair analyses  2") {
		t.Fatalf("status text: %v\n%s", err, out)
	}

	repo := filepath.Join(b.cache, "hub", "models--org--base")
	out, err = runCLI(t, "cache", "prune", "--config", b.cfg, "--cache-dir", "", "--max-size", "150", "--dry-run", "--json=false")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "would remove snapshot org/base@"+b.commits[1][:12]) || !strings.Contains(out, "would remove pair "+b.pairs[0][:12]) {
		t.Fatalf("dry run:\n%s", out)
	}
	if !exists(filepath.Join(repo, "snapshots", b.commits[1])) || !exists(filepath.Join(b.cache, "convert", "pairs", b.pairs[0]+".pair.safetensors")) {
		t.Fatal("the dry run removed something")
	}
	out, err = runCLI(t, "cache", "prune", "--config", b.cfg, "--cache-dir", "", "--max-size", "150", "--dry-run=false", "--json=false")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "removed snapshot org/base@"+b.commits[1][:12]) {
		t.Fatalf("prune:\n%s", out)
	}
	for i, want := range []bool{true, false, true} {
		if got := exists(filepath.Join(repo, "snapshots", b.commits[i])); got != want {
			t.Errorf("snapshot %d present %v, want %v", i, got, want)
		}
		if got := exists(filepath.Join(repo, "blobs", strings.Repeat(fmt.Sprint(i+5), 40))); got != want {
			t.Errorf("blob of snapshot %d present %v, want %v", i, got, want)
		}
	}
	for i, want := range []bool{false, true} {
		if got := exists(filepath.Join(b.cache, "convert", "pairs", b.pairs[i]+".pair.safetensors")); got != want {
			t.Errorf("pair %d present %v, want %v", i, got, want)
		}
	}
}

// While a daemon owns the state directory, prune leaves the base snapshots
// to it and prunes the converter's cache only; with --cache-dir alone there
// is no state, so no snapshot is judged.
func TestCachePruneWhileDaemonRuns(t *testing.T) {
	b := newCacheBed(t)
	owner, err := state.AcquireOwner(b.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Release()
	out, err := runCLI(t, "cache", "prune", "--config", b.cfg, "--cache-dir", "", "--max-size", "0", "--dry-run=false", "--json=false")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "base snapshots left alone") || strings.Contains(out, "removed snapshot") {
		t.Fatalf("prune while the daemon runs:\n%s", out)
	}
	for _, c := range b.commits {
		if !exists(filepath.Join(b.cache, "hub", "models--org--base", "snapshots", c)) {
			t.Fatalf("snapshot %s removed under a running daemon", c[:8])
		}
	}
	if exists(filepath.Join(b.cache, "convert", "pairs", b.pairs[1]+".pair.safetensors")) {
		t.Fatal("--max-size 0 kept a pair nobody uses")
	}
	out, err = runCLI(t, "cache", "status", "--config", "", "--cache-dir", b.cache, "--json=false")
	if err != nil || !strings.Contains(out, "? (give --config)") {
		t.Fatalf("status without a config: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "cache", "status", "--config", "", "--cache-dir", ""); err == nil {
		t.Fatal("status without --config or --cache-dir")
	}
}

// Before the daemon has downloaded anything its cache_dir does not exist:
// status shows an empty cache and prune has nothing to do (they said
// "not a directory"), and neither makes the directory. A file in its place
// is an error naming it.
func TestCacheCommandsOnAMissingCacheDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	out, err := runCLI(t, "cache", "status", "--config", "", "--cache-dir", dir, "--json=false")
	if err != nil || !strings.Contains(out, "0 snapshots") {
		t.Fatalf("status of a missing cache_dir: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "cache", "prune", "--config", "", "--cache-dir", dir, "--max-size", "0", "--dry-run=false", "--json=false"); err != nil {
		t.Fatalf("prune of a missing cache_dir: %v", err)
	}
	if exists(dir) {
		t.Error("the commands made the cache_dir")
	}
	mustWrite(t, dir, "not a dir")
	if _, err := runCLI(t, "cache", "status", "--config", "", "--cache-dir", dir, "--json=false"); err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("a file as cache_dir: %v", err)
	}
}

// What a killed collection left (here a blob no snapshot links) is freed by
// the next prune, and the report says so although no snapshot went.
func TestCachePruneReportsLeftovers(t *testing.T) {
	b := newCacheBed(t)
	leftover := filepath.Join(b.cache, "hub", "models--org--base", "blobs", strings.Repeat("a", 40))
	mustWrite(t, leftover, strings.Repeat("x", 3000))
	// Only the superseded version's snapshot may go: keep it with a pending job.
	s, err := state.Open(b.stateDir, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *state.Tx) error {
		return tx.PutJob(state.Job{Key: state.JobKey{Track: "t", Adapter: "hub:acme/math@main", BaseRepo: "org/base", BaseCommit: b.commits[1]},
			Status: state.Pending, OldBaseRepo: "org/base", OldBaseCommit: b.commits[0]})
	}); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "cache", "prune", "--config", b.cfg, "--cache-dir", "", "--max-size", "", "--dry-run=false", "--json=false")
	if err != nil {
		t.Fatal(err)
	}
	if exists(leftover) || !strings.Contains(out, "base snapshots: 3000B freed") {
		t.Fatalf("leftover present %v; prune said:\n%s", exists(leftover), out)
	}
}
