package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/lorasync/lorasync/convert"
	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/synth"
	"github.com/lorasync/lorasync/daemon"
	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/daemon/state"
	"github.com/lorasync/lorasync/hub"
	"github.com/lorasync/lorasync/hub/hubtest"
)

// The demo's cast: repos on the fake Hub and the token of their owner.
const (
	token       = "hf_lorasync_demo"
	owner       = "demo"
	baseRepo    = owner + "/tiny-base"
	nextRepo    = owner + "/tiny-base-v2"
	adapterRepo = owner + "/tiny-chat-lora"
	outputRepo  = owner + "/tiny-chat-lora-tiny-base-v2" // target repo_template "{adapter}-{base_name}"
)

// Options configure Run.
type Options struct {
	// Dir is the work directory (created if needed); empty makes a new
	// temporary one. It is left in place for the user to look at.
	Dir string
	// Timeout bounds the wait for the daemon to push (default 3 minutes).
	Timeout time.Duration
}

// Result says where the demo left things.
type Result struct {
	Dir          string // the work directory
	Config       string // the daemon's config file
	OutputRepo   string
	OutputCommit string
	// Adapter is the migrated adapter as downloaded back from the fake Hub.
	Adapter string
}

// Run plays the demo, narrating to w.
func Run(ctx context.Context, w io.Writer, opts Options) (*Result, error) {
	if opts.Timeout == 0 {
		opts.Timeout = 3 * time.Minute
	}
	dir := opts.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "lorasync-demo-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	res := &Result{Dir: dir, Config: filepath.Join(dir, "config.yaml"), OutputRepo: outputRepo}
	say := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	say("lorasync demo: the whole loop, offline, on this machine")
	say("work directory: %s\n", dir)

	srv := hubtest.New()
	defer srv.Close()
	srv.AddToken(token, owner)
	say("1. A fake Hugging Face Hub is serving the real protocol on %s (LFS downloads on %s).", srv.URL, srv.CDNURL)

	models, err := generate(dir)
	if err != nil {
		return nil, err
	}
	if _, err := publish(srv, baseRepo, filepath.Join(dir, "models", "base"), "Release tiny-base"); err != nil {
		return nil, err
	}
	if _, err := publish(srv, adapterRepo, filepath.Join(dir, "models", "adapter"), "Chat adapter, trained on tiny-base"); err != nil {
		return nil, err
	}
	say("2. Published the base model %s: %s.", baseRepo, describe(models.old))
	say("   Published %s: a LoRA adapter (r=8 on q/k/v/o_proj and up/down_proj) trained on it.", adapterRepo)

	if err := writeConfig(dir, srv.URL); err != nil {
		return nil, err
	}
	d, store, logPath, err := startDaemon(res.Config, dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	defer func() {
		stop()
		<-done
	}()
	say("3. The daemon is running (config %s, log %s):", res.Config, logPath)
	say("   it watches %s and its successor %s every second.", baseRepo, nextRepo)

	wait, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	if err := waitFor(wait, done, store, func(s *state.Snapshot) bool {
		return len(s.Tracks) > 0 && !s.Tracks[0].LastPoll.IsZero()
	}); err != nil {
		return nil, fmt.Errorf("demo: waiting for the first poll: %w", err)
	}
	say("   First poll: nothing new, no jobs. The adapter is up to date.")

	commit, err := publish(srv, nextRepo, filepath.Join(dir, "models", "base-v2"), "Release tiny-base-v2")
	if err != nil {
		return nil, err
	}
	say("4. Published a new release %s@%s: %s.", nextRepo, commit[:7], describe(models.new))
	say("   (It was grown from the old base: its layers %s carry old layers 0-%d, the rest are new.)", newLayers(models.truth), models.old.Config.Layers-1)

	var job state.Job
	start := time.Now()
	if err := waitFor(wait, done, store, func(s *state.Snapshot) bool {
		for _, j := range s.Jobs {
			job = j
			if j.Status == state.Done || j.Status == state.Parked {
				return true
			}
		}
		return false
	}); err != nil {
		return nil, fmt.Errorf("demo: waiting for the migration (see %s): %w", logPath, err)
	}
	if job.Status != state.Done {
		return nil, fmt.Errorf("demo: the migration failed: %s (see %s)", job.LastError, logPath)
	}
	res.OutputCommit = job.OutputCommit
	say("5. The daemon noticed the release, downloaded it, migrated the adapter with LoRASuite and pushed it (%.1fs):", time.Since(start).Seconds())
	say("   %s/%s/commit/%s", srv.URL, job.OutputRepo, job.OutputCommit)

	if err := showResult(ctx, w, srv, dir, res); err != nil {
		return nil, err
	}
	say("\nThe daemon never pushes a version twice: its state database records every job, and before a push it")
	say("looks for the same provenance on the Hub, so even a crash between push and record is reconciled.")
	say("Look around %s; `lorasync status --config %s` reads the state the daemon left.", dir, res.Config)
	return res, nil
}

type pair struct {
	old, new *synth.Model
	truth    *synth.Truth
}

// generate writes the old base, its adapter and the new release under dir/models.
func generate(dir string) (*pair, error) {
	old, err := synth.Random(synth.Spec{ModelType: "llama", Hidden: 64, Layers: 4, Heads: 4, Intermediate: 160, Vocab: 2000}, 1)
	if err != nil {
		return nil, err
	}
	nw, truth, err := synth.Upgrade(old, synth.UpgradeSpec{Hidden: 96, Layers: 6, KVHeads: 2, Intermediate: 256, ExtraVocab: 500, Rotate: true, RandomLayers: true, Seed: 2})
	if err != nil {
		return nil, err
	}
	models := filepath.Join(dir, "models")
	if err := old.Write(filepath.Join(models, "base")); err != nil {
		return nil, err
	}
	if err := nw.Write(filepath.Join(models, "base-v2")); err != nil {
		return nil, err
	}
	spec := synth.AdapterSpec{R: 8, Seed: 3, Targets: []arch.Role{arch.Q, arch.K, arch.V, arch.O, arch.Up, arch.Down}}
	if _, err := synth.WriteAdapter(filepath.Join(models, "adapter"), old.Config, baseRepo, spec); err != nil {
		return nil, err
	}
	return &pair{old, nw, truth}, nil
}

func describe(m *synth.Model) string {
	c := m.Config
	attn := "MHA"
	if c.KVHeads != c.Heads {
		attn = fmt.Sprintf("GQA with %d KV heads", c.KVHeads)
	}
	return fmt.Sprintf("%s, hidden %d, %d layers, %d heads (%s), vocabulary %d", c.ModelType, c.Hidden, c.Layers, c.Heads, attn, c.Vocab)
}

// publish commits every file of dir to repo's main branch.
func publish(srv *hubtest.Server, repo, dir, message string) (string, error) {
	if err := srv.CreateRepo(repo, false); err != nil && !errors.Is(err, hubtest.ErrRepoExists) {
		return "", err
	}
	files := map[string][]byte{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return "", err
		}
		files[e.Name()] = data
	}
	return srv.Commit(repo, "main", files, message)
}

