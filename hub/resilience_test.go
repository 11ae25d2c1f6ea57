package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lorasync/lorasync/hub/hubtest"
)

// bigFile is an LFS file large enough to be cut several copy buffers in.
const bigFileSize = 5<<20 + 12345

func seedBig(t *testing.T, e *env) (head string, content []byte, oid string) {
	t.Helper()
	content = randBytes(7, bigFileSize)
	head = e.seed("big", map[string][]byte{"weights.bin": content})
	sum := sha256.Sum256(content)
	return head, content, hex.EncodeToString(sum[:])
}

// TestResumeAcrossRuns cuts a download mid-file with retries disabled, so
// the first Snapshot fails and leaves a partial .incomplete blob; a second
// client resumes it with a Range request, and the CDN serves every content
// byte exactly once in total.
func TestResumeAcrossRuns(t *testing.T) {
	e := newEnv(t, nil, func(o *Options) { o.MaxRetries = -1 })
	_, content, oid := seedBig(t, e)
	const cut = 2<<20 + 777
	e.srv.Inject(hubtest.Fault{Host: "cdn", Method: http.MethodGet, CutAfterBytes: cut, Times: 1})

	ctx := context.Background()
	if _, err := e.c.Snapshot(ctx, "alice/big", "main", SnapshotOptions{}); err == nil {
		t.Fatal("first snapshot succeeded despite the cut")
	} else if !IsRetryable(err) {
		t.Fatalf("cut download error %v should be retryable", err)
	}
	partial, _ := filepath.Glob(filepath.Join(e.cache, "models--alice--big", "blobs", oid+".*.incomplete"))
	if len(partial) != 1 {
		t.Fatalf("partial files: %v", partial)
	}
	if st, _ := os.Stat(partial[0]); st.Size() != cut {
		t.Fatalf("partial file has %d bytes, want %d", st.Size(), cut)
	}

	dir, err := e.client(nil).Snapshot(ctx, "alice/big", "main", SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "weights.bin"))
	if string(got) != string(content) {
		t.Fatal("resumed content differs")
	}
	if served := e.srv.ServedBytes(oid); served != bigFileSize {
		t.Errorf("CDN served %d content bytes in total, want %d (no refetch of finished bytes)", served, bigFileSize)
	}
	var ranges []string
	for _, r := range requestsTo(e.srv.Requests(), http.MethodGet, "") {
		if r.Host == "cdn" {
			ranges = append(ranges, r.Range)
		}
	}
	if len(ranges) != 2 || ranges[0] != "" || ranges[1] != "bytes=2097929-" {
		t.Errorf("CDN GET ranges = %q, want [\"\" \"bytes=2097929-\"]", ranges)
	}
	if left, _ := filepath.Glob(filepath.Join(e.cache, "models--alice--big", "blobs", "*.incomplete")); len(left) != 0 {
		t.Errorf("incomplete files left: %v", left)
	}
}

// TestResumeWithinRun: the same cut with retries on is healed inside one
// call, by resuming from the bytes already written.
func TestResumeWithinRun(t *testing.T) {
	e := newEnv(t, nil, nil)
	_, content, oid := seedBig(t, e)
	e.srv.Inject(hubtest.Fault{Host: "cdn", Method: http.MethodGet, CutAfterBytes: 1 << 20, Times: 2})
	p, err := e.c.DownloadFile(context.Background(), "alice/big", "main", "weights.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	if string(got) != string(content) {
		t.Fatal("content differs")
	}
	if served := e.srv.ServedBytes(oid); served != bigFileSize {
		t.Errorf("served %d bytes, want %d", served, bigFileSize)
	}
	if n := len(e.clock.Sleeps()); n != 2 {
		t.Errorf("%d backoff waits, want 2 (one per cut)", n)
	}
}

// TestCorruptCachedBlobRefetched flips a byte of a cached blob (same size);
// the next snapshot notices it and downloads the file again.
func TestCorruptCachedBlobRefetched(t *testing.T) {
	e := newEnv(t, nil, nil)
	head, content, oid := seedBig(t, e)
	ctx := context.Background()
	if _, err := e.c.Snapshot(ctx, "alice/big", "main", SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	blob := filepath.Join(e.cache, "models--alice--big", "blobs", oid)
	b, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/3] ^= 0x01
	if err := os.WriteFile(blob, b, 0o644); err != nil {
		t.Fatal(err)
	}
	e.srv.ResetRequests()
	dir, err := e.c.Snapshot(ctx, "alice/big", head, SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "weights.bin"))
	if string(got) != string(content) {
		t.Fatal("corrupted blob was not replaced")
	}
	if served := e.srv.ServedBytes(oid); served != bigFileSize {
		t.Errorf("refetch served %d bytes, want %d", served, bigFileSize)
	}
	if !strings.Contains(e.logs.String(), "failed verification") {
		t.Error("no log record about the failed verification")
	}
}

