package conformance_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/hub"
	"github.com/lorasync/lorasync/hub/hubtest"
)

const (
	jsToken = "hf_conformance_js_0000000000000000"
	jsUser  = "jsuser"
)

type uploadResult struct {
	Commit    string `json:"commit"`
	CommitURL string `json:"commitUrl"`
	RepoURL   string `json:"repoUrl"`
}

type downloadResult struct {
	Models []struct {
		Name      string `json:"name"`
		SHA       string `json:"sha"`
		Private   bool   `json:"private"`
		UpdatedAt string `json:"updatedAt"`
	} `json:"models"`
	MissingIsNull bool `json:"missingIsNull"`
	Info          struct {
		ID       string         `json:"id"`
		Name     string         `json:"name"`
		SHA      string         `json:"sha"`
		CardData map[string]any `json:"cardData"`
	} `json:"info"`
	Files map[string]struct {
		Size      int64  `json:"size"`
		ETag      string `json:"etag"`
		CachePath string `json:"cachePath"`
	} `json:"files"`
	Commits []struct {
		OID     string   `json:"oid"`
		Title   string   `json:"title"`
		Authors []string `json:"authors"`
	} `json:"commits"`
	Tree []struct {
		Path   string `json:"path"`
		Type   string `json:"type"`
		OID    string `json:"oid"`
		Size   int64  `json:"size"`
		LFSOID string `json:"lfsOid"`
	} `json:"tree"`
}

// checkCDNNeverSawToken asserts that no request to the CDN host carried an
// Authorization header and that the CDN was used at all.
func checkCDNNeverSawToken(t *testing.T, s *hubtest.Server) {
	t.Helper()
	n := 0
	for _, r := range s.Requests() {
		if r.Host != "cdn" {
			continue
		}
		n++
		if r.Auth {
			t.Errorf("%s %s reached the CDN with an Authorization header (status %d)", r.Method, r.Path, r.Status)
		}
	}
	if n == 0 {
		t.Errorf("no request reached the CDN host")
	}
}

