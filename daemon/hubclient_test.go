package daemon

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/daemon/state"
	"github.com/lorasync/lorasync/hub"
	"github.com/lorasync/lorasync/hub/hubtest"
)

// hubtestBed is a harness whose Hub is hub.Client (through HubClient)
// talking HTTP to hubtest, the project's faithful fake Hub.
func hubtestBed(t *testing.T, tracks string) (*harness, *hubtest.Server) {
	t.Helper()
	srv := hubtest.NewTB(t)
	srv.AddToken("hf_daemontest", "acme", "org")
	h := newHarness(t, tracks)
	c, err := hub.New(hub.Options{Endpoint: srv.URL, Token: "hf_daemontest", CacheDir: filepath.Join(h.dir, "hf"), MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	h.realHub = NewHubClient(c)
	return h, srv
}

func seed(t *testing.T, srv *hubtest.Server, repo string, files map[string][]byte) string {
	t.Helper()
	if err := srv.CreateRepo(repo, false); err != nil && !strings.Contains(err.Error(), "exists") {
		t.Fatal(err)
	}
	c, err := srv.Commit(repo, "main", files, "seed")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestHubClientAgainstHubtest(t *testing.T) {
	for _, target := range []string{`{repo_template: "{adapter}-{base_name}"}`, `{branch: "lorasync/{base_name}"}`, `{pr: true}`} {
		t.Run(target, func(t *testing.T) {
			h, srv := hubtestBed(t, strings.Replace(oneAdapterTrack, `{repo_template: "{adapter}-{base_name}"}`, target, 1))
			seed(t, srv, "org/base", baseFiles("v0"))
			seed(t, srv, "acme/math", adapterFiles(8))
			h.runOnce()
			c1 := seed(t, srv, "org/base", baseFiles("v1"))

			// Crash right after the push, then restart: exactly one commit.
			h.hook = func(state.JobKey) bool { return true }
			h.runOnce()
			h.hook = nil
			rep := h.runOnce()
			if err := rep.Err(); err != nil {
				t.Fatal(err)
			}
			j := h.job("acme/math")
			if j.Status != state.Done || !j.Reconciled || j.Key.BaseCommit != c1 {
				t.Fatalf("job = %+v", j)
			}
			rev := j.OutputRevision
			if j.PullRequest != "" {
				rev = j.PullRequest
			}
			if n := lorasyncCommits(t, srv, j.OutputRepo, rev); n != 1 {
				t.Errorf("%d lorasync commits on %s@%s, want 1", n, j.OutputRepo, rev)
			}
			prov, err := srv.File(j.OutputRepo, rev, ProvenanceFile)
			if err != nil {
				t.Fatal(err)
			}
			if p := readProvenance(t, prov); p.NewBase.Commit != c1 {
				t.Errorf("provenance names %s, want %s", p.NewBase.Commit, c1)
			}
		})
	}
}

func TestHubClientOutageRetried(t *testing.T) {
	h, srv := hubtestBed(t, oneAdapterTrack)
	seed(t, srv, "org/base", baseFiles("v0"))
	seed(t, srv, "acme/math", adapterFiles(8))
	h.runOnce()
	seed(t, srv, "org/base", baseFiles("v1"))
	srv.Inject(hubtest.Fault{Status: http.StatusServiceUnavailable, Times: 1000})
	rep := h.runOnce()
	if len(rep.Tracks) != 1 || rep.Tracks[0].Error == "" {
		t.Fatalf("poll during an outage: %+v", rep.Tracks)
	}
	srv.ClearFaults()
	h.runOnce()
	if j := h.job("acme/math"); j.Status != state.Done {
		t.Fatalf("after the outage: %+v", j)
	}
}

func TestHubErrMapping(t *testing.T) {
	notFound := &hub.Error{Op: "repo info", Repo: "a/b", Status: 404, Err: hub.ErrRepoNotFound}
	if err := hubErr(notFound); !errors.Is(err, ErrNotFound) || !IsPermanent(err) || !errors.Is(err, hub.ErrRepoNotFound) {
		t.Errorf("not found -> %v", err)
	}
	conflict := &hub.Error{Op: "commit", Repo: "a/b", Status: 412, Err: hub.ErrConflict}
	if err := hubErr(conflict); IsPermanent(err) {
		t.Errorf("a moved branch must be retried: %v", err)
	}
	down := &hub.Error{Op: "repo info", Repo: "a/b", Status: 503, Err: hub.ErrUnavailable}
	if err := hubErr(down); IsPermanent(err) || errors.Is(err, ErrNotFound) {
		t.Errorf("503 -> %v", err)
	}
	unauth := &hub.Error{Op: "commit", Repo: "a/b", Status: 401, Err: hub.ErrUnauthorized}
	if err := hubErr(unauth); !IsPermanent(err) {
		t.Errorf("401 -> %v, want permanent", err)
	}
	if hubErr(context.Canceled) != context.Canceled {
		t.Error("cancellation must pass through unchanged")
	}
}

// Snapshots fetch what a migration reads and nothing else.
func TestHubClientSnapshotSelectsFiles(t *testing.T) {
	srv := hubtest.NewTB(t)
	srv.AddToken("hf_daemontest", "org")
	files := map[string][]byte{
		"config.json": []byte(`{}`), "tokenizer.json": []byte(`{}`), "model.safetensors": []byte("w"),
		"model.safetensors.index.json": []byte(`{}`), "tokenizer.model": []byte("sp"), "merges.txt": []byte("m"),
		"pytorch_model.bin": []byte("dup"), "original/consolidated.00.pth": []byte("dup"),
		"onnx/model.safetensors": []byte("dup"), "README.md": []byte("card"),
	}
	commit := seed(t, srv, "org/base", files)
	c, err := hub.New(hub.Options{Endpoint: srv.URL, Token: "hf_daemontest", CacheDir: t.TempDir(), MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	hc := NewHubClient(c)
	dir, n, err := hc.Snapshot(context.Background(), "org/base", commit)
	if err != nil {
		t.Fatal(err)
	}
	got := dirFiles(t, dir)
	want := []string{"config.json", "merges.txt", "model.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer.model"}
	if len(got) != len(want) {
		t.Errorf("snapshot holds %d files, want %v", len(got), want)
	}
	var size int64
	for _, f := range want {
		if _, ok := got[f]; !ok {
			t.Errorf("snapshot lacks %s", f)
		}
		size += int64(len(files[f]))
	}
	if n != size {
		t.Errorf("downloaded %d bytes, want %d", n, size)
	}
	// A second snapshot of the same commit is served from the cache.
	if _, n, err := hc.Snapshot(context.Background(), "org/base", commit); err != nil || n != 0 {
		t.Errorf("cached snapshot: %d bytes, %v", n, err)
	}
}
