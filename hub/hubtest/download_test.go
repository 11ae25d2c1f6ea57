package hubtest

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestResolveRegularFileRelativeRedirect(t *testing.T) {
	s, sha := newSeeded(t)
	content := []byte(`{"model_type":"llama","hidden_size":64}`)
	resp, _ := do(t, noRedirect, "HEAD", s.URL+"/alice/base/resolve/main/config.json", "", nil)
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("HEAD resolve: %d, want 307", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "/api/resolve-cache/models/alice/base/"+sha+"/config.json") {
		t.Fatalf("Location %q is not a relative resolve-cache path at commit %s", loc, sha)
	}
	if got := resp.Header.Get("X-Repo-Commit"); got != sha {
		t.Fatalf("X-Repo-Commit on the 307 = %q, want %s", got, sha)
	}
	resp2, _ := do(t, noRedirect, "HEAD", s.URL+loc, "", nil, "Accept-Encoding", "identity")
	if resp2.StatusCode != 200 || resp2.Header.Get("X-Repo-Commit") != sha {
		t.Fatalf("HEAD resolve-cache: %d commit %q", resp2.StatusCode, resp2.Header.Get("X-Repo-Commit"))
	}
	// git blob sha1 of the content, computed by hand: sha1("blob 39\0" + content).
	if want := `"` + gitBlobSHA1(content) + `"`; resp2.Header.Get("ETag") != want {
		t.Fatalf("ETag %q, want %s", resp2.Header.Get("ETag"), want)
	}
	if resp2.ContentLength != int64(len(content)) {
		t.Fatalf("Content-Length %d, want %d", resp2.ContentLength, len(content))
	}
	resp3, body := do(t, nil, "GET", s.URL+"/alice/base/resolve/main/config.json", "", nil, "Accept-Encoding", "identity")
	if resp3.StatusCode != 200 || !bytes.Equal(body, content) {
		t.Fatalf("GET following redirects: %d %q", resp3.StatusCode, body)
	}
}

func TestGitBlobSHA1KnownValue(t *testing.T) {
	// `printf 'hello\n' | git hash-object --stdin`
	if got := gitBlobSHA1([]byte("hello\n")); got != "ce013625030ba8dba906f756967f9e9ca394464a" {
		t.Fatalf("gitBlobSHA1 = %s", got)
	}
	// `git hash-object /dev/null`
	if got := gitBlobSHA1(nil); got != "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391" {
		t.Fatalf("gitBlobSHA1(empty) = %s", got)
	}
}

func TestResolveLFSRedirectsToOtherHost(t *testing.T) {
	s, sha := newSeeded(t)
	content := randomBytes(1, 3000)
	sum := sha256.Sum256(content)
	oid := hex.EncodeToString(sum[:])
	resp, _ := do(t, noRedirect, "HEAD", s.URL+"/alice/base/resolve/main/model.safetensors", "", nil)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("HEAD resolve LFS: %d, want 302", resp.StatusCode)
	}
	h := resp.Header
	if h.Get("X-Linked-Etag") != `"`+oid+`"` || h.Get("X-Linked-Size") != "3000" || h.Get("X-Repo-Commit") != sha || h.Get("ETag") != "" {
		t.Fatalf("LFS 302 headers: %v", h)
	}
	loc, err := url.Parse(h.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	hub, _ := url.Parse(s.URL)
	if loc.Hostname() == hub.Hostname() {
		t.Fatalf("CDN host %q must differ from the hub host %q", loc.Hostname(), hub.Hostname())
	}
	// The CDN refuses the hub token, like S3.
	resp2, _ := do(t, noRedirect, "GET", loc.String(), aliceToken, nil)
	if resp2.StatusCode != http.StatusBadRequest {
		t.Fatalf("CDN with Authorization: %d, want 400", resp2.StatusCode)
	}
	resp3, body := do(t, noRedirect, "GET", loc.String(), "", nil)
	if resp3.StatusCode != 200 || !bytes.Equal(body, content) {
		t.Fatalf("CDN GET: %d, %d bytes", resp3.StatusCode, len(body))
	}
	if et := resp3.Header.Get("ETag"); et == "" || strings.Contains(et, oid) {
		t.Fatalf("CDN ETag %q must be an MD5-like value, not the sha256", et)
	}
	// A tampered signature is refused.
	bad := *loc
	q := bad.Query()
	q.Set("X-Amz-Signature", "00")
	bad.RawQuery = q.Encode()
	if resp4, _ := do(t, noRedirect, "GET", bad.String(), "", nil); resp4.StatusCode != http.StatusForbidden {
		t.Fatalf("bad signature: %d, want 403", resp4.StatusCode)
	}
}

