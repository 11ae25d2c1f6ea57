package hub

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/hub/hubtest"
	"github.com/lorasync/lorasync/internal/logbuf"
)

// lfsThreshold makes files of 4 KiB and more LFS files on the fake, so the
// tests exercise both kinds with small contents.
const lfsThreshold = 4 << 10

func seedFiles() map[string][]byte {
	return map[string][]byte{
		"config.json":                  []byte(`{"model_type":"llama","hidden_size":64}`),
		"README.md":                    []byte("---\nbase_model: alice/base\n---\n# card\n"),
		"model.safetensors":            randBytes(1, 300<<10),
		"sub/dir/adapter.safetensors":  randBytes(2, 64<<10),
		"sub/notes.txt":                []byte("nested regular file\n"),
		"tokenizer/tokenizer_config.j": []byte("{}"),
		"odd names/é #1%.txt":          []byte("spaces, unicode, # and %"),
	}
}

// TestSnapshotCacheLayout checks the cache against what huggingface_hub
// writes: blobs named by etag (git sha1 / sha256), relative symlinks with one
// extra "../" per directory level, refs/main holding exactly the commit,
// lock files under .locks, the tree listing and CACHEDIR.TAG.
func TestSnapshotCacheLayout(t *testing.T) {
	e := newEnv(t, []hubtest.Option{hubtest.WithLFSThreshold(lfsThreshold)}, nil)
	files := seedFiles()
	head := e.seed("model", files)
	ctx := context.Background()

	dir, err := e.c.Snapshot(ctx, "alice/model", "main", SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	repoDir := filepath.Join(e.cache, "models--alice--model")
	if want := filepath.Join(repoDir, "snapshots", head); dir != want {
		t.Fatalf("snapshot dir = %s, want %s", dir, want)
	}
	ref, err := os.ReadFile(filepath.Join(repoDir, "refs", "main"))
	if err != nil || string(ref) != head {
		t.Fatalf("refs/main = %q (%v), want exactly %q", ref, err, head)
	}
	all := append(slices.Collect(mapsKeys(files)), ".gitattributes")
	for _, p := range all {
		meta, err := e.srv.Stat("alice/model", "main", p)
		if err != nil {
			t.Fatal(err)
		}
		etag := meta.BlobID
		if meta.LFS {
			etag = meta.SHA256
		}
		ptr := filepath.Join(dir, filepath.FromSlash(p))
		target, err := os.Readlink(ptr)
		if err != nil {
			t.Fatalf("%s: not a symlink: %v", p, err)
		}
		wantTarget := strings.Repeat("../", 2+strings.Count(p, "/")) + "blobs/" + etag
		if target != filepath.FromSlash(wantTarget) {
			t.Errorf("%s -> %s, want %s", p, target, wantTarget)
		}
		got, err := os.ReadFile(ptr)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := e.srv.File("alice/model", "main", p)
		if string(got) != string(want) {
			t.Errorf("%s: content differs", p)
		}
		if _, err := os.Stat(filepath.Join(e.cache, ".locks", "models--alice--model", etag+".lock")); err != nil {
			t.Errorf("%s: lock file: %v", p, err)
		}
	}
	if m, _ := e.srv.Stat("alice/model", "main", "model.safetensors"); !m.LFS {
		t.Fatal("fixture: model.safetensors should be an LFS file")
	}
	for _, p := range listCache(t, repoDir) {
		if strings.HasSuffix(p, ".incomplete") || strings.HasSuffix(p, ".tmp") {
			t.Errorf("leftover temporary file %s", p)
		}
	}
	tag, err := os.ReadFile(filepath.Join(e.cache, "CACHEDIR.TAG"))
	if err != nil || !strings.HasPrefix(string(tag), "Signature: 8a477f597d28d172789f06886806bc55\n") {
		t.Errorf("CACHEDIR.TAG = %q, %v", tag, err)
	}
	var tree struct {
		FormatVersion int `json:"format_version"`
		Files         map[string]struct {
			Size      int64  `json:"size"`
			BlobID    string `json:"blob_id"`
			LFSSHA256 string `json:"lfs_sha256"`
		} `json:"files"`
	}
	raw, err := os.ReadFile(filepath.Join(repoDir, "trees", head+".json"))
	if err != nil || json.Unmarshal(raw, &tree) != nil || tree.FormatVersion != 1 || len(tree.Files) != len(all) {
		t.Fatalf("trees/%s.json: %v %s", head, err, raw)
	}
	if m, _ := e.srv.Stat("alice/model", "main", "model.safetensors"); tree.Files["model.safetensors"].LFSSHA256 != m.SHA256 {
		t.Errorf("tree listing lfs_sha256 = %q, want %q", tree.Files["model.safetensors"].LFSSHA256, m.SHA256)
	}

	// The same commit again needs no network at all.
	e.srv.ResetRequests()
	dir2, err := e.c.Snapshot(ctx, "alice/model", head, SnapshotOptions{})
	if err != nil || dir2 != dir {
		t.Fatalf("second snapshot: %s, %v", dir2, err)
	}
	if n := len(e.srv.Requests()); n != 0 {
		t.Errorf("snapshot of a cached commit made %d requests, want 0", n)
	}
}

func mapsKeys(m map[string][]byte) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestSnapshotIncludeExclude checks fnmatch-style filtering end to end:
// only the selected files get pointers, and nothing else is fetched.
func TestSnapshotIncludeExclude(t *testing.T) {
	e := newEnv(t, []hubtest.Option{hubtest.WithLFSThreshold(lfsThreshold)}, nil)
	e.seed("model", seedFiles())
	dir, err := e.c.Snapshot(context.Background(), "alice/model", "", SnapshotOptions{
		Include: []string{"*.json", "*.safetensors", "sub/"},
		Exclude: []string{"sub/dir/"},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := listCache(t, dir)
	want := []string{"config.json@", "model.safetensors@", "sub", "sub/notes.txt@"}
	if !slices.Equal(got, want) {
		t.Fatalf("snapshot holds %v, want %v", got, want)
	}
	// Exactly the three selected files' contents were served, once each.
	var served []string
	for _, r := range requestsTo(e.srv.Requests(), "GET", "") {
		if r.OID != "" {
			served = append(served, r.OID)
		}
	}
	var wantOIDs []string
	for _, p := range []string{"config.json", "model.safetensors", "sub/notes.txt"} {
		m, _ := e.srv.Stat("alice/model", "main", p)
		if m.LFS {
			wantOIDs = append(wantOIDs, m.SHA256)
		} else {
			wantOIDs = append(wantOIDs, m.BlobID)
		}
	}
	slices.Sort(served)
	slices.Sort(wantOIDs)
	if !slices.Equal(served, wantOIDs) {
		t.Errorf("served contents %v, want %v", served, wantOIDs)
	}
}

// TestOffline serves cached snapshots and files without any request, and
// fails clearly for what the cache does not hold.
func TestOffline(t *testing.T) {
	e := newEnv(t, []hubtest.Option{hubtest.WithLFSThreshold(lfsThreshold)}, nil)
	head := e.seed("model", seedFiles())
	ctx := context.Background()
	dir, err := e.c.Snapshot(ctx, "alice/model", "main", SnapshotOptions{Include: []string{"*.json"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.DownloadFile(ctx, "alice/model", "main", "missing.bin"); !errors.Is(err, ErrEntryNotFound) {
		t.Fatalf("missing file online: %v, want ErrEntryNotFound", err)
	}
	if _, err := os.Stat(filepath.Join(e.cache, "models--alice--model", ".no_exist", head, "missing.bin")); err != nil {
		t.Errorf(".no_exist marker: %v", err)
	}

	off := e.client(func(o *Options) { o.Offline = true })
	e.srv.ResetRequests()
	for _, rev := range []string{"main", head} {
		got, err := off.Snapshot(ctx, "alice/model", rev, SnapshotOptions{Include: []string{"*.json"}})
		if err != nil || got != dir {
			t.Errorf("offline snapshot @%s = %s, %v; want %s", rev, got, err, dir)
		}
	}
	p, err := off.DownloadFile(ctx, "alice/model", "main", "config.json")
	if err != nil || p != filepath.Join(dir, "config.json") {
		t.Errorf("offline DownloadFile = %s, %v", p, err)
	}
	if _, err := off.DownloadFile(ctx, "alice/model", "main", "missing.bin"); !errors.Is(err, ErrEntryNotFound) {
		t.Errorf("offline known-absent file: %v, want ErrEntryNotFound", err)
	}
	// Not cached: a wider selection, another branch, another repo.
	for _, tc := range []struct{ repo, rev, include string }{
		{"alice/model", "main", "*"},
		{"alice/model", "dev", "*.json"},
		{"alice/other", "main", "*"},
	} {
		_, err := off.Snapshot(ctx, tc.repo, tc.rev, SnapshotOptions{Include: []string{tc.include}})
		if !errors.Is(err, ErrOffline) || !strings.Contains(err.Error(), tc.repo) {
			t.Errorf("offline %s@%s %q: %v, want ErrOffline naming the repo", tc.repo, tc.rev, tc.include, err)
		}
	}
	if _, err := off.RepoInfo(ctx, "alice/model", "main"); !errors.Is(err, ErrOffline) {
		t.Errorf("offline RepoInfo: %v, want ErrOffline", err)
	}
	if n := len(e.srv.Requests()); n != 0 {
		t.Errorf("offline client made %d requests", n)
	}
}

// TestDownloadFile fetches a single file into the same layout and reuses the
// blob for a second revision with the same content.
func TestDownloadFile(t *testing.T) {
	e := newEnv(t, []hubtest.Option{hubtest.WithLFSThreshold(lfsThreshold)}, nil)
	files := seedFiles()
	head := e.seed("model", files)
	ctx := context.Background()
	p, err := e.c.DownloadFile(ctx, "alice/model", "main", "sub/dir/adapter.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(e.cache, "models--alice--model", "snapshots", head, "sub", "dir", "adapter.safetensors"); p != want {
		t.Fatalf("path = %s, want %s", p, want)
	}
	got, _ := os.ReadFile(p)
	if string(got) != string(files["sub/dir/adapter.safetensors"]) {
		t.Fatal("content differs")
	}
	// A new commit that leaves the file alone: HEAD only, no content bytes.
	head2, err := e.srv.Commit("alice/model", "main", map[string][]byte{"other.txt": []byte("x")}, "touch")
	if err != nil {
		t.Fatal(err)
	}
	e.srv.ResetRequests()
	p2, err := e.c.DownloadFile(ctx, "alice/model", "main", "sub/dir/adapter.safetensors")
	if err != nil || !strings.Contains(p2, head2) {
		t.Fatalf("second download: %s, %v", p2, err)
	}
	if n := len(requestsTo(e.srv.Requests(), "GET", "")); n != 0 {
		t.Errorf("%d GETs for content already cached, want 0", n)
	}
}

// TestSameContentTwice: two paths with identical content share one blob,
// fetched once (the second worker waits on the blob lock, then links).
func TestSameContentTwice(t *testing.T) {
	e := newEnv(t, []hubtest.Option{hubtest.WithLFSThreshold(lfsThreshold)}, func(o *Options) { o.Concurrency = 4 })
	w := randBytes(21, 200<<10)
	e.seed("dup", map[string][]byte{"a/w.bin": w, "b/w.bin": w, "c.txt": []byte("x"), "d.txt": []byte("x")})
	dir, err := e.c.Snapshot(context.Background(), "alice/dup", "main", SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a/w.bin", "b/w.bin", "c.txt", "d.txt"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Error(err)
		}
	}
	served := map[string]int{}
	for _, r := range requestsTo(e.srv.Requests(), "GET", "") {
		if r.OID != "" {
			served[r.OID]++
		}
	}
	for oid, n := range served {
		if n != 1 {
			t.Errorf("content %s fetched %d times, want once", oid, n)
		}
	}
	if len(served) != 3 { // w.bin, "x", .gitattributes
		t.Errorf("%d distinct contents fetched, want 3", len(served))
	}
}

// TestProgressLog: without a terminal, progress goes to the logger as
// structured records, ending with a "done" record carrying the byte count.
func TestProgressLog(t *testing.T) {
	e := newEnv(t, []hubtest.Option{hubtest.WithLFSThreshold(lfsThreshold)}, func(o *Options) { o.Progress = ProgressLog })
	files := seedFiles()
	e.seed("model", files)
	if _, err := e.c.Snapshot(context.Background(), "alice/model", "main", SnapshotOptions{Include: []string{"*.safetensors"}}); err != nil {
		t.Fatal(err)
	}
	want := int64(len(files["model.safetensors"]) + len(files["sub/dir/adapter.safetensors"]))
	var done map[string]any
	for _, line := range strings.Split(e.logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "download alice/model@main done" {
			done = rec
		}
	}
	if done == nil {
		t.Fatalf("no progress record in logs:\n%s", e.logs.String())
	}
	if done["bytes"] != float64(want) || done["total"] != float64(want) || done["repo"] != "alice/model" {
		t.Errorf("done record %v, want bytes = total = %d", done, want)
	}
}

// TestProgressBar: a forced bar renders to ProgressOutput with the
// operation's description (on a terminal ProgressAuto picks it).
func TestProgressBar(t *testing.T) {
	var out logbuf.Buffer
	e := newEnv(t, nil, func(o *Options) { o.Progress, o.ProgressOutput = ProgressBar, &out })
	e.seed("model", map[string][]byte{"a.txt": []byte("hello")})
	if _, err := e.c.Snapshot(context.Background(), "alice/model", "main", SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "download alice/model@main") || !strings.Contains(out.String(), "100%") {
		t.Errorf("bar output %q", out.String())
	}
	if isTerminal(&out) {
		t.Error("a buffer is not a terminal")
	}
}