// writeConfig writes the daemon's config and the token file it names.
func writeConfig(dir, endpoint string) error {
	if err := os.WriteFile(filepath.Join(dir, "hf_token"), []byte(token+"\n"), 0o600); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`# Written by lorasync demo; see config.yaml in the repository for every key.
hub:
  endpoint: %s
  token_file: hf_token
state_dir: state
cache_dir: cache
schedule: "@every 1s"
listen: ""
concurrency: 1
min_free_disk: 64MiB
tracks:
  - name: tiny
    base: {repo: %s, revision: main}
    follow:
      commits: true
      successors: [%s]
    adapters:
      - repo: %s
    target:
      repo_template: "{adapter}-{base_name}"
`, endpoint, baseRepo, nextRepo, adapterRepo)
	return os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o644)
}

// startDaemon builds the daemon from the config file as `lorasync daemon` does.
func startDaemon(path, dir string) (*daemon.Daemon, *state.Store, string, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, nil, "", err
	}
	logPath := filepath.Join(dir, "daemon.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, nil, "", err
	}
	log := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))
	tok, _, err := cfg.ResolveToken(os.Getenv)
	if err != nil {
		return nil, nil, "", err
	}
	h, conv, err := daemon.Backends(cfg, tok, log, hub.ProgressOff)
	if err != nil {
		return nil, nil, "", err
	}
	d, err := daemon.New(daemon.Options{Config: cfg, ConfigPath: path, Hub: h, Converter: conv, Logger: log})
	if err != nil {
		return nil, nil, "", err
	}
	return d, d.Store(), logPath, nil
}

// waitFor polls the state until cond holds, the daemon exits or ctx ends.
func waitFor(ctx context.Context, done <-chan error, store *state.Store, cond func(*state.Snapshot) bool) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if snap, err := store.Snapshot(); err == nil && cond(snap) {
			return nil
		}
		select {
		case err := <-done:
			return fmt.Errorf("the daemon stopped: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// showResult downloads the pushed adapter back and prints its summary.
func showResult(ctx context.Context, w io.Writer, srv *hubtest.Server, dir string, res *Result) error {
	c, err := hub.New(hub.Options{Endpoint: srv.URL, Token: token, CacheDir: filepath.Join(dir, "downloaded"), Progress: hub.ProgressOff})
	if err != nil {
		return err
	}
	snap, err := c.Snapshot(ctx, res.OutputRepo, res.OutputCommit, hub.SnapshotOptions{})
	if err != nil {
		return err
	}
	res.Adapter = snap
	entries, err := os.ReadDir(snap)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	fmt.Fprintf(w, "   files: %s\n", strings.Join(names, ", "))
	data, err := os.ReadFile(filepath.Join(snap, daemon.ProvenanceFile))
	if err != nil {
		return err
	}
	var prov daemon.Provenance
	if err := json.Unmarshal(data, &prov); err != nil {
		return fmt.Errorf("demo: %s: %w", daemon.ProvenanceFile, err)
	}
	var conv convert.Provenance
	if err := json.Unmarshal(prov.Convert, &conv); err != nil {
		return fmt.Errorf("demo: %s: convert record: %w", daemon.ProvenanceFile, err)
	}
	fmt.Fprintf(w, "6. What the migration did (from the pushed %s):\n", daemon.ProvenanceFile)
	var b strings.Builder
	convert.WriteSummary(&b, &conv)
	for _, line := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
		fmt.Fprintf(w, "   %s\n", line)
	}
	fmt.Fprintf(w, "7. The migrated adapter, downloaded back through the Hub client: %s\n", snap)
	if _, err := os.Stat(filepath.Join(snap, convert.HeatmapFile)); err == nil {
		fmt.Fprintf(w, "   The CKA layer-similarity heatmap with the chosen layer map: %s\n", filepath.Join(snap, convert.HeatmapFile))
	}
	return nil
}

func newLayers(t *synth.Truth) string {
	parts := make([]string, len(t.Layers))
	for i, lp := range t.Layers {
		parts[i] = fmt.Sprint(lp.New)
	}
	return strings.Join(parts, ",")
}