func TestRangeRequests(t *testing.T) {
	s, _ := newSeeded(t)
	content := randomBytes(1, 3000)
	url := s.URL + "/alice/base/resolve/main/model.safetensors"
	cases := []struct {
		rng        string
		status     int
		lo, hi     int // expected body content[lo:hi]
		contentRng string
	}{
		{"bytes=0-0", 206, 0, 1, "bytes 0-0/3000"},
		{"bytes=100-199", 206, 100, 200, "bytes 100-199/3000"},
		{"bytes=2990-", 206, 2990, 3000, "bytes 2990-2999/3000"},
		{"bytes=-10", 206, 2990, 3000, "bytes 2990-2999/3000"},
		{"", 200, 0, 3000, ""},
		{"bytes=3000-", 416, 0, 0, "bytes */3000"},
	}
	for _, c := range cases {
		var hdr []string
		if c.rng != "" {
			hdr = []string{"Range", c.rng}
		}
		resp, body := do(t, nil, "GET", url, "", nil, hdr...)
		if resp.StatusCode != c.status || resp.Header.Get("Content-Range") != c.contentRng {
			t.Fatalf("Range %q: %d %q, want %d %q", c.rng, resp.StatusCode, resp.Header.Get("Content-Range"), c.status, c.contentRng)
		}
		if c.status != 416 && !bytes.Equal(body, content[c.lo:c.hi]) {
			t.Fatalf("Range %q: wrong bytes (%d)", c.rng, len(body))
		}
	}
	// Regular files answer ranges too, after the relative redirect.
	resp, body := do(t, nil, "GET", s.URL+"/alice/base/resolve/main/config.json", "", nil, "Range", "bytes=2-5")
	if resp.StatusCode != 206 || string(body) != "mode" {
		t.Fatalf("regular file range: %d %q", resp.StatusCode, body)
	}
}

func TestGzipOnlyWhenAsked(t *testing.T) {
	s, _ := newSeeded(t)
	// DisableCompression: the transport neither asks for nor decodes gzip itself.
	raw := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	resp, body := do(t, raw, "GET", s.URL+"/alice/base/resolve/main/config.json", "", nil, "Accept-Encoding", "gzip")
	if resp.Header.Get("Content-Encoding") != "gzip" || resp.ContentLength != -1 || len(resp.TransferEncoding) == 0 {
		t.Fatalf("gzip answer: encoding %q length %d transfer %v", resp.Header.Get("Content-Encoding"), resp.ContentLength, resp.TransferEncoding)
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil || string(plain) != `{"model_type":"llama","hidden_size":64}` {
		t.Fatalf("gunzipped %q, %v", plain, err)
	}
	resp2, body2 := do(t, raw, "GET", s.URL+"/alice/base/resolve/main/config.json", "", nil)
	if resp2.Header.Get("Content-Encoding") != "" || resp2.ContentLength != int64(len(body2)) {
		t.Fatalf("plain answer: encoding %q length %d", resp2.Header.Get("Content-Encoding"), resp2.ContentLength)
	}
	// LFS content is never gzipped.
	resp3, _ := do(t, raw, "GET", s.URL+"/alice/base/resolve/main/model.safetensors", "", nil, "Accept-Encoding", "gzip")
	if resp3.Header.Get("Content-Encoding") != "" {
		t.Fatalf("LFS file gzipped")
	}
}

func TestResolveErrors(t *testing.T) {
	s, sha := newSeeded(t)
	if err := s.CreateRepo("alice/secret", true); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, path, token string
		status            int
		code              string
	}{
		{"missing repo anonymous", "/alice/nope/resolve/main/x", "", 401, "RepoNotFound"},
		{"missing repo with token", "/alice/nope/resolve/main/x", bobToken, 404, "RepoNotFound"},
		{"private repo other user", "/alice/secret/resolve/main/.gitattributes", bobToken, 404, "RepoNotFound"},
		{"private repo anonymous", "/alice/secret/resolve/main/.gitattributes", "", 401, "RepoNotFound"},
		{"missing revision", "/alice/base/resolve/v9/config.json", "", 404, "RevisionNotFound"},
		{"missing file", "/alice/base/resolve/main/nope.json", "", 404, "EntryNotFound"},
		{"unknown token", "/alice/base/resolve/main/config.json", "hf_unknown", 401, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := do(t, noRedirect, "GET", s.URL+c.path, c.token, nil)
			wantError(t, resp, body, c.status, c.code)
		})
	}
	resp, body := do(t, noRedirect, "GET", s.URL+"/alice/base/resolve/main/nope.json", "", nil)
	if resp.Header.Get("X-Repo-Commit") != sha {
		t.Fatalf("EntryNotFound must carry X-Repo-Commit (for .no_exist markers): %q %s", resp.Header.Get("X-Repo-Commit"), body)
	}
	resp, body = do(t, noRedirect, "GET", s.URL+"/alice/base/resolve/main/config.json", "hf_unknown", nil)
	if !strings.Contains(string(body), "Invalid credentials in Authorization header") {
		t.Fatalf("unknown token: %d %s", resp.StatusCode, body)
	}
	// The owner sees the private repo.
	if resp, _ := do(t, noRedirect, "GET", s.URL+"/alice/secret/resolve/main/.gitattributes", aliceToken, nil); resp.StatusCode != 307 {
		t.Fatalf("owner on private repo: %d", resp.StatusCode)
	}
}