// TestJSUploadGoReads: the official client uploads (regular, basic LFS and
// multipart LFS files, then a commit with a parent and a deletion); the fake's
// store and hub.Client read back the same bytes.
func TestJSUploadGoReads(t *testing.T) {
	node := requireNode(t)
	s := hubtest.NewTB(t)
	s.AddToken(jsToken, jsUser)
	repo := jsUser + "/adapter"
	files := map[string][]byte{
		"config.json":               []byte(`{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}`),
		"adapter_model.safetensors": randomBytes(1, 5000),
		// Above the 10 MiB LFS threshold and the 8 MiB multipart chunk size.
		"weights/big.dat": randomBytes(2, 11<<20),
	}
	env := map[string]string{"HUB_URL": s.URL, "HF_TOKEN": jsToken, "REPO": repo, "CREATE_REPO": "1", "TITLE": "upload from js"}
	var up uploadResult
	if out, err := runNode(t, node, "upload.mjs", env, &up, append([]string{"uploadFiles"}, writeFiles(t, files)...)...); err != nil {
		t.Fatalf("upload.mjs uploadFiles: %v\n%s", err, out)
	}
	head, err := s.Head(repo, "main")
	if err != nil || head != up.Commit {
		t.Fatalf("main = %s (%v), the JS client reported commit %s", head, err, up.Commit)
	}
	for name, want := range files {
		got, err := s.File(repo, "main", name)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: stored %d bytes (%v), uploaded %d", name, len(got), err, len(want))
		}
		meta, _ := s.Stat(repo, "main", name)
		if wantLFS := name != "config.json"; meta.LFS != wantLFS {
			t.Errorf("%s: LFS=%v, want %v", name, meta.LFS, wantLFS)
		}
	}
	multipart := false
	for _, r := range s.Requests() {
		if r.Host == "cdn" && r.Method == "PUT" && strings.Count(r.Path, "/") == 3 {
			multipart = true
		}
	}
	if !multipart {
		t.Errorf("the 11 MiB file did not go through the multipart transfer")
	}
	checkCDNNeverSawToken(t, s)

	// A commit with parentCommit, an addition and a deletion.
	readme := []byte("---\nbase_model: org/base\nlibrary_name: peft\n---\n# adapter\n")
	env = map[string]string{"HUB_URL": s.URL, "HF_TOKEN": jsToken, "REPO": repo, "TITLE": "card", "PARENT_COMMIT": up.Commit, "DELETE": "config.json"}
	// weights/copy.dat repeats an LFS object the Hub already holds: the batch
	// answer has no actions and nothing goes to the CDN.
	s.ResetRequests()
	var up2 uploadResult
	second := map[string][]byte{"README.md": readme, "weights/copy.dat": files["weights/big.dat"]}
	if out, err := runNode(t, node, "upload.mjs", env, &up2, append([]string{"commit"}, writeFiles(t, second)...)...); err != nil {
		t.Fatalf("upload.mjs commit: %v\n%s", err, out)
	}
	for _, r := range s.Requests() {
		if r.Host == "cdn" {
			t.Errorf("an already stored object was uploaded again: %s %s", r.Method, r.Path)
		}
	}
	if got, _ := s.File(repo, "main", "weights/copy.dat"); !bytes.Equal(got, files["weights/big.dat"]) {
		t.Errorf("weights/copy.dat differs from the stored object")
	}
	commits, err := s.Commits(repo, "main")
	if err != nil || commits[0].ID != up2.Commit || commits[0].Parents[0] != up.Commit || commits[0].Title != "card" || commits[0].Author != jsUser {
		t.Fatalf("history after the second commit: %+v (%v)", commits, err)
	}
	// The same parent is now stale: the Hub answers 412 and the client fails.
	var up3 uploadResult
	out, err := runNode(t, node, "upload.mjs", env, &up3, append([]string{"commit"}, writeFiles(t, map[string][]byte{"x.txt": []byte("x")})...)...)
	if err == nil || !strings.Contains(out, "412") {
		t.Fatalf("commit with a stale parentCommit succeeded or failed for another reason: %v\n%s", err, out)
	}

	// lorasync's own client reads the JS upload back.
	c, err := hub.New(hub.Options{Endpoint: s.URL, Token: jsToken, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := c.Snapshot(context.Background(), repo, "main", hub.SnapshotOptions{})
	if err != nil {
		t.Fatalf("hub.Client.Snapshot: %v", err)
	}
	if filepath.Base(snap) != up2.Commit {
		t.Errorf("snapshot dir %s is not named after commit %s", snap, up2.Commit)
	}
	want := map[string][]byte{"README.md": readme, "adapter_model.safetensors": files["adapter_model.safetensors"],
		"weights/big.dat": files["weights/big.dat"], "weights/copy.dat": files["weights/big.dat"]}
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(snap, filepath.FromSlash(name)))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("hub.Client snapshot %s: %d bytes (%v), want %d", name, len(got), err, len(data))
		}
	}
	if _, err := os.Stat(filepath.Join(snap, "config.json")); !os.IsNotExist(err) {
		t.Errorf("config.json was deleted but is in the snapshot (%v)", err)
	}
}

