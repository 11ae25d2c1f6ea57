package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/lorasync/lorasync/daemon"
	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/daemon/state"
	"github.com/lorasync/lorasync/hub"
)

// newBackends builds the Hub client and the converter the daemon drives
// (daemon.Backends). Tests may replace it.
var newBackends = func(ctx context.Context, cfg *config.Config, token string, log *slog.Logger) (daemon.Hub, daemon.Converter, error) {
	progress := hub.ProgressAuto // a bar on a terminal, periodic log records otherwise
	if daemon.UnderSystemd(os.Getenv) {
		progress = hub.ProgressLog
	}
	return daemon.Backends(cfg, token, log, progress)
}

var daemonCmd = &cobra.Command{
	Use:   "daemon --config FILE",
	Short: "Watch base models and migrate adapters until stopped (systemd Type=notify)",
	Long: `daemon polls every track on the configured schedule, migrates every registered
adapter to each new base version and pushes the results. It reloads its config
on SIGHUP and when the file changes, serves /healthz, /readyz and /metrics on
the listen address, and talks sd_notify (READY, STATUS, WATCHDOG) under systemd.
SIGTERM stops it; interrupted jobs resume at the next start.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, _ []string) error {
		d, _, err := setupDaemon(cmd, false)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Run(cmd.Context())
	},
}

var runCmd = &cobra.Command{
	Use:   "run --config FILE [--dry-run] [--json]",
	Short: "One pass: poll every track, run every runnable job, exit (for timers and cron)",
	Long: `run polls every track once, runs every job that is due (new ones, and failed
ones whose backoff has passed) and exits. It exits non-zero when a poll failed
or a job was parked. With --dry-run it only discovers and prints the plan:
nothing is written, converted or pushed.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, _ []string) error {
		dry, _ := cmd.Flags().GetBool("dry-run")
		asJSON, _ := cmd.Flags().GetBool("json")
		d, _, err := setupDaemon(cmd, dry)
		if err != nil {
			return err
		}
		defer d.Close()
		rep, err := d.RunOnce(cmd.Context())
		if err != nil {
			return err
		}
		if asJSON {
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			if err := enc.Encode(rep); err != nil {
				return err
			}
		} else {
			printReport(cmd.OutOrStdout(), rep)
		}
		return runExitError(rep)
	},
}

var checkCmd = &cobra.Command{
	Use:   "check --config FILE",
	Short: "Validate a config file and print what it sets up",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, _ []string) error {
		cfg, err := loadConfig(cmd)
		if err != nil {
			return err
		}
		_, src, err := cfg.ResolveToken(os.Getenv)
		if err != nil {
			return err
		}
		return printCheck(cmd.OutOrStdout(), cfg, src, time.Now())
	},
}

var statusCmd = &cobra.Command{
	Use:   "status (--config FILE | --state-dir DIR) [--json]",
	Short: "Show tracks and jobs from the state database (works while the daemon runs)",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, _ []string) error {
		dir, err := stateDir(cmd)
		if err != nil {
			return err
		}
		s, err := state.OpenReadOnly(dir, state.Options{})
		if err != nil {
			return err
		}
		snap, err := s.Snapshot()
		if err != nil {
			return err
		}
		if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(snap)
		}
		printStatus(cmd.OutOrStdout(), snap)
		return nil
	},
}

