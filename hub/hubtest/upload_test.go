package hubtest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestCreateRepoEndpoint(t *testing.T) {
	s, _ := newSeeded(t)
	u := s.URL + "/api/repos/create"
	resp, body := postJSON(t, u, "", map[string]any{"name": "x", "type": "model"})
	if resp.StatusCode != 401 {
		t.Fatalf("anonymous create: %d %s", resp.StatusCode, body)
	}
	resp, body = postJSON(t, u, aliceToken, map[string]any{"name": "new", "type": "model", "private": true})
	if resp.StatusCode != 200 {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	var out struct{ URL, Name, ID string }
	if err := json.Unmarshal(body, &out); err != nil || out.URL != s.URL+"/alice/new" || out.Name != "alice/new" || len(out.ID) != 24 {
		t.Fatalf("create answer %s (%v)", body, err)
	}
	if resp, _ := postJSON(t, u, aliceToken, map[string]any{"name": "new", "type": "model"}); resp.StatusCode != 409 {
		t.Fatalf("second create: %d, want 409", resp.StatusCode)
	}
	if resp, _ := postJSON(t, u, bobToken, map[string]any{"name": "y", "organization": "acme"}); resp.StatusCode != 403 {
		t.Fatalf("bob in acme: %d, want 403", resp.StatusCode)
	}
	if resp, _ := postJSON(t, u, aliceToken, map[string]any{"name": "y", "organization": "acme", "visibility": "private"}); resp.StatusCode != 200 {
		t.Fatalf("alice in acme: %d", resp.StatusCode)
	}
	// The new repo is private: bob cannot see it, alice can, and it starts
	// with the Hub's initial commit holding .gitattributes.
	files, err := s.Files("alice/new", "main")
	if err != nil || len(files) != 1 || files[0] != ".gitattributes" {
		t.Fatalf("new repo files %v, %v", files, err)
	}
	resp, body = do(t, nil, "GET", s.URL+"/api/models/alice/new", bobToken, nil)
	wantError(t, resp, body, 404, "RepoNotFound")
	if resp, _ := do(t, nil, "GET", s.URL+"/api/models/acme/y", aliceToken, nil); resp.StatusCode != 200 {
		t.Fatalf("org member reads org private repo: %d", resp.StatusCode)
	}
	// Deletion: only by a writer; then the repo is gone.
	del := func(token string) int {
		resp, _ := do(t, nil, "DELETE", s.URL+"/api/repos/delete", token, []byte(`{"name":"y","organization":"acme","type":"model"}`))
		return resp.StatusCode
	}
	if st := del(bobToken); st != 404 {
		t.Fatalf("bob deletes an acme private repo he cannot see: %d, want 404", st)
	}
	if st := del(aliceToken); st != 200 {
		t.Fatalf("delete: %d", st)
	}
	if st := del(aliceToken); st != 404 {
		t.Fatalf("second delete: %d, want 404", st)
	}
}

func TestBranchEndpoint(t *testing.T) {
	s, sha := newSeeded(t)
	u := s.URL + "/api/models/alice/base/branch/"
	if resp, body := postJSON(t, u+"dev", aliceToken, map[string]any{}); resp.StatusCode != 200 {
		t.Fatalf("create branch: %d %s", resp.StatusCode, body)
	}
	if resp, _ := postJSON(t, u+"dev", aliceToken, map[string]any{}); resp.StatusCode != 409 {
		t.Fatalf("existing branch: %d, want 409", resp.StatusCode)
	}
	if resp, _ := postJSON(t, u+"other", bobToken, map[string]any{}); resp.StatusCode != 403 {
		t.Fatalf("bob branches alice's repo: %d, want 403", resp.StatusCode)
	}
	resp, body := postJSON(t, u+"old", aliceToken, map[string]any{"startingPoint": "nope"})
	wantError(t, resp, body, 404, "RevisionNotFound")
	if head, err := s.Head("alice/base", "dev"); err != nil || head != sha {
		t.Fatalf("dev head %s, %v, want %s", head, err, sha)
	}
}

// uploadLFS uploads content through the batch API, checking the S3 rules
// and the verify action on the way.
func uploadLFS(t *testing.T, s *Server, repo string, content []byte) {
	t.Helper()
	oid := sha256Hex(content)
	resp, body := postJSON(t, s.URL+"/"+repo+".git/info/lfs/objects/batch", aliceToken, map[string]any{
		"operation": "upload", "transfers": []string{"basic", "multipart"}, "hash_algo": "sha256",
		"objects": []map[string]any{{"oid": oid, "size": len(content)}},
	}, "Accept", lfsMediaType)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != lfsMediaType {
		t.Fatalf("batch: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var out struct {
		Transfer string
		Objects  []lfsObjectOut
	}
	if err := json.Unmarshal(body, &out); err != nil || len(out.Objects) != 1 || out.Transfer != "basic" {
		t.Fatalf("batch answer %s (%v)", body, err)
	}
	up := out.Objects[0].Actions["upload"]
	verify := out.Objects[0].Actions["verify"]
	href, _ := url.Parse(up.Href)
	if href.Host != strings.TrimPrefix(s.CDNURL, "http://") {
		t.Fatalf("upload href %s is not on the CDN host", up.Href)
	}
	// With the hub token, S3 refuses; chunked bodies are refused too.
	if resp, _ := do(t, nil, "PUT", up.Href, aliceToken, content); resp.StatusCode != 400 {
		t.Fatalf("PUT with Authorization: %d, want 400", resp.StatusCode)
	}
	req, _ := http.NewRequest("PUT", up.Href, io.MultiReader(bytes.NewReader(content)))
	req.ContentLength = -1
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != 501 {
		t.Fatalf("chunked PUT: %d, want 501", resp2.StatusCode)
	}
	// Verify before the upload fails; after it succeeds.
	if resp, _ := postJSON(t, verify.Href, aliceToken, map[string]any{"oid": oid, "size": len(content)}); resp.StatusCode != 404 {
		t.Fatalf("verify before upload: %d, want 404", resp.StatusCode)
	}
	if resp, body := do(t, nil, "PUT", up.Href, "", content); resp.StatusCode != 200 || resp.Header.Get("ETag") == "" {
		t.Fatalf("PUT: %d %s", resp.StatusCode, body)
	}
	if resp, body := postJSON(t, verify.Href, aliceToken, map[string]any{"oid": oid, "size": len(content)}); resp.StatusCode != 200 {
		t.Fatalf("verify: %d %s", resp.StatusCode, body)
	}
}

func TestUploadFlowBasic(t *testing.T) {
	s, base := newSeeded(t)
	weights := randomBytes(7, 5000)
	readme := []byte("---\nbase_model: alice/base\n---\n")
	resp, body := postJSON(t, s.URL+"/api/models/alice/base/preupload/main", aliceToken, map[string]any{
		"files": []map[string]any{
			{"path": "adapter_model.safetensors", "size": len(weights), "sample": base64.StdEncoding.EncodeToString(weights[:512])},
			{"path": "README.md", "size": len(readme), "sample": base64.StdEncoding.EncodeToString(readme)},
			{"path": "big.txt", "size": DefaultLFSThreshold, "sample": ""},
		},
	})
	if resp.StatusCode != 200 {
		t.Fatalf("preupload: %d %s", resp.StatusCode, body)
	}
	var pre struct {
		Files []struct{ Path, UploadMode, OID string }
	}
	json.Unmarshal(body, &pre)
	modes := map[string]string{}
	for _, f := range pre.Files {
		modes[f.Path] = f.UploadMode
	}
	if modes["adapter_model.safetensors"] != "lfs" || modes["README.md"] != "regular" || modes["big.txt"] != "lfs" {
		t.Fatalf("upload modes %v", modes)
	}
	if pre.Files[1].OID == "" {
		t.Fatalf("README.md exists at main: preupload must return its oid")
	}
	uploadLFS(t, s, "alice/base", weights)
	payload := ndjson(
		map[string]any{"key": "header", "value": map[string]any{"summary": "add adapter", "description": "details", "parentCommit": base}},
		map[string]any{"key": "lfsFile", "value": map[string]any{"path": "adapter_model.safetensors", "algo": "sha256", "oid": sha256Hex(weights), "size": len(weights)}},
		map[string]any{"key": "file", "value": map[string]any{"path": "README.md", "content": base64.StdEncoding.EncodeToString(readme), "encoding": "base64"}},
		map[string]any{"key": "deletedFile", "value": map[string]any{"path": "config.json"}},
	)
	resp, body = do(t, nil, "POST", s.URL+"/api/models/alice/base/commit/main", aliceToken, payload, "Content-Type", "application/x-ndjson")
	if resp.StatusCode != 200 {
		t.Fatalf("commit: %d %s", resp.StatusCode, body)
	}
	var out struct{ CommitOid, CommitURL string }
	json.Unmarshal(body, &out)
	if head, _ := s.Head("alice/base", "main"); head != out.CommitOid {
		t.Fatalf("main %s, commit answered %s", head, out.CommitOid)
	}
	got, err := s.File("alice/base", "main", "adapter_model.safetensors")
	if err != nil || !bytes.Equal(got, weights) {
		t.Fatalf("stored adapter differs (%v)", err)
	}
	if meta, _ := s.Stat("alice/base", "main", "adapter_model.safetensors"); !meta.LFS {
		t.Fatalf("adapter not stored with LFS")
	}
	if _, err := s.File("alice/base", "main", "config.json"); !errors.Is(err, ErrEntryNotFound) {
		t.Fatalf("config.json not deleted: %v", err)
	}
	commits, _ := s.Commits("alice/base", "main")
	if commits[0].Title != "add adapter" || commits[0].Message != "add adapter\n\ndetails" || commits[0].Author != "alice" || commits[0].Parents[0] != base {
		t.Fatalf("commit record %+v", commits[0])
	}
	// A second batch for the same object needs no upload action.
	resp, body = postJSON(t, s.URL+"/alice/base.git/info/lfs/objects/batch", aliceToken, map[string]any{
		"operation": "upload", "transfers": []string{"basic"}, "objects": []map[string]any{{"oid": sha256Hex(weights), "size": len(weights)}},
	})
	if resp.StatusCode != 200 || strings.Contains(string(body), "actions") {
		t.Fatalf("batch for a stored object: %d %s", resp.StatusCode, body)
	}
}

func TestCommitConflictsAndErrors(t *testing.T) {
	s, base := newSeeded(t)
	commit := func(token, rev, query string, lines ...map[string]any) (*http.Response, []byte) {
		return do(t, nil, "POST", s.URL+"/api/models/alice/base/commit/"+rev+query, token, ndjson(lines...), "Content-Type", "application/x-ndjson")
	}
	hdr := func(parent string) map[string]any {
		return map[string]any{"key": "header", "value": map[string]any{"summary": "s", "parentCommit": parent}}
	}
	file := map[string]any{"key": "file", "value": map[string]any{"path": "a.txt", "content": "YQ==", "encoding": "base64"}}
	if resp, body := commit(aliceToken, "main", "", hdr(base), file); resp.StatusCode != 200 {
		t.Fatalf("first commit: %d %s", resp.StatusCode, body)
	}
	// main moved: the same parent is now stale.
	if resp, body := commit(aliceToken, "main", "", hdr(base), file); resp.StatusCode != http.StatusPreconditionFailed {
		t.Fatalf("stale parentCommit: %d %s, want 412", resp.StatusCode, body)
	}
	missing := map[string]any{"key": "lfsFile", "value": map[string]any{"path": "w.bin", "algo": "sha256", "oid": strings.Repeat("ab", 32), "size": 10}}
	if resp, body := commit(aliceToken, "main", "", hdr(""), missing); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("lfsFile never uploaded: %d %s, want 422", resp.StatusCode, body)
	}
	if resp, _ := commit(bobToken, "main", "", hdr(""), file); resp.StatusCode != 403 {
		t.Fatalf("bob commits to alice's repo: %d, want 403", resp.StatusCode)
	}
	if resp, _ := commit("", "main", "", hdr(""), file); resp.StatusCode != 401 {
		t.Fatalf("anonymous commit: %d, want 401", resp.StatusCode)
	}
	if resp, _ := commit(aliceToken, "main", "", file); resp.StatusCode != 400 {
		t.Fatalf("commit without header: %d, want 400", resp.StatusCode)
	}
	del := map[string]any{"key": "deletedFile", "value": map[string]any{"path": "nope"}}
	resp, body := commit(aliceToken, "main", "", hdr(""), del)
	wantError(t, resp, body, 404, "EntryNotFound")
	resp, body = commit(aliceToken, "nobranch", "", hdr(""), file)
	wantError(t, resp, body, 404, "RevisionNotFound")
	if resp, _ := commit(aliceToken, base, "", hdr(""), file); resp.StatusCode != 400 {
		t.Fatalf("commit onto a commit id: %d, want 400", resp.StatusCode)
	}
	conflict := map[string]any{"key": "file", "value": map[string]any{"path": "config.json/inner", "content": "", "encoding": "base64"}}
	if resp, body := commit(aliceToken, "main", "", hdr(""), conflict); resp.StatusCode != 400 || !strings.Contains(string(body), "both a file and a directory") {
		t.Fatalf("file/directory conflict: %d %s, want 400", resp.StatusCode, body)
	}
	bad := map[string]any{"key": "file", "value": map[string]any{"path": "../x", "content": "", "encoding": "base64"}}
	if resp, _ := commit(aliceToken, "main", "", hdr(""), bad); resp.StatusCode != 400 {
		t.Fatalf("path escaping the repo: %d, want 400", resp.StatusCode)
	}
}

func TestCommitCreatePR(t *testing.T) {
	s, base := newSeeded(t)
	lines := ndjson(
		map[string]any{"key": "header", "value": map[string]any{"summary": "propose"}},
		map[string]any{"key": "file", "value": map[string]any{"path": "p.txt", "content": "cA==", "encoding": "base64"}},
	)
	resp, body := do(t, nil, "POST", s.URL+"/api/models/alice/base/commit/main?create_pr=1", aliceToken, lines, "Content-Type", "application/x-ndjson")
	if resp.StatusCode != 200 {
		t.Fatalf("create_pr commit: %d %s", resp.StatusCode, body)
	}
	var out struct{ CommitOid, PullRequestURL string }
	json.Unmarshal(body, &out)
	if out.PullRequestURL != s.URL+"/alice/base/discussions/1" {
		t.Fatalf("pullRequestUrl %q", out.PullRequestURL)
	}
	if head, _ := s.Head("alice/base", "main"); head != base {
		t.Fatalf("main moved by a PR commit")
	}
	if head, _ := s.Head("alice/base", "refs/pr/1"); head != out.CommitOid {
		t.Fatalf("refs/pr/1 = %s, want %s", head, out.CommitOid)
	}
	resp, _ = do(t, noRedirect, "HEAD", s.URL+"/alice/base/resolve/refs%2Fpr%2F1/p.txt", "", nil)
	if resp.StatusCode != 307 || resp.Header.Get("X-Repo-Commit") != out.CommitOid {
		t.Fatalf("resolve on refs/pr/1: %d %q", resp.StatusCode, resp.Header.Get("X-Repo-Commit"))
	}
}

func TestMultipartUpload(t *testing.T) {
	s, _ := newSeeded(t, WithMultipartChunkSize(1000))
	content := randomBytes(9, 2500)
	oid := sha256Hex(content)
	resp, body := postJSON(t, s.URL+"/alice/base.git/info/lfs/objects/batch", aliceToken, map[string]any{
		"operation": "upload", "transfers": []string{"basic", "multipart"}, "hash_algo": "sha_256",
		"objects": []map[string]any{{"oid": oid, "size": len(content)}},
	})
	var out struct {
		Transfer string
		Objects  []lfsObjectOut
	}
	if err := json.Unmarshal(body, &out); err != nil || resp.StatusCode != 200 || out.Transfer != "multipart" {
		t.Fatalf("batch: %d %s", resp.StatusCode, body)
	}
	up := out.Objects[0].Actions["upload"]
	if up.Header["chunk_size"] != "1000" || len(up.Header) != 4 {
		t.Fatalf("multipart header %v: want chunk_size and 3 parts", up.Header)
	}
	type part struct {
		PartNumber int    `json:"partNumber"`
		ETag       string `json:"etag"`
	}
	var parts []part
	for i, key := range []string{"00001", "00002", "00003"} {
		chunk := content[i*1000 : min((i+1)*1000, len(content))]
		resp, _ := do(t, nil, "PUT", up.Header[key], "", chunk)
		if resp.StatusCode != 200 || resp.Header.Get("ETag") == "" {
			t.Fatalf("part %s: %d", key, resp.StatusCode)
		}
		parts = append(parts, part{i + 1, resp.Header.Get("ETag")})
	}
	wrong := append([]part(nil), parts...)
	wrong[1].ETag = `"deadbeef"`
	if resp, _ := postJSON(t, up.Href, "", map[string]any{"oid": oid, "parts": wrong}); resp.StatusCode != 400 {
		t.Fatalf("completion with a wrong etag: %d, want 400", resp.StatusCode)
	}
	if resp, body := postJSON(t, up.Href, "", map[string]any{"oid": oid, "parts": parts}); resp.StatusCode != 200 {
		t.Fatalf("completion: %d %s", resp.StatusCode, body)
	}
	sha, err := func() (string, error) {
		resp, body := do(t, nil, "POST", s.URL+"/api/models/alice/base/commit/main", aliceToken, ndjson(
			map[string]any{"key": "header", "value": map[string]any{"summary": "big"}},
			map[string]any{"key": "lfsFile", "value": map[string]any{"path": "big.bin", "algo": "sha256", "oid": oid, "size": len(content)}},
		), "Content-Type", "application/x-ndjson")
		if resp.StatusCode != 200 {
			return "", errors.New(string(body))
		}
		var c struct{ CommitOid string }
		return c.CommitOid, json.Unmarshal(body, &c)
	}()
	if err != nil || sha == "" {
		t.Fatalf("commit of the multipart object: %v", err)
	}
	if got, _ := s.File("alice/base", "main", "big.bin"); !bytes.Equal(got, content) {
		t.Fatalf("assembled object differs")
	}
}

func TestTagEndpoint(t *testing.T) {
	s, sha := newSeeded(t)
	u := s.URL + "/api/models/alice/base/tag/"
	if resp, body := postJSON(t, u+"main", aliceToken, map[string]any{"tag": "v1.0", "message": "first"}); resp.StatusCode != 200 {
		t.Fatalf("create tag: %d %s", resp.StatusCode, body)
	}
	if head, err := s.Head("alice/base", "refs/tags/v1.0"); err != nil || head != sha {
		t.Fatalf("tag v1.0 -> %s (%v), want %s", head, err, sha)
	}
	if resp, _ := postJSON(t, u+"main", aliceToken, map[string]any{"tag": "v1.0"}); resp.StatusCode != 409 {
		t.Fatalf("existing tag: %d, want 409", resp.StatusCode)
	}
	if resp, _ := do(t, nil, "DELETE", u+"v1.0", aliceToken, nil); resp.StatusCode != 200 {
		t.Fatalf("delete tag: %d", resp.StatusCode)
	}
	if _, err := s.Head("alice/base", "v1.0"); !errors.Is(err, ErrRevNotFound) {
		t.Fatalf("deleted tag still resolves: %v", err)
	}
}
