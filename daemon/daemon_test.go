package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"

	"github.com/lorasync/lorasync/daemon/state"
)

// running starts d.Run in the background and returns a stop function that
// cancels it and waits for Run to return.
func running(t *testing.T, d *Daemon) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx) }()
	eventually(t, "daemon ready", d.ready.Load)
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run returned %v after cancellation, want nil", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestRunPollsOnScheduleMigratesAndStops(t *testing.T) {
	h := newHarness(t, oneAdapterTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/math", "main", adapterFiles(8))
	d := h.daemon(false)
	stop := running(t, d)

	// The track loop waits for its start offset (< 1 min), then polls.
	eventually(t, "track loop waiting", func() bool { return h.clock.pending() >= 1 })
	h.clock.Advance(time.Minute)
	eventually(t, "baseline recorded", func() bool { return h.hub.count("Head") >= 1 && h.clock.pending() >= 1 })

	c1 := h.hub.commit("org/base", "main", baseFiles("v1"))
	h.clock.Advance(time.Hour + time.Minute)
	eventually(t, "migrated adapter pushed", func() bool { return h.hub.uploadCount() == 1 })
	eventually(t, "job recorded", func() bool {
		js := h.jobs()
		return len(js) == 1 && js[0].Status == state.Done && js[0].Key.BaseCommit == c1
	})

	// /readyz and /metrics while running.
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	if code, body := get(t, srv.URL+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s while running", code, body)
	}
	// The gauges are refreshed right after the job is recorded: wait for them.
	var metrics string
	eventually(t, "job gauges updated", func() bool {
		_, metrics = get(t, srv.URL+"/metrics")
		return strings.Contains(metrics, `lorasync_jobs{state="done"} 1`)
	})
	for _, want := range []string{`lorasync_jobs{state="done"} 1`, `lorasync_pushes_total{kind="pushed"} 1`,
		"lorasync_config_last_reload_successful 1", `lorasync_last_successful_poll_timestamp_seconds{track="t"}`,
		"lorasync_downloaded_bytes_total", "lorasync_job_duration_seconds_bucket"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	stop()
	if code, _ := get(t, srv.URL+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d after stop, want 503", code)
	}
	if code, _ := get(t, srv.URL+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d, want 200", code)
	}
	d.loopsMu.Lock()
	n := len(d.loops)
	d.loopsMu.Unlock()
	if n != 0 {
		t.Errorf("%d track loops left after stop", n)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// replaceFile writes path the way editors do: a new file renamed over it.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".swp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestInvalidConfigReloadKeepsRunningConfig(t *testing.T) {
	h := newHarness(t, oneAdapterTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	d := h.daemon(false)
	running(t, d)
	old := d.Config()

	// An invalid config, written by rename-replace: rejected, old one stays.
	replaceFile(t, h.cfgPath, header+strings.Replace(oneAdapterTrack, "acme/math", "not-a-repo", 1))
	eventually(t, "reload attempted and failed", func() bool { return testutil.ToFloat64(d.metrics.ConfigReloadOK) == 0 })
	if d.Config() != old {
		t.Fatal("an invalid config replaced the running one")
	}
	if !strings.Contains(h.logs.String(), "tracks[0].adapters[0].repo") {
		t.Errorf("the log does not name the bad key:\n%s", h.logs.String())
	}
	if err := d.Reload(); err == nil {
		t.Error("Reload of the invalid file succeeded")
	}

	// Reverting to the running config's content resets the gauge.
	replaceFile(t, h.cfgPath, header+oneAdapterTrack)
	eventually(t, "revert reloaded", func() bool { return testutil.ToFloat64(d.metrics.ConfigReloadOK) == 1 })

	// A valid edit is applied.
	replaceFile(t, h.cfgPath, strings.Replace(header, "concurrency: 2", "concurrency: 5", 1)+oneAdapterTrack)
	eventually(t, "valid config applied", func() bool { return d.Config().Concurrency == 5 })
	if got := testutil.ToFloat64(d.metrics.ConfigReloadOK); got != 1 {
		t.Errorf("reload gauge = %v after a good reload", got)
	}
}

func TestSIGHUPReloads(t *testing.T) {
	h := newHarness(t, oneAdapterTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	d := h.daemon(false)
	// Edit the file before Run starts its watcher: only the signal can
	// make the daemon notice.
	h.writeConfig(oneAdapterTrack, "concurrency: 2", "concurrency: 7")
	running(t, d)
	if d.Config().Concurrency != 2 {
		t.Fatal("config changed before SIGHUP")
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "SIGHUP reload", func() bool { return d.Config().Concurrency == 7 })
}

func TestDropinDirWatchedLive(t *testing.T) {
	h := newHarness(t, dropinTrack)
	dropin := filepath.Join(h.dir, "dropin")
	os.MkdirAll(dropin, 0o755)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.runOnce()
	h.hub.commit("org/base", "main", baseFiles("v1"))
	h.runOnce() // the new version is known; no adapters yet
	if len(h.jobs()) != 0 {
		t.Fatalf("jobs without adapters: %+v", h.jobs())
	}

	d := h.daemon(false)
	running(t, d)
	// Create the folder first, then its files, as a copy would.
	dir := filepath.Join(dropin, "new-adapter")
	os.Mkdir(dir, 0o755)
	writeAdapterDir(t, dir, adapterFiles(8))
	eventually(t, "drop-in adapter migrated and pushed", func() bool {
		_, ok := h.hub.file("migrated/new-adapter-base", "main", ProvenanceFile)
		return ok
	})
}

func TestShutdownLeavesJobResumable(t *testing.T) {
	h := hubAdapterHarness(t)
	h.conv.delay = time.Hour // a conversion that outlives the daemon

	d := h.daemon(false)
	stop := running(t, d)
	eventually(t, "track loop waiting", func() bool { return h.clock.pending() >= 1 })
	h.clock.Advance(time.Minute)
	eventually(t, "job running", func() bool {
		js := h.jobs()
		return len(js) == 1 && js[0].Status == state.Running
	})
	stop() // SIGTERM: the job is interrupted, not failed
	j := h.job("acme/math")
	if j.Status != state.Pending || j.Attempts != 0 || !strings.Contains(j.LastError, "interrupted") {
		t.Fatalf("after shutdown: %+v", j)
	}
	h.conv.delay = 0
	h.runOnce()
	if j := h.job("acme/math"); j.Status != state.Done || h.hub.uploadCount() != 1 {
		t.Fatalf("after restart: %+v, uploads %d", j, h.hub.uploadCount())
	}
}

// A job left running by a killed process (no graceful stop) is put back to
// pending at the next start and completes.
func TestKilledJobResumes(t *testing.T) {
	h := newHarness(t, oneAdapterTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/math", "main", adapterFiles(8))
	h.runOnce()
	c1 := h.hub.commit("org/base", "main", baseFiles("v1"))
	s, err := state.Open(filepath.Join(h.dir, "state"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Update(func(tx *state.Tx) error {
		ts, _, _ := tx.Track("t")
		ts.Heads["org/base"] = state.RepoHead{Commit: c1}
		ts.Versions = append(ts.Versions, state.Version{Repo: "org/base", Commit: c1, Why: "commit"})
		tx.PutTrack(ts)
		return tx.PutJob(state.Job{Key: state.JobKey{Track: "t", Adapter: "hub:acme/math@main", BaseRepo: "org/base", BaseCommit: c1},
			Status: state.Running, OldBaseRepo: "org/base", OldBaseCommit: ts.BaselineCommit, Created: t0})
	})
	h.runOnce()
	if j := h.job("acme/math"); j.Status != state.Done || h.hub.uploadCount() != 1 {
		t.Fatalf("job = %+v, uploads %d", j, h.hub.uploadCount())
	}
}

// Two processes never run jobs from one state dir: the second is refused
// (it would otherwise reset the first one's running jobs).
func TestSecondOwnerRefused(t *testing.T) {
	h := newHarness(t, oneAdapterTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	o, err := state.AcquireOwner(filepath.Join(h.dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Release()
	if _, err := h.daemon(false).RunOnce(context.Background()); !errors.Is(err, state.ErrOwned) {
		t.Fatalf("RunOnce with the state dir owned: %v, want ErrOwned", err)
	}
	if err := h.daemon(false).Run(context.Background()); !errors.Is(err, state.ErrOwned) {
		t.Fatalf("Run with the state dir owned: %v, want ErrOwned", err)
	}
	// A dry run only reads: allowed.
	if _, err := h.daemon(true).RunOnce(context.Background()); err != nil {
		t.Fatalf("dry run: %v", err)
	}
}

// Keys that need a restart keep their running values after a reload, so
// Config() always shows what is in effect; the rest applies.
func TestReloadKeepsRestartOnlyKeys(t *testing.T) {
	h := newHarness(t, oneAdapterTrack)
	d := h.daemon(false)
	oldState := d.Config().StateDir
	h.writeConfig(oneAdapterTrack, "state_dir: state", "state_dir: elsewhere", "concurrency: 2", "concurrency: 3")
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	if c := d.Config(); c.StateDir != oldState || c.Concurrency != 3 {
		t.Errorf("after reload: state_dir %q (want %q kept), concurrency %d (want 3)", c.StateDir, oldState, c.Concurrency)
	}
	if !strings.Contains(h.logs.String(), "state_dir") {
		t.Error("the restart-only change was not logged")
	}
}

// Under systemd (NOTIFY_SOCKET, WATCHDOG_USEC) Run says READY=1 once its
// loops run, keeps a one-line STATUS, pings WATCHDOG=1 and says
// STOPPING=1 on the way out.
func TestRunTalksToSystemd(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000") // pings every 100 ms
	t.Setenv("WATCHDOG_PID", "")

	h := newHarness(t, oneAdapterTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	stop := running(t, h.daemon(false))
	seen := map[string]bool{}
	buf := make([]byte, 512)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for !(seen["READY=1"] && seen["WATCHDOG=1"] && seen["STATUS"]) {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("reading sd_notify messages (got %v): %v", seen, err)
		}
		msg := string(buf[:n])
		if strings.HasPrefix(msg, "STATUS=") {
			if strings.Contains(msg, "\n") {
				t.Errorf("STATUS is not one line: %q", msg)
			}
			msg = "STATUS"
		}
		seen[msg] = true
	}
	stop()
	for {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no STOPPING=1 after stop: %v", err)
		}
		if string(buf[:n]) == "STOPPING=1" {
			break
		}
	}
}

// A drop-in dir added by a SIGHUP reload is watched like one added by
// editing the file: a new adapter folder in it is migrated without waiting
// for the next poll (the fake clock never brings one here).
func TestSIGHUPReloadWatchesNewDropinDir(t *testing.T) {
	track := dropinTrack
	h := newHarness(t, track)
	for _, dir := range []string{"dropin", "dropin2"} {
		os.MkdirAll(filepath.Join(h.dir, dir), 0o755)
	}
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.runOnce()
	h.hub.commit("org/base", "main", baseFiles("v1"))
	h.runOnce()

	d := h.daemon(false)
	// Edit the file before Run starts its watcher: only the signal makes
	// the daemon notice, as after an edit while it was stopped.
	h.writeConfig(strings.Replace(track, "[dropin]", "[dropin, dropin2]", 1))
	running(t, d)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "SIGHUP reload", func() bool { return len(d.Config().Tracks[0].DropinDirs) == 2 })
	dir := filepath.Join(h.dir, "dropin2", "late-adapter")
	os.Mkdir(dir, 0o755)
	writeAdapterDir(t, dir, adapterFiles(8))
	eventually(t, "adapter in the reloaded drop-in dir migrated and pushed", func() bool {
		_, ok := h.hub.file("migrated/late-adapter-base", "main", ProvenanceFile)
		return ok
	})
}

// A job whose outcome cannot be recorded at once (the database locked or
// the disk full for a while) is recorded once the store works again; before,
// it stayed "running" in the database, never retried, until a restart.
func TestOutcomeRecordedAfterStoreRecovers(t *testing.T) {
	h := hubAdapterHarness(t)

	dbPath := filepath.Join(h.dir, "state", state.FileName)
	released := make(chan struct{})
	h.hook = func(state.JobKey) bool {
		// After the push, before the outcome is recorded: another process
		// holds the database until the daemon has failed to write.
		db, err := bolt.Open(dbPath, 0o600, nil)
		if err != nil {
			t.Error(err)
			close(released)
			return false
		}
		go func() {
			defer close(released)
			// Not eventually: FailNow belongs to the test goroutine.
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				if strings.Contains(h.logs.String(), "state database") {
					break
				}
			}
			db.Close()
		}()
		return false
	}
	d := h.daemon(false)
	running(t, d)
	eventually(t, "track loop waiting", func() bool { return h.clock.pending() >= 1 })
	h.clock.Advance(time.Minute)
	<-released
	eventually(t, "outcome recorded", func() bool {
		h.clock.Advance(time.Minute) // the retry wait runs on the daemon's clock
		js := h.jobs()
		return len(js) == 1 && js[0].Status == state.Done
	})
	if n := h.hub.uploadCount(); n != 1 {
		t.Errorf("uploads = %d, want 1", n)
	}
}

// A job that keeps killing the process (out of memory, a crash in the
// converter) counts an attempt at every restart and is parked after
// retry.max_attempts, instead of being resumed, and killing the daemon, at
// every start forever.
func TestJobThatKillsTheProcessIsParked(t *testing.T) {
	h := newHarness(t, oneAdapterTrack) // retry.max_attempts: 3
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/math", "main", adapterFiles(8))
	h.runOnce()
	c1 := h.hub.commit("org/base", "main", baseFiles("v1"))
	s, err := state.Open(filepath.Join(h.dir, "state"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key := state.JobKey{Track: "t", Adapter: "hub:acme/math@main", BaseRepo: "org/base", BaseCommit: c1}
	err = s.Update(func(tx *state.Tx) error {
		ts, _, _ := tx.Track("t")
		ts.Heads["org/base"] = state.RepoHead{Commit: c1}
		ts.Versions = append(ts.Versions, state.Version{Repo: "org/base", Commit: c1, Why: "commit"})
		if err := tx.PutTrack(ts); err != nil {
			return err
		}
		// Two earlier processes died during this job; this is the third.
		return tx.PutJob(state.Job{Key: key, Status: state.Running, Attempts: 2,
			OldBaseRepo: "org/base", OldBaseCommit: ts.BaselineCommit, Created: t0})
	})
	if err != nil {
		t.Fatal(err)
	}
	h.runOnce()
	j := h.job("acme/math")
	if j.Status != state.Parked || j.Attempts != 3 || !strings.Contains(j.LastError, "died") {
		t.Fatalf("job = %+v, want parked after 3 attempts with the reason", j)
	}
	if n := h.hub.uploadCount(); n != 0 || h.conv.calls != 0 {
		t.Errorf("uploads %d, conversions %d: a parked job must not run", n, h.conv.calls)
	}
}