func TestResolveRevisionForms(t *testing.T) {
	s, first := newSeeded(t)
	second, err := s.Commit("alice/base", "main", map[string][]byte{"config.json": []byte(`{"v":2}`)}, "v2")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateBranch("alice/base", "dev/x", first); err != nil {
		t.Fatal(err)
	}
	for rev, want := range map[string]string{
		"main": second, first: first, url.PathEscape("dev/x"): first, "refs%2Fheads%2Fmain": second,
	} {
		resp, _ := do(t, noRedirect, "HEAD", s.URL+"/alice/base/resolve/"+rev+"/config.json", "", nil)
		if resp.StatusCode != 307 || resp.Header.Get("X-Repo-Commit") != want {
			t.Fatalf("rev %s: %d commit %q, want %s", rev, resp.StatusCode, resp.Header.Get("X-Repo-Commit"), want)
		}
	}
}

func TestGatedRepo(t *testing.T) {
	s, _ := newSeeded(t)
	if err := s.SetGated("alice/base", "manual"); err != nil {
		t.Fatal(err)
	}
	u := s.URL + "/alice/base/resolve/main/config.json"
	resp, body := do(t, noRedirect, "GET", u, bobToken, nil)
	wantError(t, resp, body, 403, "GatedRepo")
	resp, body = do(t, noRedirect, "GET", u, "", nil)
	wantError(t, resp, body, 401, "GatedRepo")
	if resp, _ := do(t, noRedirect, "GET", s.URL+"/alice/base/resolve/main/README.md", "", nil); resp.StatusCode != 307 {
		t.Fatalf("README of a gated repo must stay readable: %d", resp.StatusCode)
	}
	if err := s.SetGated("alice/base", "manual", "bob"); err != nil {
		t.Fatal(err)
	}
	if resp, _ := do(t, noRedirect, "GET", u, bobToken, nil); resp.StatusCode != 307 {
		t.Fatalf("granted user: %d", resp.StatusCode)
	}
}

func TestWithAddrs(t *testing.T) {
	// Reserve two free ports, release them, and ask the fake to bind them.
	var addrs []string
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, l.Addr().String())
		l.Close()
	}
	s := NewTB(t, WithAddrs(addrs[0], addrs[1]))
	_, cdnPort, _ := net.SplitHostPort(addrs[1])
	if s.URL != "http://"+addrs[0] || s.CDNURL != "http://localhost:"+cdnPort {
		t.Fatalf("URL %s CDNURL %s for addrs %v", s.URL, s.CDNURL, addrs)
	}
	if resp, _ := do(t, nil, "GET", s.URL+"/api/models", "", nil); resp.StatusCode != 200 {
		t.Fatalf("listing on a fixed address: %d", resp.StatusCode)
	}
}

func TestRawServesGitBlobs(t *testing.T) {
	s, sha := newSeeded(t)
	resp, body := do(t, noRedirect, "GET", s.URL+"/alice/base/raw/main/model.safetensors", "", nil)
	ptr := lfsPointer(sha256Hex(randomBytes(1, 3000)), 3000)
	if resp.StatusCode != 200 || string(body) != string(ptr) || resp.Header.Get("X-Repo-Commit") != sha {
		t.Fatalf("raw LFS file: %d %q", resp.StatusCode, body)
	}
	if resp.Header.Get("ETag") != `"`+gitBlobSHA1(ptr)+`"` {
		t.Fatalf("raw ETag %q, want the pointer's git sha1", resp.Header.Get("ETag"))
	}
	resp, body = do(t, noRedirect, "HEAD", s.URL+"/alice/base/raw/main/nope", "", nil)
	if resp.StatusCode != 404 {
		t.Fatalf("raw HEAD of a missing file: %d %s", resp.StatusCode, body)
	}
}

// fakeClock is a settable clock safe for the server's goroutines.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestPresignedURLsExpire(t *testing.T) {
	clock := &fakeClock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	s, _ := newSeeded(t, WithClock(clock.Now))
	resp, _ := do(t, noRedirect, "GET", s.URL+"/alice/base/resolve/main/model.safetensors", "", nil)
	loc := resp.Header.Get("Location")
	clock.Advance(presignTTL - time.Second)
	if resp, _ := do(t, noRedirect, "GET", loc, "", nil); resp.StatusCode != 200 {
		t.Fatalf("URL within its lifetime: %d", resp.StatusCode)
	}
	clock.Advance(2 * time.Second)
	resp, body := do(t, noRedirect, "GET", loc, "", nil)
	if resp.StatusCode != 403 || !strings.Contains(string(body), "Request has expired") {
		t.Fatalf("expired URL: %d %s, want 403 Request has expired", resp.StatusCode, body)
	}
	// Tampering with a signed parameter breaks the signature.
	u, _ := url.Parse(loc)
	q := u.Query()
	q.Set("response-content-disposition", "attachment")
	u.RawQuery = q.Encode()
	if resp, _ := do(t, noRedirect, "GET", u.String(), "", nil); resp.StatusCode != 403 {
		t.Fatalf("tampered URL: %d, want 403", resp.StatusCode)
	}
}
