package hub

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/hub/hubtest"
)

// jsHubModule is the official JS client (@huggingface/hub) installed for the
// conformance suite; its snapshotDownload writes the huggingface_hub cache
// layout too.
const jsHubModule = "conformance/js/node_modules/@huggingface/hub/dist/index.mjs"

const jsSnapshot = `
import { snapshotDownload } from %q;
const dir = await snapshotDownload({
  repo: process.env.REPO, revision: "main", cacheDir: process.env.CACHE_DIR,
  hubUrl: process.env.HUB_URL, accessToken: process.env.HF_TOKEN,
});
console.log(dir);
`

// TestJSCacheInterop downloads the same repo with @huggingface/hub's
// snapshotDownload and with Snapshot, compares the two caches (blob names and
// bytes, refs, snapshot symlink targets), then serves the JS-written cache
// with an offline Client. It needs node and the conformance suite's
// node_modules; without them it is skipped (and says so).
func TestJSCacheInterop(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed")
	}
	mod, _ := filepath.Abs(jsHubModule)
	if _, err := os.Stat(mod); err != nil {
		t.Skipf("@huggingface/hub not installed at %s", mod)
	}
	e := newEnv(t, []hubtest.Option{hubtest.WithLFSThreshold(lfsThreshold)}, nil)
	files := seedFiles()
	// @huggingface/hub puts paths into URLs unescaped, so "#" and "%" break it
	// (against the real Hub too); keep names it can fetch.
	delete(files, "odd names/é #1%.txt")
	head := e.seed("model", files)

	jsCache := filepath.Join(t.TempDir(), "js")
	script := filepath.Join(t.TempDir(), "snap.mjs")
	if err := os.WriteFile(script, []byte(strings.Replace(jsSnapshot, "%q", `"file://`+mod+`"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, script)
	cmd.Env = append(os.Environ(), "REPO=alice/model", "CACHE_DIR="+jsCache, "HUB_URL="+e.srv.URL, "HF_TOKEN="+testToken)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node snapshotDownload: %v\n%s", err, out)
	}
	if _, err := e.c.Snapshot(context.Background(), "alice/model", "main", SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}

	// The parts of the layout both clients write must be identical.
	sub := func(root string) []string {
		var keep []string
		for _, p := range listCache(t, filepath.Join(root, "models--alice--model")) {
			if strings.HasPrefix(p, "blobs/") || strings.HasPrefix(p, "refs/") || strings.HasPrefix(p, "snapshots/") {
				keep = append(keep, p)
			}
		}
		return keep
	}
	jsFiles, goFiles := sub(jsCache), sub(e.cache)
	if !slices.Equal(jsFiles, goFiles) {
		t.Fatalf("layouts differ:\n js: %v\n go: %v", jsFiles, goFiles)
	}
	for _, p := range jsFiles {
		a := filepath.Join(jsCache, "models--alice--model", p)
		b := filepath.Join(e.cache, "models--alice--model", p)
		if strings.HasSuffix(p, "@") {
			ta, _ := os.Readlink(strings.TrimSuffix(a, "@"))
			tb, _ := os.Readlink(strings.TrimSuffix(b, "@"))
			if ta != tb {
				t.Errorf("%s: js -> %s, go -> %s", p, ta, tb)
			}
			continue
		}
		if st, _ := os.Stat(a); st.IsDir() {
			continue
		}
		da, _ := os.ReadFile(a)
		db, _ := os.ReadFile(b)
		if string(da) != string(db) {
			t.Errorf("%s differs between the caches", p)
		}
	}

	// The JS-written cache serves an offline Client, without any request.
	off := e.client(func(o *Options) { o.CacheDir, o.Offline = jsCache, true })
	e.srv.ResetRequests()
	dir, err := off.Snapshot(context.Background(), "alice/model", "main", SnapshotOptions{})
	if err != nil || dir != filepath.Join(jsCache, "models--alice--model", "snapshots", head) {
		t.Fatalf("offline snapshot from the JS cache: %s, %v", dir, err)
	}
	if _, err := off.DownloadFile(context.Background(), "alice/model", head, "sub/dir/adapter.safetensors"); err != nil {
		t.Errorf("offline file from the JS cache: %v", err)
	}
	if n := len(e.srv.Requests()); n != 0 {
		t.Errorf("%d requests in offline mode", n)
	}
}
