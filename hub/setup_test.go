package hub

import (
	"context"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lorasync/lorasync/hub/hubtest"
	"github.com/lorasync/lorasync/internal/logbuf"
)

// testToken is the write token of user "alice" on every fake Hub of these tests.
const testToken = "hf_testTOKENalice0123456789"

// fakeClock records the waits the retry logic asks for and returns at once,
// so tests assert the exact backoff without waiting for it.
type fakeClock struct {
	mu     sync.Mutex
	sleeps []time.Duration
}

func (f *fakeClock) Now() time.Time { return time.Unix(1_700_000_000, 0) }

func (f *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	f.mu.Lock()
	f.sleeps = append(f.sleeps, d)
	f.mu.Unlock()
	return ctx.Err()
}

func (f *fakeClock) Sleeps() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Duration(nil), f.sleeps...)
}

// env is one fake Hub, one client, its cache dir, clock and captured logs.
type env struct {
	t     *testing.T
	srv   *hubtest.Server
	c     *Client
	cache string
	clock *fakeClock
	logs  *logbuf.Buffer
}

// newEnv starts a fake Hub with user alice (token testToken) and a client
// using that token, a fresh cache and a fake clock. mod may adjust Options.
func newEnv(t *testing.T, srvOpts []hubtest.Option, mod func(*Options)) *env {
	t.Helper()
	srv := hubtest.NewTB(t, srvOpts...)
	srv.AddToken(testToken, "alice")
	e := &env{t: t, srv: srv, cache: filepath.Join(t.TempDir(), "hub"), clock: &fakeClock{}, logs: &logbuf.Buffer{}}
	e.c = e.client(func(o *Options) {
		if mod != nil {
			mod(o)
		}
	})
	return e
}

// client returns another client on the same fake Hub and cache.
func (e *env) client(mod func(*Options)) *Client {
	e.t.Helper()
	o := Options{
		Endpoint: e.srv.URL,
		Token:    testToken,
		CacheDir: e.cache,
		Logger:   slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Progress: ProgressOff,
		Clock:    e.clock,
	}
	if mod != nil {
		mod(&o)
	}
	c, err := New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// seed creates alice/<name> (public) with files on main and returns the head.
func (e *env) seed(name string, files map[string][]byte) string {
	e.t.Helper()
	id := "alice/" + name
	if err := e.srv.CreateRepo(id, false); err != nil {
		e.t.Fatal(err)
	}
	head, err := e.srv.Commit(id, "main", files, "seed "+name)
	if err != nil {
		e.t.Fatal(err)
	}
	return head
}

// randBytes returns n deterministic pseudo-random bytes.
func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	for i := n - n%8; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// listCache returns every path under dir (relative, slash separated), with
// "@" appended to symlinks.
func listCache(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && p == dir {
				return filepath.SkipDir
			}
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if d.Type()&fs.ModeSymlink != 0 {
			rel += "@"
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// requestsTo filters the fake's request log.
func requestsTo(reqs []hubtest.Request, method, pathPrefix string) []hubtest.Request {
	var out []hubtest.Request
	for _, r := range reqs {
		if (method == "" || r.Method == method) && strings.HasPrefix(r.Path, pathPrefix) {
			out = append(out, r)
		}
	}
	return out
}
