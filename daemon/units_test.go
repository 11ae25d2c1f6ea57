package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/daemon/state"
)

func TestBackoffDelay(t *testing.T) {
	base, max := time.Minute, 10*time.Minute
	// Hand-worked: nominal 1m, 2m, 4m, 8m, then capped at 10m.
	nominal := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 10 * time.Minute, 10 * time.Minute}
	for i, n := range nominal {
		attempt := i + 1
		if got := backoffDelay(attempt, base, max, func() float64 { return 0 }); got != n/2 {
			t.Errorf("attempt %d, rnd 0: %s, want %s", attempt, got, n/2)
		}
		if got := backoffDelay(attempt, base, max, func() float64 { return math.Nextafter(1, 0) }); got < n-time.Microsecond || got > n {
			t.Errorf("attempt %d, rnd ~1: %s, want ~%s", attempt, got, n)
		}
	}
	// Huge attempt counts neither overflow nor exceed the cap.
	for _, a := range []int{0, 62, 63, 64, 1000} {
		if got := backoffDelay(a, base, max, func() float64 { return 0.999 }); got <= 0 || got > max {
			t.Errorf("attempt %d: %s outside (0, %s]", a, got, max)
		}
	}
}

func TestStartOffset(t *testing.T) {
	seen := map[time.Duration]bool{}
	for i := range 50 {
		name := fmt.Sprintf("track-%d", i)
		off := startOffset(name, 15*time.Minute)
		if off < 0 || off >= maxStartOffset {
			t.Errorf("%s: offset %s outside [0, %s)", name, off, maxStartOffset)
		}
		if off != startOffset(name, 15*time.Minute) {
			t.Errorf("%s: offset not stable", name)
		}
		if short := startOffset(name, 10*time.Second); short >= 10*time.Second {
			t.Errorf("%s: offset %s not below a 10s interval", name, short)
		}
		seen[off] = true
	}
	// 50 names hashed into a minute of nanoseconds: collisions would mean
	// the hash is not spreading at all.
	if len(seen) < 45 {
		t.Errorf("only %d distinct offsets for 50 tracks", len(seen))
	}
	if startOffset("x", 0) != 0 {
		t.Error("zero interval must give zero offset")
	}
}

func TestDiscoverByAuthorAndPattern(t *testing.T) {
	hub := newFakeHub(t.TempDir())
	hub.commit("org/base", "main", baseFiles("v0"))
	hub.commit("org/model-1B", "main", baseFiles("old"))
	hub.commit("org/unrelated", "main", baseFiles("x"))
	tr := config.Track{Name: "t", Base: config.RepoRef{Repo: "org/base", Revision: "main"},
		Follow: config.Follow{Discover: &config.Discover{Author: "org", Pattern: `^model-\d+B$`}}}
	ctx := context.Background()

	ts, found, err := discover(ctx, hub, tr, state.TrackState{}, t0)
	if err != nil || len(found) != 0 || !ts.DiscoverBaselined || !ts.Discovered["org/model-1B"] {
		t.Fatalf("first poll: found %+v, state %+v, err %v; want a baseline and no versions", found, ts, err)
	}
	c := hub.commit("org/model-3B", "main", baseFiles("new"))
	hub.commit("org/model-3B-instruct", "main", baseFiles("no match"))
	hub.commit("other/model-7B", "main", baseFiles("other author"))
	ts, found, err = discover(ctx, hub, tr, ts, t0)
	if err != nil || len(found) != 1 || found[0] != (state.Version{Repo: "org/model-3B", Commit: c, Found: t0, Why: "discovered"}) {
		t.Fatalf("second poll: %+v, %v", found, err)
	}
	if _, found, _ = discover(ctx, hub, tr, ts, t0); len(found) != 0 {
		t.Errorf("third poll found %+v again", found)
	}
}

