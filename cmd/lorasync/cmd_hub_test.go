package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/hub/hubtest"
)

// TestHubUploadDownload uploads a directory with `lorasync hub upload`,
// fetches part of it back with `lorasync hub download`, and compares.
func TestHubUploadDownload(t *testing.T) {
	srv := hubtest.NewTB(t)
	srv.AddToken("hf_cmdtest", "alice")
	home := t.TempDir()
	t.Setenv("HF_ENDPOINT", srv.URL+"/")
	t.Setenv("HF_TOKEN", "hf_cmdtest")
	t.Setenv("HF_HOME", home)
	t.Setenv("HF_HUB_CACHE", "")
	t.Setenv("HF_HUB_OFFLINE", "")

	src := t.TempDir()
	files := map[string]string{
		"adapter_config.json":       `{"r": 4}`,
		"nested/notes.txt":          "hello",
		".git/config":               "must not be uploaded",
		"adapter_model.safetensors": strings.Repeat("w", 1000),
	}
	for p, content := range files {
		full := filepath.Join(src, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := runCLI(t, "hub", "upload", "alice/adapter", src, "--message", "first", "--private")
	if err != nil {
		t.Fatal(err)
	}
	head, _ := srv.Head("alice/adapter", "main")
	if strings.TrimSpace(out) != srv.URL+"/alice/adapter/commit/"+head {
		t.Errorf("upload printed %q, want the commit URL of %s", out, head)
	}
	got, _ := srv.Files("alice/adapter", "main")
	if strings.Join(got, ",") != ".gitattributes,adapter_config.json,adapter_model.safetensors,nested/notes.txt" {
		t.Errorf("repo files: %v", got)
	}

	out, err = runCLI(t, "hub", "download", "alice/adapter@main", "--include", "*.json", "--include", "nested/")
	if err != nil {
		t.Fatal(err)
	}
	dir := strings.TrimSpace(out)
	if dir != filepath.Join(home, "hub", "models--alice--adapter", "snapshots", head) {
		t.Errorf("download printed %q", dir)
	}
	for _, p := range []string{"adapter_config.json", "nested/notes.txt"} {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || string(b) != files[p] {
			t.Errorf("%s: %q, %v", p, b, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "adapter_model.safetensors")); !os.IsNotExist(err) {
		t.Errorf("excluded file was downloaded (%v)", err)
	}

	out, err = runCLI(t, "hub", "upload", "alice/adapter", src, "--pr", "--message", "again", "--branch", "main")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 {
		t.Errorf("unchanged upload printed %q, want just the head URL (no PR for no changes)", out)
	}
}
