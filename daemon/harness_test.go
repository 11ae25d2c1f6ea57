package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/daemon/state"
	"github.com/lorasync/lorasync/internal/logbuf"
)

var t0 = time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)

// harness is a daemon test bed: a temp dir with a config file, a fake Hub,
// a fake converter and a manual clock.
type harness struct {
	t       *testing.T
	dir     string
	cfgPath string
	hub     *fakeHub
	conv    *fakeConverter
	clock   *fakeClock
	logs    *logbuf.Buffer
	hook    func(state.JobKey) bool
	// realHub and realConv, when set, replace the fakes.
	realHub  Hub
	realConv Converter
}

// header is the non-track part of every test config. min_free_disk is a
// few bytes: the check runs on the real filesystem.
const header = `
state_dir: state
cache_dir: cache
schedule: "@every 1h"
listen: ""
concurrency: 2
retry: {max_attempts: 3, backoff_base: 1m, backoff_max: 10m}
min_free_disk: 1KiB
log: {format: text, level: debug}
`

func newHarness(t *testing.T, tracks string) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), conv: newFakeConverter(), clock: newFakeClock(t0), logs: &logbuf.Buffer{}}
	h.hub = newFakeHub(filepath.Join(h.dir, "hubcache"))
	h.cfgPath = filepath.Join(h.dir, "config.yaml")
	h.writeConfig(tracks)
	return h
}

// writeConfig writes header+tracks; replace holds old/new pairs applied to
// the header (e.g. "concurrency: 2", "concurrency: 4").
func (h *harness) writeConfig(tracks string, replace ...string) {
	h.t.Helper()
	hd := strings.NewReplacer(replace...).Replace(header)
	if err := os.WriteFile(h.cfgPath, []byte(hd+tracks), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) config() *config.Config {
	h.t.Helper()
	c, err := config.Load(h.cfgPath)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func (h *harness) daemon(dryRun bool) *Daemon {
	h.t.Helper()
	var hub Hub = h.hub
	if h.realHub != nil {
		hub = h.realHub
	}
	var conv Converter = h.conv
	if h.realConv != nil {
		conv = h.realConv
	}
	d, err := New(Options{
		Config: h.config(), ConfigPath: h.cfgPath, Hub: hub, Converter: conv,
		Logger:   slog.New(slog.NewTextHandler(io.MultiWriter(h.logs), &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registry: prometheus.NewRegistry(), Clock: h.clock, Rand: func() float64 { return 0.5 }, DryRun: dryRun,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	d.testHookAfterPush = h.hook
	h.t.Cleanup(func() { d.Close() })
	return d
}

// runOnce runs one pass with a fresh daemon, as `lorasync run` does.
func (h *harness) runOnce() *Report {
	h.t.Helper()
	rep, err := h.daemon(false).RunOnce(context.Background())
	if err != nil {
		h.t.Fatalf("RunOnce: %v", err)
	}
	return rep
}

func (h *harness) jobs() []state.Job {
	h.t.Helper()
	s, err := state.OpenReadOnly(filepath.Join(h.dir, "state"), state.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	snap, err := s.Snapshot()
	if err != nil {
		h.t.Fatal(err)
	}
	return snap.Jobs
}

func (h *harness) job(adapter string) state.Job {
	h.t.Helper()
	var found []state.Job
	for _, j := range h.jobs() {
		if strings.Contains(j.Key.Adapter, adapter) {
			found = append(found, j)
		}
	}
	if len(found) != 1 {
		h.t.Fatalf("want exactly one job for %s, got %+v", adapter, found)
	}
	return found[0]
}

// baseFiles is a tiny "model": what the fake converter checks for.
func baseFiles(version string) map[string][]byte {
	return map[string][]byte{
		"config.json":       []byte(`{"model_type":"llama","version":"` + version + `"}`),
		"model.safetensors": bytes.Repeat([]byte(version), 64),
	}
}

func adapterFiles(r int) map[string][]byte {
	return map[string][]byte{
		adapterConfigFile:  []byte(fmt.Sprintf(`{"r":%d,"lora_alpha":16,"target_modules":["q_proj"],"base_model_name_or_path":"org/base"}`, r)),
		adapterWeightsFile: bytes.Repeat([]byte{7}, 128),
	}
}

func writeAdapterDir(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func readProvenance(t *testing.T, data []byte) Provenance {
	t.Helper()
	var p Provenance
	if err := json.Unmarshal(data, &p); err != nil {
		t.Fatalf("provenance: %v\n%s", err, data)
	}
	return p
}

// eventually polls cond until it holds or the deadline passes. It waits
// for asynchronous work (fsnotify, goroutines); it asserts no timing.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hubAdapterHarness is a harness on oneAdapterTrack (org/base's commits,
// the Hub adapter acme/math) whose baseline (v0) has been polled and whose
// new base commit (v1) waits for the next run.
func hubAdapterHarness(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t, oneAdapterTrack)
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.hub.commit("acme/math", "main", adapterFiles(8))
	h.runOnce()
	h.hub.commit("org/base", "main", baseFiles("v1"))
	return h
}

// localAdapterHarness is a harness with one track following org/base's
// commits with the local adapter dir (written with adapterFiles(8)) and
// targets "{adapter}-{base_name}": its baseline (v0) has been polled, and a
// new base commit (v1, returned) waits for the next run.
func localAdapterHarness(t *testing.T, adapter string) (*harness, string) {
	t.Helper()
	h := newHarness(t, `
tracks:
  - name: t
    base: {repo: org/base}
    follow: {commits: true}
    adapters: [{path: `+adapter+`}]
    target: {repo_template: "{adapter}-{base_name}", owner: acme}
`)
	writeAdapterDir(t, adapter, adapterFiles(8))
	h.hub.commit("org/base", "main", baseFiles("v0"))
	h.runOnce()
	return h, h.hub.commit("org/base", "main", baseFiles("v1"))
}

// runOnceInBackground starts d.RunOnce and returns where its error arrives.
func runOnceInBackground(d *Daemon) <-chan error {
	ran := make(chan error, 1)
	go func() {
		_, err := d.RunOnce(context.Background())
		ran <- err
	}()
	return ran
}
