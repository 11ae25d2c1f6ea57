package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const evilCommit = "0123456789abcdef0123456789abcdef01234567"

// hostileHub serves a repo whose tree listing contains path, plus one
// harmless file, and records every request it gets.
func hostileHub(t *testing.T, path string) (*httptest.Server, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		switch r.URL.Path {
		case "/api/models/evil/repo/revision/main":
			json.NewEncoder(w).Encode(map[string]any{"id": "evil/repo", "sha": evilCommit})
		case "/api/models/evil/repo/tree/" + evilCommit:
			json.NewEncoder(w).Encode([]map[string]any{
				{"type": "file", "path": "config.json", "oid": strings.Repeat("a", 40), "size": 2},
				{"type": "file", "path": path, "oid": strings.Repeat("b", 40), "size": 4},
			})
		default:
			http.Error(w, "unexpected", http.StatusTeapot)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

// TestUnsafeSiblingPathRefused: a listing naming a path with "..", an
// absolute path, a backslash or an empty segment is refused before anything
// at all is written, and no file is requested.
func TestUnsafeSiblingPathRefused(t *testing.T) {
	for _, bad := range []string{
		"../../../../etc/passwd", "sub/../../escape", "/etc/passwd", `..\..\win`, `a\b`,
		"a//b", "a/./b", "trailing/", ".", "..",
	} {
		t.Run(strconv.Quote(bad), func(t *testing.T) {
			srv, seen := hostileHub(t, bad)
			root := t.TempDir()
			cache := filepath.Join(root, "cache")
			c, err := New(Options{Endpoint: srv.URL, CacheDir: cache, Progress: ProgressOff, Clock: &fakeClock{}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Snapshot(context.Background(), "evil/repo", "main", SnapshotOptions{})
			if !errors.Is(err, ErrUnsafePath) || !IsPermanent(err) {
				t.Fatalf("err = %v, want permanent ErrUnsafePath", err)
			}
			if entries := listCache(t, root); len(entries) != 0 {
				t.Errorf("written before refusing: %v", entries)
			}
			for _, r := range seen() {
				if strings.Contains(r, "/resolve/") {
					t.Errorf("requested %s despite the unsafe listing", r)
				}
			}
		})
	}
}

// TestUnsafeCallerInput: repo ids, revisions and paths from the caller get
// the same treatment, without any request.
func TestUnsafeCallerInput(t *testing.T) {
	srv, seen := hostileHub(t, "x")
	c, err := New(Options{Endpoint: srv.URL, CacheDir: t.TempDir(), Progress: ProgressOff, Clock: &fakeClock{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct{ repo, rev, path string }{
		{"../evil", "main", "a"},
		{"evil/../../x", "main", "a"},
		{"evil--x/y", "main", "a"},
		{"evil/repo", "../../refs", "a"},
		{"evil/repo", "main", "../a"},
		{"evil/repo", "main", "/abs"},
	} {
		_, err := c.DownloadFile(ctx, tc.repo, tc.rev, tc.path)
		if err == nil || !(errors.Is(err, ErrUnsafePath) || errors.Is(err, ErrBadRequest)) {
			t.Errorf("DownloadFile(%q, %q, %q) = %v, want a refusal", tc.repo, tc.rev, tc.path, err)
		}
	}
	if n := len(seen()); n != 0 {
		t.Errorf("%d requests for refused input", n)
	}
}

// TestRangeIgnoredRestarts: a server that answers 200 to a Range request
// makes the client discard its partial file and start from zero, and the
// result is still correct.
func TestRangeIgnoredRestarts(t *testing.T) {
	content := randBytes(9, 3<<20)
	sum := sha256.Sum256(content)
	etag := hex.EncodeToString(sum[:])
	var mu sync.Mutex
	var ranges []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/o/r/resolve/main/w.bin" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("X-Repo-Commit", evilCommit)
		w.Header().Set("ETag", `"`+etag+`"`)
		w.Header().Set("Content-Length", strconv.Itoa(len(content)))
		if r.Method == http.MethodGet {
			mu.Lock()
			ranges = append(ranges, r.Header.Get("Range"))
			mu.Unlock()
			w.Write(content) // Range ignored on purpose
		}
	}))
	defer srv.Close()
	cache := t.TempDir()
	blobs := filepath.Join(cache, "models--o--r", "blobs")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(blobs, etag+".0badf00d.incomplete"), randBytes(10, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{Endpoint: srv.URL, CacheDir: cache, Progress: ProgressOff, Clock: &fakeClock{}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.DownloadFile(context.Background(), "o/r", "main", "w.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	if sha256.Sum256(got) != sum {
		t.Fatal("content differs after a restart")
	}
	if len(ranges) != 1 || ranges[0] != "bytes=1000-" {
		t.Errorf("GET ranges %q, want one resume attempt from byte 1000", ranges)
	}
}

// TestRedirectDropsAuthorization: the client's redirect policy removes the
// token when a redirect leaves the endpoint host (also for a mere port change).
func TestRedirectDropsAuthorization(t *testing.T) {
	var gotAuth string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		w.Write([]byte("{}"))
	}))
	defer other.Close()
	var firstAuth string
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		firstAuth = r.Header.Get("Authorization")
		http.Redirect(w, r, other.URL+"/x", http.StatusFound)
	}))
	defer hub.Close()
	c, err := New(Options{Endpoint: hub.URL, Token: testToken, CacheDir: t.TempDir(), Clock: &fakeClock{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.doJSON(context.Background(), &call{method: http.MethodGet, url: hub.URL + "/api/x", auth: true, op: "t"}, nil); err != nil {
		t.Fatal(err)
	}
	if firstAuth != "Bearer "+testToken {
		t.Errorf("endpoint did not get the token: %q", firstAuth)
	}
	if gotAuth != "" {
		t.Errorf("other host got Authorization %q", gotAuth)
	}
}

// TestStalledDownloadResumes: a server that stops sending mid-body (without
// closing) is abandoned after IdleTimeout and the download resumes from the
// bytes already written.
func TestStalledDownloadResumes(t *testing.T) {
	content := randBytes(11, 1<<20)
	sum := sha256.Sum256(content)
	etag := hex.EncodeToString(sum[:])
	var mu sync.Mutex
	var ranges []string
	release := make(chan struct{})
	defer close(release)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Repo-Commit", evilCommit)
		w.Header().Set("X-Linked-Etag", etag)
		w.Header().Set("X-Linked-Size", strconv.Itoa(len(content)))
		if r.Method == http.MethodHead {
			return
		}
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		first := len(ranges) == 1
		mu.Unlock()
		if first {
			w.Header().Set("Content-Length", strconv.Itoa(len(content)))
			w.Write(content[:300_000])
			w.(http.Flusher).Flush()
			select { // stall: neither more bytes nor a close
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		start, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(r.Header.Get("Range"), "bytes="), "-"))
		w.Header().Set("Content-Range", "bytes "+strconv.Itoa(start)+"-"+strconv.Itoa(len(content)-1)+"/"+strconv.Itoa(len(content)))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(content[start:])
	}))
	defer srv.Close()
	c, err := New(Options{Endpoint: srv.URL, CacheDir: t.TempDir(), Progress: ProgressOff, Clock: &fakeClock{},
		IdleTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.DownloadFile(context.Background(), "o/r", "main", "w.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	if sha256.Sum256(got) != sum {
		t.Fatal("content differs")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ranges) != 2 || ranges[0] != "" || ranges[1] != "bytes=300000-" {
		t.Errorf("GET ranges %q, want a resume from byte 300000", ranges)
	}
}

// roundTripFunc lets a test answer requests without a listener, so it can
// play hosts (and schemes) that httptest cannot.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestRedirectToPlainHTTPDropsAuthorization: an https endpoint that
// redirects to http on the same host (default ports, so the Host strings are
// equal) must not make the client send the token in clear text.
func TestRedirectToPlainHTTPDropsAuthorization(t *testing.T) {
	var mu sync.Mutex
	auth := map[string]string{}
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		auth[r.URL.String()] = r.Header.Get("Authorization")
		mu.Unlock()
		if r.URL.Scheme == "https" {
			return &http.Response{StatusCode: http.StatusFound, Request: r, Body: http.NoBody,
				Header: http.Header{"Location": {"http://hub.example/api/y"}}}, nil
		}
		return &http.Response{StatusCode: http.StatusOK, Request: r, Header: http.Header{},
			Body: io.NopCloser(strings.NewReader("{}"))}, nil
	})
	c, err := New(Options{Endpoint: "https://hub.example", Token: testToken, CacheDir: t.TempDir(),
		Clock: &fakeClock{}, HTTPClient: &http.Client{Transport: rt}})
	if err != nil {
		t.Fatal(err)
	}
	cl := &call{method: http.MethodGet, url: "https://hub.example/api/x", auth: true, op: "t"}
	if _, err := c.doJSON(context.Background(), cl, nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := auth["https://hub.example/api/x"]; got != "Bearer "+testToken {
		t.Errorf("endpoint did not get the token: %q", got)
	}
	if got, ok := auth["http://hub.example/api/y"]; !ok || got != "" {
		t.Errorf("plain-http redirect target: requested %v, Authorization %q; want requested without it", ok, got)
	}
}

// TestDownloadHonoursRetryAfter: a file server that keeps answering 503 with
// Retry-After is waited on for exactly the requested time (+1 s slack) on
// every retry, and the GET is sent MaxRetries+1 times in all: the download
// loop's own retries (for bodies cut mid-way) do not multiply the request
// retries.
func TestDownloadHonoursRetryAfter(t *testing.T) {
	content := []byte("retry-after body")
	sum := sha256.Sum256(content)
	etag := hex.EncodeToString(sum[:])
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w.Header().Set("X-Repo-Commit", evilCommit)
			w.Header().Set("X-Linked-Etag", `"`+etag+`"`)
			w.Header().Set("X-Linked-Size", strconv.Itoa(len(content)))
			w.Header().Set("Content-Length", strconv.Itoa(len(content)))
			return
		}
		gets.Add(1)
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	clock := &fakeClock{}
	c, err := New(Options{Endpoint: srv.URL, CacheDir: t.TempDir(), Progress: ProgressOff, Clock: clock, MaxRetries: 2})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.DownloadFile(context.Background(), "a/b", "main", "f.bin")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	sleeps := clock.Sleeps()
	if len(sleeps) == 0 {
		t.Fatal("no retry waits at all")
	}
	const maxRetries = 2
	if n := gets.Load(); n != maxRetries+1 {
		t.Errorf("%d GETs, want %d (one attempt and %d retries)", n, maxRetries+1, maxRetries)
	}
	const want = 7*time.Second + rateLimitSlack
	for i, d := range sleeps {
		if d != want {
			t.Errorf("wait %d = %v, want the server's Retry-After %v (all waits: %v)", i, d, want, sleeps)
		}
	}
}