// TestCorruptServedContentRejected: the server sends the right number of
// wrong bytes; the download fails with ErrIntegrity and leaves neither the
// blob nor a partial file behind.
func TestCorruptServedContentRejected(t *testing.T) {
	e := newEnv(t, nil, nil)
	_, _, oid := seedBig(t, e)
	e.srv.Corrupt(oid, hubtest.FlipByte)
	_, err := e.c.Snapshot(context.Background(), "alice/big", "main", SnapshotOptions{})
	if !errors.Is(err, ErrIntegrity) || !IsPermanent(err) {
		t.Fatalf("err = %v, want permanent ErrIntegrity", err)
	}
	if !strings.Contains(err.Error(), "alice/big") || !strings.Contains(err.Error(), "weights.bin") {
		t.Errorf("error %q should name repo and path", err)
	}
	left, _ := filepath.Glob(filepath.Join(e.cache, "models--alice--big", "blobs", oid+"*"))
	if len(left) != 0 {
		t.Errorf("blobs left after integrity failure: %v", left)
	}
}

// TestRetries checks the backoff schedule and the server-requested waits.
func TestRetries(t *testing.T) {
	cases := []struct {
		name  string
		fault hubtest.Fault
		// want lists the expected waits; jittered ones may be up to 25% longer.
		want     []time.Duration
		jittered bool
		wantErr  error
	}{
		{"retry-after", hubtest.Fault{Status: 429, RetryAfter: "3", Times: 1}, []time.Duration{4 * time.Second}, false, nil},
		{"ratelimit", hubtest.Fault{Status: 429, RateLimit: `"api";r=0;t=55`, Times: 1}, []time.Duration{56 * time.Second}, false, nil},
		{"5xx", hubtest.Fault{Status: 503, Times: 2}, []time.Duration{time.Second, 2 * time.Second}, true, nil},
		{"502-then-504", hubtest.Fault{Status: 502, Times: 1}, []time.Duration{time.Second}, true, nil},
		{"network", hubtest.Fault{Times: 1}, []time.Duration{time.Second}, true, nil},
		{"exhausted", hubtest.Fault{Status: 500}, []time.Duration{1, 2, 4, 8, 8}, true, ErrUnavailable},
		{"not-retried", hubtest.Fault{Status: 404, ErrorCode: "RepoNotFound"}, nil, false, ErrRepoNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil, nil)
			e.seed("model", map[string][]byte{"a.txt": []byte("a")})
			f := tc.fault
			f.Host, f.PathPrefix = "hub", "/api/models/alice/model"
			e.srv.Inject(f)
			info, err := e.c.RepoInfo(context.Background(), "alice/model", "main")
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
			} else if err != nil || info.ID != "alice/model" {
				t.Fatalf("RepoInfo = %+v, %v", info, err)
			}
			got := e.clock.Sleeps()
			if len(got) != len(tc.want) {
				t.Fatalf("waits %v, want %v", got, tc.want)
			}
			for i, w := range tc.want {
				if w < time.Second {
					w *= time.Second
				}
				hi := w
				if tc.jittered {
					hi = w + time.Duration(float64(w)*backoffJitter)
				}
				if got[i] < w || got[i] > hi {
					t.Errorf("wait %d = %v, want in [%v, %v]", i, got[i], w, hi)
				}
			}
		})
	}
}

// TestPrivateRepo: without a token a private repo looks missing; with the
// owner's token it is visible; with an unknown token the Hub says so.
func TestPrivateRepo(t *testing.T) {
	e := newEnv(t, nil, nil)
	if err := e.srv.CreateRepo("alice/secret", true); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	anon := e.client(func(o *Options) { o.Token = "" })
	if _, err := anon.RepoInfo(ctx, "alice/secret", ""); !errors.Is(err, ErrRepoNotFound) {
		t.Errorf("anonymous RepoInfo: %v, want ErrRepoNotFound", err)
	}
	if _, err := anon.Snapshot(ctx, "alice/secret", "main", SnapshotOptions{}); !errors.Is(err, ErrRepoNotFound) {
		t.Errorf("anonymous Snapshot: %v, want ErrRepoNotFound", err)
	}
	if _, err := anon.DownloadFile(ctx, "alice/secret", "main", ".gitattributes"); !errors.Is(err, ErrRepoNotFound) {
		t.Errorf("anonymous DownloadFile: %v, want ErrRepoNotFound", err)
	}
	if info, err := e.c.RepoInfo(ctx, "alice/secret", ""); err != nil || !info.Private {
		t.Errorf("owner RepoInfo: %+v, %v", info, err)
	}
	bad := e.client(func(o *Options) { o.Token = "hf_unknown" })
	if _, err := bad.RepoInfo(ctx, "alice/secret", ""); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("unknown token: %v, want ErrUnauthorized", err)
	}
	if entries, err := os.ReadDir(e.cache); err == nil && len(entries) > 0 {
		t.Errorf("failed calls wrote to the cache: %v", entries)
	}
}