// Changing follow.discover (a reload) re-baselines it: repos that already
// exist and only now match are not new versions, as config.yaml promises
// ("only later ones become versions"); one released afterwards is.
func TestDiscoverChangedRebaselines(t *testing.T) {
	hub := newFakeHub(t.TempDir())
	hub.commit("org/base", "main", baseFiles("v0"))
	hub.commit("org/model-1B", "main", baseFiles("old"))
	hub.commit("org/other-1B", "main", baseFiles("old, other family"))
	tr := config.Track{Name: "t", Base: config.RepoRef{Repo: "org/base", Revision: "main"},
		Follow: config.Follow{Discover: &config.Discover{Author: "org", Pattern: `^model-\d+B$`}}}
	ctx := context.Background()
	ts, _, err := discover(ctx, hub, tr, state.TrackState{}, t0)
	if err != nil {
		t.Fatal(err)
	}
	tr.Follow.Discover = &config.Discover{Author: "org", Pattern: `^(model|other)-\d+B$`}
	ts, found, err := discover(ctx, hub, tr, ts, t0)
	if err != nil || len(found) != 0 {
		t.Fatalf("after the pattern changed: found %+v, %v; want a new baseline and no versions", found, err)
	}
	c := hub.commit("org/other-3B", "main", baseFiles("new"))
	if _, found, err = discover(ctx, hub, tr, ts, t0); err != nil || len(found) != 1 || found[0].Repo != "org/other-3B" || found[0].Commit != c {
		t.Fatalf("a release after the change: found %+v, %v", found, err)
	}
}

// A poll that fails half-way changes nothing: the previous state is kept
// and the next poll sees the same news.
func TestDiscoverFailureKeepsState(t *testing.T) {
	hub := newFakeHub(t.TempDir())
	hub.commit("org/base", "main", baseFiles("v0"))
	tr := config.Track{Name: "t", Base: config.RepoRef{Repo: "org/base", Revision: "main"},
		Follow: config.Follow{Commits: true, Successors: []string{"org/next"}}}
	ctx := context.Background()
	ts, _, _ := discover(ctx, hub, tr, state.TrackState{}, t0)
	c1 := hub.commit("org/base", "main", baseFiles("v1"))
	hub.commit("org/next", "main", baseFiles("n"))
	hub.failNext("Head", 2) // the base head and the successor check fail
	prev := ts
	got, found, err := discover(ctx, hub, tr, ts, t0)
	if err == nil || len(found) != 0 || got.Heads["org/base"] != prev.Heads["org/base"] {
		t.Fatalf("failed poll: err %v, found %+v", err, found)
	}
	hub.failNext("Head", 0)
	_, found, err = discover(ctx, hub, tr, ts, t0)
	if err != nil || len(found) != 2 || found[0].Commit != c1 || found[1].Repo != "org/next" {
		t.Fatalf("retry poll: %+v, %v", found, err)
	}
}

// Changing a track's base in the config starts the track over.
func TestDiscoverBaseChangedResets(t *testing.T) {
	hub := newFakeHub(t.TempDir())
	hub.commit("org/base", "main", baseFiles("v0"))
	c := hub.commit("org/other", "main", baseFiles("o"))
	tr := config.Track{Name: "t", Base: config.RepoRef{Repo: "org/base", Revision: "main"}, Follow: config.Follow{Commits: true}}
	ts, _, _ := discover(context.Background(), hub, tr, state.TrackState{}, t0)
	tr.Base.Repo = "org/other"
	ts, found, err := discover(context.Background(), hub, tr, ts, t0)
	if err != nil || len(found) != 0 || ts.BaselineCommit != c || ts.BaseRepo != "org/other" || len(ts.Heads) != 1 {
		t.Fatalf("after base change: %+v, found %+v, %v", ts, found, err)
	}
}