// TestSlowBodyIsNotAStall: IdleTimeout is about a body that delivers no
// bytes, not about one slower than a buffer per IdleTimeout. The server
// trickles a byte every trickleGap, a 50th of the idle timeout (a margin
// no scheduler delay on a loaded machine comes near), so the download
// must finish on its one GET without being abandoned and resumed.
func TestSlowBodyIsNotAStall(t *testing.T) {
	const (
		idle       = time.Second
		trickleGap = idle / 50
		size       = 100 // bytes; the body takes 2 idle periods in all
	)
	content := randBytes(21, size)
	sum := sha256.Sum256(content)
	etag := hex.EncodeToString(sum[:])
	var mu sync.Mutex
	var ranges []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w.Header().Set("X-Repo-Commit", evilCommit)
			w.Header().Set("X-Linked-Etag", `"`+etag+`"`)
			w.Header().Set("X-Linked-Size", strconv.Itoa(size))
			w.Header().Set("Content-Length", strconv.Itoa(size))
			return
		}
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		mu.Unlock()
		start := 0
		if rg := r.Header.Get("Range"); rg != "" {
			start, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
			w.Header().Set("Content-Range", "bytes "+strconv.Itoa(start)+"-"+strconv.Itoa(size-1)+"/"+strconv.Itoa(size))
			w.Header().Set("Content-Length", strconv.Itoa(size-start))
			w.WriteHeader(http.StatusPartialContent)
		} else {
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		for i := start; i < size; i++ {
			if _, err := w.Write(content[i : i+1]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(trickleGap):
			}
		}
	}))
	defer srv.Close()
	c, err := New(Options{Endpoint: srv.URL, CacheDir: t.TempDir(), Progress: ProgressOff, Clock: &fakeClock{},
		IdleTimeout: idle})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.DownloadFile(context.Background(), "a/b", "main", "slow.bin")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); sha256.Sum256(got) != sum {
		t.Fatal("content differs")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ranges) != 1 {
		t.Errorf("GETs with ranges %q: a trickling body was abandoned as stalled", ranges)
	}
}
