package hub

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestLiveHub runs the read path against a real Hub when HUB_LIVE=1
// (endpoint and token from the usual HF_* variables; repo from
// HUB_LIVE_REPO, default a tiny public test model). It is skipped otherwise:
// CI has no network, and the fake Hub covers the same behaviour.
func TestLiveHub(t *testing.T) {
	if os.Getenv("HUB_LIVE") != "1" {
		t.Skip("set HUB_LIVE=1 to run against a real Hub")
	}
	repo := os.Getenv("HUB_LIVE_REPO")
	if repo == "" {
		repo = "hf-internal-testing/tiny-random-gpt2"
	}
	o, err := OptionsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	o.CacheDir = filepath.Join(t.TempDir(), "hub")
	o.Progress = ProgressOff
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	info, err := c.RepoInfo(ctx, repo, "main")
	if err != nil {
		t.Fatal(err)
	}
	if !IsCommit(info.SHA) || len(info.Siblings) == 0 {
		t.Fatalf("repo info %+v", info)
	}
	dir, err := c.Snapshot(ctx, repo, "main", SnapshotOptions{Include: []string{"*.json"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
		t.Error(err)
	}
	if _, err := c.DownloadFile(ctx, repo, "main", "no-such-file.bin"); !errors.Is(err, ErrEntryNotFound) {
		t.Errorf("missing file: %v, want ErrEntryNotFound", err)
	}
	if _, err := c.RepoInfo(ctx, "lorasync-nonexistent/nothing-here", ""); !errors.Is(err, ErrRepoNotFound) {
		t.Errorf("missing repo: %v, want ErrRepoNotFound", err)
	}
	n := 0
	for _, err := range c.ListCommits(ctx, repo, "main", 3) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n == 0 {
		t.Error("no commits listed")
	}
}
