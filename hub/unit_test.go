package hub

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFnmatch: cases worked by hand from Python's fnmatch.fnmatchcase
// semantics ("*" crosses "/", classes, negation, literal "[").
func TestFnmatch(t *testing.T) {
	cases := []struct {
		pattern, name string
		want          bool
	}{
		{"*.json", "config.json", true},
		{"*.json", "sub/config.json", true}, // "*" matches "/" in fnmatch
		{"*.json", "config.jsonl", false},
		{"sub/*", "sub/a/b.txt", true},
		{"sub/*", "other/a.txt", false},
		{"?.txt", "a.txt", true},
		{"?.txt", "ab.txt", false},
		{"model-0000[1-3]-of-*.safetensors", "model-00002-of-00004.safetensors", true},
		{"model-0000[1-3]-of-*.safetensors", "model-00004-of-00004.safetensors", false},
		{"[!a]*", "b", true},
		{"[!a]*", "a", false},
		{"[]]", "]", true},
		{"[a", "[a", true}, // unterminated class is a literal "["
		{"*", "", true},
		{"", "", true},
		{"", "a", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"**", "any/thing", true},
	}
	for _, tc := range cases {
		if got := fnmatch(tc.pattern, tc.name); got != tc.want {
			t.Errorf("fnmatch(%q, %q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
	// Pattern normalisation: a trailing "/" means the directory's contents;
	// backslashes are separators.
	if !wanted("sub/x/y", []string{"sub/"}, nil) || wanted("subx", []string{"sub/"}, nil) {
		t.Error(`"sub/" should select exactly the files under sub/`)
	}
	if !wanted(`a/b.txt`, []string{`a\*.txt`}, nil) {
		t.Error("backslash patterns should be normalised")
	}
	if wanted("a.bin", []string{"*"}, []string{"*.bin"}) || !wanted("a.txt", nil, []string{"*.bin"}) {
		t.Error("exclude should win over include")
	}
}

func TestCheckRelPath(t *testing.T) {
	good := []string{"a", "a/b/c.json", ".gitattributes", "a..b", "...", "dir/.hidden"}
	bad := []string{"", "/a", "a/../b", "..", ".", "./a", "a/./b", "a//b", "a/", `a\b`, "C:/x", "a\x00b"}
	for _, p := range good {
		if err := checkRelPath(p); err != nil {
			t.Errorf("checkRelPath(%q) = %v, want ok", p, err)
		}
	}
	for _, p := range bad {
		if err := checkRelPath(p); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("checkRelPath(%q) = %v, want ErrUnsafePath", p, err)
		}
	}
	root := t.TempDir()
	if _, err := within(root, "a/b"); err != nil {
		t.Error(err)
	}
	if _, err := within(root, "a/../../x"); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("within escaped: %v", err)
	}
}

func TestRepoIDs(t *testing.T) {
	for _, id := range []string{"gpt2", "alice/model", "Org_1/My-Model.v2"} {
		if err := checkRepoID(id); err != nil {
			t.Errorf("checkRepoID(%q) = %v", id, err)
		}
	}
	for _, id := range []string{"", "a/b/c", "../x", "a/..", "a--b/c", "a/b c", ".hidden/x", "a/b."} {
		if err := checkRepoID(id); err == nil {
			t.Errorf("checkRepoID(%q) accepted", id)
		}
	}
	if got := repoFolderName("alice/model"); got != "models--alice--model" {
		t.Errorf("repoFolderName = %q", got)
	}
}

// TestClassify follows hf_raise_for_status: X-Error-Code first, then status;
// a 401 is "repo not found" unless the token itself was refused.
func TestClassify(t *testing.T) {
	cases := []struct {
		status    int
		code, msg string
		path      string
		want      error
		retryable bool
	}{
		{404, "RevisionNotFound", "", "", ErrRevisionNotFound, false},
		{404, "EntryNotFound", "", "f", ErrEntryNotFound, false},
		{403, "GatedRepo", "", "", ErrGatedRepo, false},
		{401, "RepoNotFound", "", "", ErrRepoNotFound, false},
		{401, "", "Repository not found", "", ErrRepoNotFound, false},
		{401, "", invalidCredentials, "", ErrUnauthorized, false},
		{403, "", "", "", ErrUnauthorized, false},
		{404, "", "", "file", ErrEntryNotFound, false},
		{404, "", "", "", ErrRepoNotFound, false},
		{409, "", "", "", ErrConflict, false},
		{412, "", "", "", ErrConflict, false},
		{429, "", "", "", ErrRateLimited, true},
		{408, "", "", "", ErrUnavailable, true},
		{500, "", "", "", ErrUnavailable, true},
		{504, "", "", "", ErrUnavailable, true},
		{400, "", "", "", ErrBadRequest, false},
		{418, "", "", "", ErrProtocol, false},
	}
	for _, tc := range cases {
		got := classify(tc.status, tc.code, tc.msg, tc.path)
		if got != tc.want {
			t.Errorf("classify(%d, %q, %q) = %v, want %v", tc.status, tc.code, tc.msg, got, tc.want)
		}
		e := &Error{Op: "x", Err: got}
		if e.Retryable() != tc.retryable || IsRetryable(e) != tc.retryable || IsPermanent(e) == tc.retryable {
			t.Errorf("%v: retryable = %v, want %v", got, e.Retryable(), tc.retryable)
		}
	}
	if IsPermanent(context.Canceled) || IsRetryable(context.Canceled) || IsPermanent(nil) {
		t.Error("cancellation is neither permanent nor retryable")
	}
	e := &Error{Op: "download", Repo: "a/b", Revision: "main", Path: "w.bin", Status: 404, Code: "EntryNotFound",
		Err: ErrEntryNotFound, Message: "nope"}
	if got, want := e.Error(), "hub: download a/b@main w.bin: entry not found (HTTP 404 EntryNotFound): nope"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestRetryAfter(t *testing.T) {
	cases := []struct {
		status int
		h      map[string]string
		want   time.Duration
		ok     bool
	}{
		{429, map[string]string{"RateLimit": `"api";r=0;t=55`}, 56 * time.Second, true},
		{429, map[string]string{"RateLimit": `"api";r=3;t=55`, "Retry-After": "2"}, 3 * time.Second, true}, // r>0: not the cause
		{429, map[string]string{"Retry-After": "7"}, 8 * time.Second, true},
		{503, map[string]string{"Retry-After": "0"}, time.Second, true},
		{503, map[string]string{"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0, false}, // dates unsupported, as in Python
		{429, map[string]string{"Retry-After": "999999"}, maxServerWait, true},
		{429, nil, 0, false},
	}
	for _, tc := range cases {
		h := http.Header{}
		for k, v := range tc.h {
			h.Set(k, v)
		}
		got, ok := retryAfter(h, tc.status)
		if got != tc.want || ok != tc.ok {
			t.Errorf("retryAfter(%d, %v) = %v %v, want %v %v", tc.status, tc.h, got, ok, tc.want, tc.ok)
		}
	}
}

// TestBackoffSchedule: 1, 2, 4, 8, 8 seconds (+ up to 25% jitter), then stop.
func TestBackoffSchedule(t *testing.T) {
	clk := &fakeClock{}
	b := &backoff{clock: clk, max: 5, next: backoffBase, jitter: func() float64 { return 0.5 }}
	for range 6 {
		_, _ = b.wait(context.Background(), 0)
	}
	want := []time.Duration{1125, 2250, 4500, 9000, 9000}
	got := clk.Sleeps()
	if len(got) != len(want) {
		t.Fatalf("waits %v", got)
	}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Errorf("wait %d = %v, want %v", i, got[i], want[i]*time.Millisecond)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.reset()
	if ok, err := b.wait(ctx, 0); ok || !errors.Is(err, context.Canceled) {
		t.Errorf("wait on a cancelled context = %v, %v", ok, err)
	}
}

func TestOptionsFromEnv(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HF_ENDPOINT", "http://hub.local:8080/")
	t.Setenv("HF_HOME", home)
	t.Setenv("HF_HUB_CACHE", "")
	t.Setenv("HUGGINGFACE_HUB_CACHE", "")
	t.Setenv("HF_TOKEN", "")
	t.Setenv("HUGGING_FACE_HUB_TOKEN", "")
	t.Setenv("HF_TOKEN_PATH", "")
	t.Setenv("HF_HUB_OFFLINE", "yes")
	if err := os.WriteFile(filepath.Join(home, "token"), []byte("hf_fromfile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := OptionsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if o.Endpoint != "http://hub.local:8080" || o.CacheDir != filepath.Join(home, "hub") || o.Token != "hf_fromfile" || !o.Offline {
		t.Errorf("from HF_HOME: %+v", redacted(o))
	}
	t.Setenv("HF_HUB_CACHE", filepath.Join(home, "elsewhere"))
	t.Setenv("HUGGING_FACE_HUB_TOKEN", "hf_legacy")
	t.Setenv("HF_HUB_OFFLINE", "0")
	o, _ = OptionsFromEnv()
	if o.CacheDir != filepath.Join(home, "elsewhere") || o.Token != "hf_legacy" || o.Offline {
		t.Errorf("explicit cache, legacy token: %+v", redacted(o))
	}
	t.Setenv("HF_TOKEN", "hf_first")
	if o, _ = OptionsFromEnv(); o.Token != "hf_first" {
		t.Error("HF_TOKEN should win")
	}
	t.Setenv("HF_TOKEN", "")
	t.Setenv("HUGGING_FACE_HUB_TOKEN", "")
	t.Setenv("HF_TOKEN_PATH", filepath.Join(home, "absent"))
	if o, err = OptionsFromEnv(); err != nil || o.Token != "" {
		t.Errorf("missing token file: %v, token set = %v", err, o.Token != "")
	}
}

func redacted(o Options) Options {
	if o.Token != "" {
		o.Token = "<set>"
	}
	return o
}

func TestNewValidatesEndpoint(t *testing.T) {
	for _, ep := range []string{"ftp://x", "not a url", "http://"} {
		if _, err := New(Options{Endpoint: ep, CacheDir: t.TempDir()}); err == nil {
			t.Errorf("New accepted endpoint %q", ep)
		}
	}
	c, err := New(Options{Endpoint: "https://hub.example/", CacheDir: "rel"})
	if err != nil || c.Endpoint() != "https://hub.example" || !filepath.IsAbs(c.CacheDir()) {
		t.Errorf("New = %v, %v", c, err)
	}
}

func TestGatedJSON(t *testing.T) {
	for in, want := range map[string]Gated{`false`: "", `"auto"`: "auto", `"manual"`: "manual", `null`: ""} {
		var g Gated
		if err := json.Unmarshal([]byte(in), &g); err != nil || g != want {
			t.Errorf("%s -> %q, %v", in, g, err)
		}
	}
	var g Gated
	if err := json.Unmarshal([]byte(`3`), &g); err == nil {
		t.Error("number accepted")
	}
}

func TestNormalizeETag(t *testing.T) {
	for in, want := range map[string]string{`W/"abc"`: "abc", `"abc"`: "abc", "abc": "abc", ` "x" `: "x"} {
		if got := normalizeETag(in); got != want {
			t.Errorf("normalizeETag(%q) = %q", in, got)
		}
	}
	if got := escapeRev("refs/pr/1"); got != "refs%2Fpr%2F1" {
		t.Errorf("escapeRev = %q", got)
	}
	if got := escapePath("a b/c#d.txt"); !strings.HasPrefix(got, "a%20b/c%23d.txt") {
		t.Errorf("escapePath = %q", got)
	}
}

type failAfter struct {
	n   int
	got []byte
}

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("disk full")
	}
	f.n--
	f.got = append(f.got, p...)
	return len(p), nil
}

// TestAsyncWriter: writes land in order; the first failure is reported by
// close and later buffers are dropped, with every buffer recycled.
func TestAsyncWriter(t *testing.T) {
	fw := &failAfter{n: 2}
	a := newAsyncWriter(fw, 2)
	for i := range 5 {
		b := a.next()
		b[0] = byte('a' + i)
		a.submit(b[:1])
	}
	b := a.next()
	a.release(b)
	err := a.close()
	if err == nil || err.Error() != "disk full" || !a.failed() {
		t.Fatalf("close = %v, failed = %v", err, a.failed())
	}
	if string(fw.got) != "ab" {
		t.Errorf("written %q, want %q", fw.got, "ab")
	}
}