func TestTargetFor(t *testing.T) {
	hubAd := adapterFromRef(config.AdapterRef{Repo: "acme/math-lora", Revision: "main"})
	localAd := adapterFromRef(config.AdapterRef{Path: "/srv/in/support"})
	cases := []struct {
		name   string
		target config.Target
		ad     Adapter
		want   target
		err    string
	}{
		{"template, adapter owner", config.Target{RepoTemplate: "{adapter}-{base_name}"}, hubAd, target{Repo: "acme/math-lora-Qwen2.5-3B", Revision: "main"}, ""},
		{"template, target owner", config.Target{RepoTemplate: "{adapter}-{base_name}", Owner: "mig", Private: true}, hubAd, target{Repo: "mig/math-lora-Qwen2.5-3B", Revision: "main", Private: true}, ""},
		{"template with owner", config.Target{RepoTemplate: "{base_owner}-ports/{track}-{adapter}"}, localAd, target{Repo: "Qwen-ports/tr-support", Revision: "main"}, ""},
		{"local without owner", config.Target{RepoTemplate: "{adapter}"}, localAd, target{}, "no owner"},
		{"branch", config.Target{Branch: "lorasync/{base_name}"}, hubAd, target{Repo: "acme/math-lora", Revision: "lorasync/Qwen2.5-3B"}, ""},
		{"pr", config.Target{PR: true}, hubAd, target{Repo: "acme/math-lora", Revision: "main", CreatePR: true}, ""},
		{"pr for local", config.Target{PR: true}, localAd, target{}, "pull request"},
	}
	for _, c := range cases {
		got, err := targetFor(config.Track{Name: "tr", Target: c.target}, c.ad, "Qwen/Qwen2.5-3B")
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !IsPermanent(err) {
				t.Errorf("%s: err %v, want a permanent error containing %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: got %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
}

func TestHashDirTracksContent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a")
	writeAdapterDir(t, dir, adapterFiles(8))
	h1, err := hashDir(dir)
	if err != nil || !strings.HasPrefix(h1, "sha256:") {
		t.Fatal(h1, err)
	}
	writeAdapterDir(t, dir, map[string][]byte{".swp": []byte("editor junk")})
	if h2, _ := hashDir(dir); h2 != h1 {
		t.Error("a hidden file changed the hash")
	}
	writeAdapterDir(t, dir, adapterFiles(4))
	if h3, _ := hashDir(dir); h3 == h1 {
		t.Error("changed content, same hash")
	}
}

func TestNotifySendsReadyAndStatus(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	n := newNotifier()
	n.ready()
	n.status("1 tracks; jobs: 0 running")
	n.status("1 tracks; jobs: 0 running") // unchanged: not resent
	n.stopping()
	var got []string
	buf := make([]byte, 256)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for range 3 {
		k, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(buf[:k]))
	}
	want := []string{"READY=1", "STATUS=1 tracks; jobs: 0 running", "STOPPING=1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("messages %q, want %q", got, want)
	}
}

func TestNotifyWithoutSystemdIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := newNotifier()
	n.ready()
	n.watchdog()
	if n.watchdogInterval() != 0 {
		t.Error("watchdog interval without systemd")
	}
}

func TestStatusLineIsOneLine(t *testing.T) {
	s := statusLine(map[state.Status]int{state.Running: 1, state.Done: 4, state.Parked: 1}, 2, t0)
	want := "2 tracks; jobs: 1 running, 0 pending, 0 failed, 1 parked, 4 done; last poll 2026-11-27T03:00:00Z"
	if s != want {
		t.Errorf("status %q, want %q", s, want)
	}
}

func TestNewLogger(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	cases := []struct {
		format string
		env    map[string]string
		json   bool
	}{
		{"auto", map[string]string{"INVOCATION_ID": "abc"}, true},
		{"auto", map[string]string{"JOURNAL_STREAM": "8:123"}, true},
		{"auto", nil, false},
		{"json", nil, true},
		{"text", map[string]string{"INVOCATION_ID": "abc"}, false},
	}
	for _, c := range cases {
		var buf bytes.Buffer
		l, err := NewLogger(&buf, c.format, "info", env(c.env))
		if err != nil {
			t.Fatal(err)
		}
		l.Info("hello", "k", 1)
		isJSON := json.Valid(bytes.TrimSpace(buf.Bytes()))
		if isJSON != c.json {
			t.Errorf("format %s env %v: JSON = %v, want %v (%q)", c.format, c.env, isJSON, c.json, buf.String())
		}
	}
	if _, err := NewLogger(&bytes.Buffer{}, "xml", "info", env(nil)); err == nil {
		t.Error("want an error for format xml")
	}
}