var retryCmd = &cobra.Command{
	Use:   "retry (--config FILE | --state-dir DIR) (--all | MATCH...)",
	Short: "Put parked and failed jobs back to pending with a fresh attempt budget",
	Long: `retry requeues parked and failed jobs whose description ("track: adapter ->
repo@commit", as shown by status) contains one of the MATCH strings, or all of
them with --all: use it after fixing what made them fail (a token, a broken
adapter). It is safe while the daemon runs; the daemon starts them at its next
poll, or at once after "systemctl reload lorasync".`,
	RunE: func(cmd *cobra.Command, args []string) error {
		all, _ := cmd.Flags().GetBool("all")
		if all == (len(args) > 0) {
			return errors.New("retry: give --all or MATCH strings, not both")
		}
		dir, err := stateDir(cmd)
		if err != nil {
			return err
		}
		if _, err := state.OpenReadOnly(dir, state.Options{}); err != nil {
			return err // no database: nothing to retry, and none is created
		}
		s, err := state.Open(dir, state.Options{})
		if err != nil {
			return err
		}
		jobs, err := s.Requeue(func(j state.Job) bool {
			for _, m := range args {
				if strings.Contains(j.Key.String(), m) {
					return true
				}
			}
			return all
		}, time.Now())
		if err != nil {
			return err
		}
		for _, j := range jobs {
			fmt.Fprintf(cmd.OutOrStdout(), "requeued %s\n", j.Key)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%d jobs requeued\n", len(jobs))
		return nil
	},
}

// stateDir is --state-dir, or state_dir from --config.
func stateDir(cmd *cobra.Command) (string, error) {
	if dir, _ := cmd.Flags().GetString("state-dir"); dir != "" {
		return dir, nil
	}
	cfg, err := loadConfig(cmd)
	if err != nil {
		return "", fmt.Errorf("give --state-dir or a loadable --config: %w", err)
	}
	return cfg.StateDir, nil
}

func init() {
	for _, c := range []*cobra.Command{daemonCmd, runCmd, checkCmd, statusCmd, retryCmd} {
		c.Flags().String("config", "", "config file (see config.yaml for every key)")
		rootCmd.AddCommand(c)
	}
	runCmd.Flags().Bool("dry-run", false, "discover and plan only: write nothing, push nothing")
	runCmd.Flags().Bool("json", false, "print the report as JSON")
	statusCmd.Flags().String("state-dir", "", "state directory (instead of reading it from --config)")
	retryCmd.Flags().String("state-dir", "", "state directory (instead of reading it from --config)")
	retryCmd.Flags().Bool("all", false, "requeue every parked and failed job")
	statusCmd.Flags().Bool("json", false, "print the whole state as JSON")
}

func loadConfig(cmd *cobra.Command) (*config.Config, error) {
	path, _ := cmd.Flags().GetString("config")
	if path == "" {
		return nil, errors.New("--config FILE is required")
	}
	return config.Load(path)
}

// setupDaemon loads the config, builds the logger, the token, the metrics
// registry and the backends, and creates the daemon.
func setupDaemon(cmd *cobra.Command, dryRun bool) (*daemon.Daemon, *config.Config, error) {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return nil, nil, err
	}
	log, err := daemon.NewLogger(os.Stderr, cfg.Log.Format, cfg.Log.Level, os.Getenv)
	if err != nil {
		return nil, nil, err
	}
	token, src, err := cfg.ResolveToken(os.Getenv)
	if err != nil {
		return nil, nil, err
	}
	log.Info("hub token", "source", string(src)) // the source, never the token
	logLinalg(log)
	hub, conv, err := newBackends(cmd.Context(), cfg, token, log)
	if err != nil {
		return nil, nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d, err := daemon.New(daemon.Options{
		Config: cfg, ConfigPath: cfg.Path, Hub: hub, Converter: conv,
		Logger: log, Registry: reg, DryRun: dryRun,
	})
	return d, cfg, err
}

// runExitError fails `run` when a poll failed or a job was parked; a job
// that failed and will be retried by a later run is not an error.
func runExitError(rep *daemon.Report) error {
	var errs []error
	for _, t := range rep.Tracks {
		if t.Error != "" {
			errs = append(errs, fmt.Errorf("track %s: %s", t.Track, t.Error))
		}
	}
	for _, j := range rep.Jobs {
		if j.Status == state.Parked {
			errs = append(errs, fmt.Errorf("%s: parked: %s", j.Key, j.LastError))
		}
	}
	return errors.Join(errs...)
}

func printReport(w io.Writer, rep *daemon.Report) {
	if rep.DryRun {
		fmt.Fprintln(w, "dry run: nothing was written or pushed")
	}
	for _, t := range rep.Tracks {
		fmt.Fprintf(w, "track %s: baseline %s\n", t.Track, short(t.Baseline))
		if t.Error != "" {
			fmt.Fprintf(w, "  poll failed: %s\n", t.Error)
		}
		for _, warn := range t.Warnings {
			fmt.Fprintf(w, "  warning: %s\n", warn)
		}
		for _, v := range t.NewVersions {
			fmt.Fprintf(w, "  new version: %s@%s (%s)\n", v.Repo, short(v.Commit), v.Why)
		}
		verb := "planned"
		if rep.DryRun {
			verb = "would plan"
		}
		for _, k := range t.NewJobs {
			fmt.Fprintf(w, "  %s: %s\n", verb, k)
		}
		sverb := "superseded"
		if rep.DryRun {
			sverb = "would supersede"
		}
		for _, j := range t.Superseded {
			fmt.Fprintf(w, "  %s: %s (%s)\n", sverb, j.Key, j.Why)
		}
		if rep.DryRun {
			for _, k := range t.Runnable {
				fmt.Fprintf(w, "  would run: %s\n", k)
			}
		}
	}
	for _, j := range rep.Jobs {
		fmt.Fprintf(w, "job %s: %s\n", j.Key, jobOutcome(j))
	}
}

func jobOutcome(j state.Job) string {
	switch j.Status {
	case state.Done:
		s := fmt.Sprintf("done -> %s@%s commit %s", j.OutputRepo, j.OutputRevision, short(j.OutputCommit))
		if j.PullRequest != "" {
			s += " (" + j.PullRequest + ")"
		}
		if j.Reconciled {
			s += " (found on the Hub from an earlier attempt)"
		}
		return s
	case state.Failed:
		return fmt.Sprintf("failed (attempt %d, retry after %s): %s", j.Attempts, j.NextAttempt.Format(time.RFC3339), j.LastError)
	case state.Parked:
		return fmt.Sprintf("parked after %d attempts: %s", j.Attempts, j.LastError)
	case state.Superseded:
		return j.LastError
	case state.Orphaned:
		return "orphaned: " + j.LastError
	}
	return string(j.Status)
}

func printCheck(w io.Writer, cfg *config.Config, tokenSrc config.TokenSource, now time.Time) error {
	sched, err := config.ParseSchedule(cfg.Schedule)
	if err != nil {
		return err
	}
	next := sched.Next(now)
	fmt.Fprintf(w, "config %s: OK\n", cfg.Path)
	fmt.Fprintf(w, "hub %s, token from %s\n", cfg.Hub.Endpoint, tokenSrc)
	fmt.Fprintf(w, "state %s, cache %s (min free %s)\n", cfg.StateDir, cfg.CacheDir, cfg.MinFreeDisk)
	fmt.Fprintf(w, "schedule %q: next %s, then %s\n", cfg.Schedule, next.Format(time.RFC3339), sched.Next(next).Format(time.RFC3339))
	fmt.Fprintf(w, "concurrency %d, retry %d attempts (backoff %s..%s), listen %q\n",
		cfg.Concurrency, cfg.Retry.MaxAttempts, cfg.Retry.BackoffBase, cfg.Retry.BackoffMax, cfg.Listen)
	for _, t := range cfg.Tracks {
		fmt.Fprintf(w, "track %s: base %s@%s\n", t.Name, t.Base.Repo, t.Base.Revision)
		var follow []string
		if t.Follow.Commits {
			follow = append(follow, "new commits")
		}
		if len(t.Follow.Successors) > 0 {
			follow = append(follow, "successors "+strings.Join(t.Follow.Successors, ", "))
		}
		if d := t.Follow.Discover; d != nil {
			follow = append(follow, fmt.Sprintf("repos of %s matching %s", d.Author, d.Pattern))
		}
		fmt.Fprintf(w, "  follows: %s\n", strings.Join(follow, "; "))
		for _, a := range t.Adapters {
			if a.IsLocal() {
				fmt.Fprintf(w, "  adapter: %s%s\n", a.Path, missing(filepath.Join(a.Path, "adapter_config.json")))
			} else {
				fmt.Fprintf(w, "  adapter: %s@%s\n", a.Repo, a.Revision)
			}
		}
		for _, d := range t.DropinDirs {
			fmt.Fprintf(w, "  drop-in dir: %s%s\n", d, missing(d))
		}
		tg := t.Target
		switch {
		case tg.RepoTemplate != "":
			fmt.Fprintf(w, "  target: repo %q (owner %q, private %v)\n", tg.RepoTemplate, tg.Owner, tg.Private)
		case tg.Branch != "":
			fmt.Fprintf(w, "  target: branch %q of each adapter repo\n", tg.Branch)
		default:
			fmt.Fprintln(w, "  target: a pull request on each adapter repo")
		}
		c := t.Convert
		fmt.Fprintf(w, "  convert: layer_map %s, transfer %s, head_transfer %s, input_map %s\n", c.LayerMap, c.Transfer, c.HeadTransfer, c.InputMap)
	}
	return nil
}

// missing is a note for check's output when path does not exist (yet).
func missing(path string) string {
	if _, err := os.Stat(path); err != nil {
		return " (not found: " + err.Error() + ")"
	}
	return ""
}

func printStatus(w io.Writer, snap *state.Snapshot) {
	fmt.Fprintf(w, "state %s\n", snap.Path)
	for _, t := range snap.Tracks {
		poll := "never polled"
		if !t.LastPoll.IsZero() {
			poll = "last poll " + t.LastPoll.Format(time.RFC3339)
			if t.LastPollError != "" {
				poll += " FAILED: " + t.LastPollError
			}
		}
		fmt.Fprintf(w, "track %s: base %s@%s (baseline %s); %s\n", t.Track, t.BaseRepo, t.BaseRevision, short(t.BaselineCommit), poll)
		for _, v := range t.Versions {
			fmt.Fprintf(w, "  version %s@%s (%s, found %s)\n", v.Repo, short(v.Commit), v.Why, v.Found.Format(time.RFC3339))
		}
	}
	c := snap.Counts
	fmt.Fprintf(w, "jobs: %d running, %d pending, %d failed, %d parked, %d done, %d superseded, %d orphaned\n",
		c[state.Running], c[state.Pending], c[state.Failed], c[state.Parked], c[state.Done], c[state.Superseded], c[state.Orphaned])
	if len(snap.Jobs) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tATTEMPTS\tJOB\tRESULT")
	for _, j := range snap.Jobs {
		result := ""
		switch j.Status {
		case state.Done:
			result = j.OutputRepo + "@" + j.OutputRevision + " " + short(j.OutputCommit)
			if j.PullRequest != "" {
				result += " " + j.PullRequest
			}
		case state.Failed:
			result = "retry after " + j.NextAttempt.Format(time.RFC3339) + ": " + oneLine(j.LastError)
		case state.Parked, state.Pending, state.Superseded, state.Orphaned:
			result = oneLine(j.LastError)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", j.Status, j.Attempts, j.Key, result)
	}
	tw.Flush()
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}
