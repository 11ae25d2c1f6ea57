package convert

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lorasync/lorasync/convert/synth"
)

// localModel writes a directory with the files identify hashes (and one it
// does not) and returns it.
func localModel(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "model")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"config.json": `{"model_type": "llama"}`, "model.safetensors": "weights", "README.md": "not hashed",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// forgeIdentity replaces the identity stored for dir with id, keeping the
// stamps: what identify then returns shows whether it trusted the cache.
func forgeIdentity(t *testing.T, cache, id string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(cache, "ids", "*.json"))
	if len(files) != 1 {
		t.Fatalf("identity cache holds %v, want one file", files)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var st dirStamp
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	st.ID = id
	if err := saveIdentity(files[0], &st); err != nil {
		t.Fatal(err)
	}
}

func TestIdentifyCachesLocalHashes(t *testing.T) {
	dir := localModel(t)
	cache := t.TempDir()
	sum, err := hashFiles(dir, func(n string) bool { return n != "README.md" })
	if err != nil {
		t.Fatal(err)
	}
	want := "sha256:" + sum
	if id, err := identify(dir, cache); err != nil || id != want {
		t.Fatalf("first identify = %q, %v; want %q", id, err, want)
	}
	// Unchanged files: the stored identity is used without rehashing (a
	// forged one comes back).
	const forged = "sha256:forged"
	forgeIdentity(t, cache, forged)
	if id, err := identify(dir, cache); err != nil || id != forged {
		t.Fatalf("identify of an unchanged dir = %q, %v; want the stored %q", id, err, forged)
	}
	// A file not hashed does not matter either.
	if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte("edited"), 0o644); err != nil {
		t.Fatal(err)
	}
	if id, _ := identify(dir, cache); id != forged {
		t.Fatalf("editing README.md invalidated the identity (%q)", id)
	}

	// Each stat field invalidates: content and size, mtime alone, inode alone.
	weights := filepath.Join(dir, "model.safetensors")
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, c := range []struct {
		name   string
		change func() error
	}{
		{"rewritten", func() error { return os.WriteFile(weights, []byte("new weights"), 0o644) }},
		{"touched", func() error { return os.Chtimes(weights, mtime, mtime) }},
		{"replaced by a copy", func() error {
			data, err := os.ReadFile(weights)
			if err != nil {
				return err
			}
			tmp := weights + ".tmp"
			if err := os.WriteFile(tmp, data, 0o644); err != nil {
				return err
			}
			if err := os.Chtimes(tmp, mtime, mtime); err != nil {
				return err
			}
			return os.Rename(tmp, weights)
		}},
		{"file added", func() error { return os.WriteFile(filepath.Join(dir, "generation_config.json"), []byte("{}"), 0o644) }},
	} {
		forgeIdentity(t, cache, forged)
		if err := c.change(); err != nil {
			t.Fatal(err)
		}
		sum, err := hashFiles(dir, func(n string) bool { return n != "README.md" })
		if err != nil {
			t.Fatal(err)
		}
		if id, err := identify(dir, cache); err != nil || id != "sha256:"+sum {
			t.Fatalf("%s: identify = %q, %v; want the fresh hash sha256:%s", c.name, id, err, sum)
		}
	}
}

func TestIdentifyWithoutCacheAndSnapshots(t *testing.T) {
	dir := localModel(t)
	sum, _ := hashFiles(dir, func(n string) bool { return n != "README.md" })
	if id, err := identify(dir, ""); err != nil || id != "sha256:"+sum {
		t.Fatalf("identify without a cache = %q, %v", id, err)
	}
	const commit = "0123456789abcdef0123456789abcdef01234567"
	snap := filepath.Join(t.TempDir(), "models--x--y", "snapshots", commit)
	if err := os.MkdirAll(snap, 0o755); err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	if id, err := identify(snap, cache); err != nil || id != "commit:"+commit {
		t.Fatalf("identify of a snapshot = %q, %v", id, err)
	}
	if files, _ := filepath.Glob(filepath.Join(cache, "ids", "*")); len(files) != 0 {
		t.Fatalf("a snapshot's identity was cached: %v", files)
	}
}

// A cached pair analysis needs no tokenizer: neither model parses its
// tokenizer.json; computing one parses both.
func TestCachedPairLeavesTokenizersUnread(t *testing.T) {
	_, o, old, nw, lm := pairFixture(t)
	if old.tok == nil || nw.tok == nil {
		t.Fatal("computing the pair did not read the tokenizers")
	}
	old2, err := openModel(o.OldBase, o.CacheDir)
	if err != nil {
		t.Fatal(err)
	}
	defer old2.Close()
	nw2, err := openModel(o.NewBase, o.CacheDir)
	if err != nil {
		t.Fatal(err)
	}
	defer nw2.Close()
	if _, cached, err := pairAnalysis(context.Background(), old2, nw2, o, lm); err != nil || !cached {
		t.Fatalf("pairAnalysis: cached %v, %v", cached, err)
	}
	if !old2.hasTokenizer() || old2.tok != nil || nw2.tok != nil {
		t.Fatal("a cached pair parsed a tokenizer")
	}
}

// A broken tokenizer.json is still an error, naming the file, when the pair
// must be computed.
func TestBrokenTokenizerIsAnErrorWhenNeeded(t *testing.T) {
	dir, _, _, _ := fixture(t, synth.UpgradeSpec{Hidden: 48, Layers: 5, Seed: 5})
	o := opts(dir)
	tp := filepath.Join(o.NewBase, "tokenizer.json")
	if err := os.WriteFile(tp, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Convert(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), tp) {
		t.Fatalf("Convert with a broken tokenizer.json: %v, want an error naming %s", err, tp)
	}
}

// Two directories whose files differ must not share an identity, even when
// the bytes of one file happen to contain what the other directory spreads
// over two files (names and contents are not self-delimiting without sizes).
func TestIdentityIsUnambiguous(t *testing.T) {
	write := func(files map[string]string) string {
		dir := filepath.Join(t.TempDir(), "model")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, body := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	one := write(map[string]string{"a.json": "{}", "b.safetensors": "weights"})
	two := write(map[string]string{"a.json": "{}b.safetensors\x00weights"})
	id1, err := identify(one, "")
	if err != nil {
		t.Fatal(err)
	}
	id2, err := identify(two, "")
	if err != nil {
		t.Fatal(err)
	}
	if id1 == id2 {
		t.Fatalf("different directories share the identity %s", id1)
	}
}