// TestTokenNeverLeaks runs failing and succeeding calls with debug logging
// and checks that the token appears in no log record and no error, and that
// the CDN never received an Authorization header.
func TestTokenNeverLeaks(t *testing.T) {
	e := newEnv(t, nil, nil)
	seedBig(t, e)
	ctx := context.Background()
	e.srv.Inject(hubtest.Fault{Host: "hub", Status: 503, Message: "echo " + testToken, Times: 1})
	e.srv.Inject(hubtest.Fault{Host: "cdn", CutAfterBytes: 1000, Times: 1})
	if _, err := e.c.Snapshot(ctx, "alice/big", "main", SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	var errs []error
	_, err := e.c.RepoInfo(ctx, "alice/nope", "")
	errs = append(errs, err)
	e.srv.Inject(hubtest.Fault{Host: "hub", Status: 500, Message: "server says " + testToken})
	_, err = e.c.RepoInfo(ctx, "alice/big", "")
	errs = append(errs, err)
	for _, err := range errs {
		if err == nil {
			t.Fatal("expected an error")
		}
		if strings.Contains(err.Error(), testToken) {
			t.Errorf("error leaks the token: %v", err)
		}
	}
	if strings.Contains(e.logs.String(), testToken) || strings.Contains(e.logs.String(), testToken[3:]) {
		t.Error("logs leak the token")
	}
	if !strings.Contains(e.logs.String(), "retrying") {
		t.Error("expected retry log records (test does not exercise logging)")
	}
	for _, r := range e.srv.Requests() {
		if r.Host == "cdn" && r.Auth {
			t.Errorf("CDN request %s %s carried Authorization", r.Method, r.Path)
		}
	}
}

// TestCancelMidDownload: cancelling the context while a file is in flight
// returns context.Canceled (neither retryable nor permanent), leaves no
// blob, and releases the blob lock so a later call completes.
func TestCancelMidDownload(t *testing.T) {
	e := newEnv(t, nil, nil)
	_, content, oid := seedBig(t, e)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	never := make(chan struct{})
	e.srv.Inject(hubtest.Fault{Host: "cdn", Method: http.MethodGet, Times: 1, Hold: never,
		Match: func(*http.Request) bool { cancel(); return true }})
	_, err := e.c.Snapshot(ctx, "alice/big", "main", SnapshotOptions{})
	if !errors.Is(err, context.Canceled) || IsRetryable(err) || IsPermanent(err) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, err := os.Stat(filepath.Join(e.cache, "models--alice--big", "blobs", oid)); !os.IsNotExist(err) {
		t.Errorf("blob exists after cancellation (%v)", err)
	}
	dir, err := e.c.Snapshot(context.Background(), "alice/big", "main", SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "weights.bin")); string(got) != string(content) {
		t.Error("content differs after cancel and retry")
	}
}

// TestBadPartialFileStartsOver: a leftover partial file that is not a prefix
// of the content is resumed, fails verification, and the download restarts
// from zero once, successfully.
func TestBadPartialFileStartsOver(t *testing.T) {
	e := newEnv(t, nil, nil)
	_, content, oid := seedBig(t, e)
	blobs := filepath.Join(e.cache, "models--alice--big", "blobs")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	const junk = 100_000
	if err := os.WriteFile(filepath.Join(blobs, oid+".incomplete"), randBytes(99, junk), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := e.c.DownloadFile(context.Background(), "alice/big", "main", "weights.bin")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != string(content) {
		t.Fatal("content differs")
	}
	if served, want := e.srv.ServedBytes(oid), int64(bigFileSize-junk+bigFileSize); served != want {
		t.Errorf("served %d bytes, want %d (rest after the junk, then everything)", served, want)
	}
	if left, _ := filepath.Glob(filepath.Join(blobs, "*.incomplete")); len(left) != 0 {
		t.Errorf("partial files left: %v", left)
	}
}
