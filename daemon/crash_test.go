package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/daemon/state"
	"github.com/lorasync/lorasync/hub"
	"github.com/lorasync/lorasync/hub/hubtest"
)

// Environment of the crash child: the test binary re-executed as a
// lorasync process that SIGKILLs itself right after its first push.
const (
	envChild    = "LORASYNC_DAEMON_CRASH_CHILD"
	envConfig   = "LORASYNC_DAEMON_CRASH_CONFIG"
	envEndpoint = "LORASYNC_DAEMON_CRASH_HUB"
)

func TestMain(m *testing.M) {
	if os.Getenv(envChild) == "1" {
		os.Exit(crashChild())
	}
	os.Exit(m.Run())
}

// crashChild runs one pass against the Hub at $envEndpoint and kills
// itself with SIGKILL between the push and the record: no deferred code,
// no graceful close, exactly like a power cut or the OOM killer.
func crashChild() int {
	cfg, err := config.Load(os.Getenv(envConfig))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	c, err := hub.New(hub.Options{Endpoint: os.Getenv(envEndpoint), Token: os.Getenv("HF_TOKEN"),
		CacheDir: filepath.Join(cfg.CacheDir, "hub"), MaxRetries: -1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	d, err := New(Options{Config: cfg, Hub: NewHubClient(c), Converter: newFakeConverter(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: prometheus.NewRegistry()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	d.testHookAfterPush = func(state.JobKey) bool {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
	if _, err := d.RunOnce(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return 3 // the hook was never reached
}

// A real process is SIGKILLed between push and record; the next process
// finds the state still saying "running", resumes the job, finds the
// provenance on the Hub and records it: one commit on the Hub, not two.
func TestKilledBetweenPushAndRecordNoDuplicateCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	h, srv := hubtestBed(t, oneAdapterTrack)
	seed(t, srv, "org/base", baseFiles("v0"))
	seed(t, srv, "acme/math", adapterFiles(8))
	h.runOnce()
	seed(t, srv, "org/base", baseFiles("v1"))

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=1", envConfig+"="+h.cfgPath, envEndpoint+"="+srv.URL, "HF_TOKEN=hf_daemontest")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL: %v\n%s", err, out)
	}
	if j := h.job("acme/math"); j.Status != state.Running {
		t.Fatalf("after the kill the job is %s, want running", j.Status)
	}
	if n := lorasyncCommits(t, srv, "acme/math-base", "main"); n != 1 {
		t.Fatalf("%d lorasync commits after the kill, want 1", n)
	}

	rep := h.runOnce() // the restart
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	j := h.job("acme/math")
	if j.Status != state.Done || !j.Reconciled {
		t.Fatalf("after restart: %+v", j)
	}
	if n := lorasyncCommits(t, srv, "acme/math-base", "main"); n != 1 {
		t.Errorf("%d lorasync commits after the restart, want 1", n)
	}
}

// lorasyncCommits counts the commits lorasync made on repo@rev.
func lorasyncCommits(t *testing.T, srv *hubtest.Server, repo, rev string) int {
	t.Helper()
	commits, err := srv.Commits(repo, rev)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range commits {
		if strings.HasPrefix(c.Title, "lorasync:") {
			n++
		}
	}
	return n
}