// TestJSDownloadsGoCommits: files committed on the Go side (seeded into the
// fake, then uploaded by hub.Client) come out of the official client
// byte-identical, and it lists the same commit ids, across Link pages.
func TestJSDownloadsGoCommits(t *testing.T) {
	node := requireNode(t)
	s := hubtest.NewTB(t)
	const owner, token = "alice", "hf_conformance_alice_000000000000"
	s.AddToken(token, owner)
	repo := owner + "/base"
	// Private, so that every download needs the token and the CDN hop must
	// drop it.
	if err := s.CreateRepo(owner+"/other", false); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRepo(repo, true); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"config.json": []byte(`{"model_type": "llama", "hidden_size": 64}`),
		"README.md":   []byte("---\nlicense: apache-2.0\nbase_model: meta/llama\n---\n# base\n"),
	}
	// lastCommit[path] is the newest commit that changed path.
	lastCommit := map[string]string{}
	first, err := s.Commit(repo, "main", files, "config and card")
	if err != nil {
		t.Fatal(err)
	}
	lastCommit["config.json"], lastCommit["README.md"] = first, first
	files["model.safetensors"] = randomBytes(3, 4000)
	files["nested/dir/tokenizer.json"] = []byte(`{"version": "1.0", "model": {"type": "BPE"}}`)
	second, err := s.Commit(repo, "main", map[string][]byte{
		"model.safetensors": files["model.safetensors"], "nested/dir/tokenizer.json": files["nested/dir/tokenizer.json"],
	}, "weights")
	if err != nil {
		t.Fatal(err)
	}
	lastCommit["model.safetensors"], lastCommit["nested/dir/tokenizer.json"] = second, second
	c, err := hub.New(hub.Options{Endpoint: s.URL, Token: token, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	files["adapter_model.safetensors"] = randomBytes(4, 6000)
	files["adapter_config.json"] = []byte(`{"peft_type": "LORA", "r": 4}`)
	ci, err := c.Upload(context.Background(), repo, hub.CommitOptions{Message: "adapter from hub.Client", Files: []hub.FileOp{
		{Path: "adapter_model.safetensors", Content: files["adapter_model.safetensors"]},
		{Path: "adapter_config.json", Content: files["adapter_config.json"]},
	}})
	if err != nil {
		t.Fatalf("hub.Client.Upload: %v", err)
	}
	head, _ := s.Head(repo, "main")
	if ci.OID != head {
		t.Fatalf("hub.Client reported commit %s, main is %s", ci.OID, head)
	}
	lastCommit["adapter_model.safetensors"], lastCommit["adapter_config.json"] = head, head
	s.ResetRequests()

	outDir, cacheDir := t.TempDir(), t.TempDir()
	env := map[string]string{"HUB_URL": s.URL, "HF_TOKEN": token, "REPO": repo, "REVISION": "main", "OUT_DIR": outDir, "CACHE_DIR": cacheDir}
	var res downloadResult
	var paths []string
	for p := range files {
		paths = append(paths, p)
	}
	if out, err := runNode(t, node, "download.mjs", env, &res, paths...); err != nil {
		t.Fatalf("download.mjs: %v\n%s", err, out)
	}
	if res.Info.SHA != head || res.Info.Name != repo {
		t.Errorf("modelInfo: name %q sha %q, want %q %q", res.Info.Name, res.Info.SHA, repo, head)
	}
	if res.Info.CardData["base_model"] != "meta/llama" {
		t.Errorf("modelInfo cardData %v", res.Info.CardData)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(outDir, filepath.FromSlash(name)))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("downloadFile %s: %d bytes (%v), want %d", name, len(got), err, len(want))
		}
		f := res.Files[name]
		if f.Size != int64(len(want)) {
			t.Errorf("fileDownloadInfo %s: size %d, want %d", name, f.Size, len(want))
		}
		// The JS client files each download under the snapshot of the last
		// commit that touched it (paths-info lastCommit), not of the head.
		if !strings.Contains(filepath.ToSlash(f.CachePath), "/models--alice--base/snapshots/"+lastCommit[name]+"/"+name) {
			t.Errorf("downloadFileToCacheDir %s: path %s is not in snapshot %s", name, f.CachePath, lastCommit[name])
		}
		got, err = os.ReadFile(f.CachePath)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("downloadFileToCacheDir %s: %d bytes (%v), want %d", name, len(got), err, len(want))
		}
		meta, _ := s.Stat(repo, "main", name)
		if !meta.LFS && strings.Trim(f.ETag, `"`) != meta.BlobID {
			t.Errorf("fileDownloadInfo %s: etag %s, want git sha1 %s", name, f.ETag, meta.BlobID)
		}
	}
	commits, _ := s.Commits(repo, "main")
	if len(res.Commits) != len(commits) {
		t.Fatalf("listCommits gave %d commits, the fake holds %d", len(res.Commits), len(commits))
	}
	for i, cm := range commits {
		if res.Commits[i].OID != cm.ID || res.Commits[i].Title != cm.Title {
			t.Errorf("commit %d: JS %s %q, fake %s %q", i, res.Commits[i].OID, res.Commits[i].Title, cm.ID, cm.Title)
		}
	}
	pages := 0
	for _, r := range s.Requests() {
		if strings.HasPrefix(r.Path, "/api/models/"+repo+"/commits/") {
			pages++
		}
	}
	if want := (len(commits) + 1) / 2; pages != want {
		t.Errorf("listCommits fetched %d pages, want %d (batch size 2)", pages, want)
	}
	nFiles := 0
	for _, e := range res.Tree {
		if e.Type != "file" {
			continue
		}
		nFiles++
		meta, err := s.Stat(repo, "main", e.Path)
		if err != nil || e.OID != meta.BlobID || e.Size != meta.Size || (meta.LFS && e.LFSOID != meta.SHA256) {
			t.Errorf("listFiles %s: %+v vs %+v (%v)", e.Path, e, meta, err)
		}
	}
	if all, _ := s.Files(repo, "main"); nFiles != len(all) {
		t.Errorf("listFiles gave %d files, the fake holds %d", nFiles, len(all))
	}
	if len(res.Models) != 2 || res.Models[0].Name != repo || res.Models[0].SHA != head || !res.Models[0].Private || res.Models[1].Name != owner+"/other" {
		t.Errorf("listModels by owner (default order: by id), private repo included: %+v", res.Models)
	}
	if !res.MissingIsNull {
		t.Errorf("fileDownloadInfo of a missing path did not return null (EntryNotFound)")
	}
	checkCDNNeverSawToken(t, s)

	// A pull request opened by hub.Client, read by the JS client at
	// refs/pr/1 (escaped in resolve URLs, raw slashes in the commits URL).
	proposal := []byte(`{"peft_type": "LORA", "r": 8}`)
	pr, err := c.Upload(context.Background(), repo, hub.CommitOptions{Message: "propose r=8", CreatePR: true,
		Files: []hub.FileOp{{Path: "adapter_config.json", Content: proposal}}})
	if err != nil || pr.PullRequestURL == "" {
		t.Fatalf("hub.Client.Upload with CreatePR: %+v, %v", pr, err)
	}
	env["REVISION"], env["OUT_DIR"], env["CACHE_DIR"] = "refs/pr/1", t.TempDir(), t.TempDir()
	var prRes downloadResult
	if out, err := runNode(t, node, "download.mjs", env, &prRes, "adapter_config.json"); err != nil {
		t.Fatalf("download.mjs at refs/pr/1: %v\n%s", err, out)
	}
	if got, err := os.ReadFile(filepath.Join(env["OUT_DIR"], "adapter_config.json")); err != nil || !bytes.Equal(got, proposal) {
		t.Errorf("refs/pr/1 adapter_config.json = %q (%v), want %q", got, err, proposal)
	}
	if len(prRes.Commits) != len(commits)+1 || prRes.Commits[0].OID != pr.OID || prRes.Commits[1].OID != head {
		t.Errorf("listCommits at refs/pr/1: %+v, want %s on top of %s", prRes.Commits, pr.OID, head)
	}
	if prRes.Info.SHA != pr.OID {
		t.Errorf("modelInfo at refs/pr/1: sha %s, want %s", prRes.Info.SHA, pr.OID)
	}
}
