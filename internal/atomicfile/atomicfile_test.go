package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileReplacesWithMode(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "refs", "main")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, content := range []string{"first", "second"} {
		if err := WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != content {
			t.Fatalf("read %q, %v; want %q", got, err, content)
		}
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, %v; want 0644", st.Mode(), err)
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Fatalf("temp files left: %v", entries)
	}
}

func TestWriteFileFailureLeavesTargetAlone(t *testing.T) {
	dir := t.TempDir()
	if err := WriteFile(filepath.Join(dir, "missing", "f"), []byte("x"), 0o644); err == nil {
		t.Fatal("a write into a missing directory succeeded")
	}
	// A directory in the way: the rename fails, nothing is left behind.
	p := filepath.Join(dir, "taken")
	if err := os.MkdirAll(filepath.Join(p, "child"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("x"), 0o644); err == nil {
		t.Fatal("replacing a non-empty directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temp files left: %v", entries)
	}
}

// TestWriteFileViaKeepsTempOutOfTarget checks that the temp file is made in
// tmpDir, complete before the rename, and removed when the write fails,
// leaving the target as it was.
func TestWriteFileViaKeepsTempOutOfTarget(t *testing.T) {
	root := t.TempDir()
	refs := filepath.Join(root, "refs")
	if err := os.MkdirAll(refs, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(refs, "main")
	if err := WriteFileVia(root, p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	var seen string
	testHookBeforeRename = func(tmp string) error {
		seen = tmp
		if b, err := os.ReadFile(tmp); err != nil || string(b) != "new" {
			t.Errorf("temp file before the rename: %q, %v", b, err)
		}
		return errors.New("simulated crash")
	}
	defer func() { testHookBeforeRename = nil }()
	if err := WriteFileVia(root, p, []byte("new"), 0o644); err == nil {
		t.Fatal("write succeeded despite the failed rename")
	}
	if filepath.Dir(seen) != root {
		t.Errorf("temp file %s, want it in %s", seen, root)
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Errorf("target = %q after a failed write, want old", b)
	}
	for _, d := range []string{root, refs} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if e.Name() != "refs" && e.Name() != "main" {
				t.Errorf("%s holds %s after a failed write", d, e.Name())
			}
		}
	}
}
