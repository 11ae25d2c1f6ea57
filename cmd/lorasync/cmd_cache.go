package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lorasync/lorasync/daemon"
	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/daemon/state"
)

var cacheCmd = &cobra.Command{
	Use:   "cache",
	Short: "Show and trim what the daemon keeps under cache_dir (base snapshots, pair analyses, MLP operators)",
	Long: `cache works on a daemon's cache_dir: the Hub cache of downloaded models
(cache_dir/hub, the huggingface_hub layout) and the converter's caches
(cache_dir/convert: pair analyses with their MLP operators). Give --config (the
cache_dir, the state and cache.* come from it) or --cache-dir. The daemon trims
both after every job by itself; these commands show and do it by hand.`,
}

var cacheStatusCmd = &cobra.Command{
	Use:   "status (--config FILE | --cache-dir DIR) [--json]",
	Short: "Show cache usage: base snapshots per repo and commit (and, with --config, why each is kept), pair analyses, MLP operators",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, _ []string) error {
		dir, cfg, err := cacheTarget(cmd)
		if err != nil {
			return err
		}
		var snap *state.Snapshot
		if cfg != nil {
			if snap, err = readState(cfg.StateDir); err != nil {
				return err
			}
		}
		st, err := daemon.ReadCacheStatus(daemon.HubCacheDir(dir), daemon.ConvertCacheDir(dir), cfg, snap)
		if err != nil {
			return err
		}
		if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		printCacheStatus(cmd.OutOrStdout(), dir, st, snap != nil)
		return nil
	},
}

var cachePruneCmd = &cobra.Command{
	Use:   "prune (--config FILE | --cache-dir DIR) [--max-size N] [--dry-run] [--json]",
	Short: "Remove base snapshots no job needs and the least recently used pair analyses beyond a size",
	Long: `prune removes what the daemon would after a job: with --config, the base
snapshots that no pending, running or failed job needs and that are neither a
track's baseline nor a repo's latest version (unless cache.keep_base_snapshots);
and the least recently used pair analyses, each with its MLP operators, until
the converter's cache fits --max-size (default: cache.max_size; none with only
--cache-dir). Pairs a conversion is using are never removed. Base snapshots need
the daemon stopped (prune takes the state directory's lock); while it runs,
only the converter's cache is pruned.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, _ []string) error {
		dir, cfg, err := cacheTarget(cmd)
		if err != nil {
			return err
		}
		dry, _ := cmd.Flags().GetBool("dry-run")
		o := daemon.CacheCollectOptions{ConvertDir: daemon.ConvertCacheDir(dir), MaxConvertBytes: -1, DryRun: dry,
			Logger: slog.New(slog.DiscardHandler)} // the report below says it all
		if cfg != nil && cfg.Cache.MaxSize > 0 {
			o.MaxConvertBytes = int64(cfg.Cache.MaxSize)
		}
		if s, _ := cmd.Flags().GetString("max-size"); s != "" {
			n, err := config.ParseByteSize(s)
			if err != nil {
				return fmt.Errorf("--max-size: %w", err)
			}
			o.MaxConvertBytes = int64(n)
		}
		w := cmd.OutOrStdout()
		if cfg != nil && !cfg.Cache.KeepBaseSnapshots {
			owner, err := state.AcquireOwner(cfg.StateDir)
			switch {
			case errors.Is(err, state.ErrOwned):
				fmt.Fprintf(w, "base snapshots left alone: %v (the daemon removes them itself)\n", err)
			case err != nil:
				return err
			default:
				defer owner.Release()
				snap, err := readState(cfg.StateDir)
				if err != nil {
					return err
				}
				if snap != nil {
					o.Config, o.State, o.HubDir = cfg, snap, daemon.HubCacheDir(dir)
				}
			}
		}
		rep, err := daemon.CollectCaches(cmd.Context(), o)
		if err != nil {
			return err
		}
		if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(rep)
		}
		printPruneReport(w, rep)
		return nil
	},
}

// cacheTarget is the daemon's cache_dir, from --cache-dir or --config; the
// config is nil without --config.
func cacheTarget(cmd *cobra.Command) (string, *config.Config, error) {
	dir, _ := cmd.Flags().GetString("cache-dir")
	path, _ := cmd.Flags().GetString("config")
	if dir == "" && path == "" {
		return "", nil, errors.New("give --config FILE or --cache-dir DIR")
	}
	var cfg *config.Config
	if path != "" {
		var err error
		if cfg, err = config.Load(path); err != nil {
			return "", nil, err
		}
		if dir == "" {
			dir = cfg.CacheDir
		}
	}
	switch fi, err := os.Stat(dir); {
	case errors.Is(err, fs.ErrNotExist):
		// Nothing downloaded yet: an empty cache (never made here).
	case err != nil:
		return "", nil, fmt.Errorf("cache dir %s: %w", dir, err)
	case !fi.IsDir():
		return "", nil, fmt.Errorf("cache dir %s: not a directory", dir)
	}
	return dir, cfg, nil
}

// readState reads the state at dir; nil when there is none yet.
func readState(dir string) (*state.Snapshot, error) {
	s, err := state.OpenReadOnly(dir, state.Options{})
	if errors.Is(err, state.ErrNoState) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return s.Snapshot()
}

func printCacheStatus(w io.Writer, dir string, st *daemon.CacheStatus, withState bool) {
	size := func(n int64) string { return config.ByteSize(n).String() }
	fmt.Fprintf(w, "cache_dir %s\n", dir)
	fmt.Fprintf(w, "models (%s):\n", st.Hub.Dir)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  REPO\tCOMMIT\tFILES\tSIZE\tFREES\tREFS\tKEPT FOR")
	var snapshots, blobs int64
	for _, r := range st.Hub.Repos {
		for _, s := range r.Snapshots {
			kept := s.Needed
			if !withState {
				kept = "? (give --config)"
			} else if kept == "" {
				kept = "- (prune removes it)"
			}
			refs := "-"
			if len(s.Refs) > 0 {
				refs = fmt.Sprint(s.Refs)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.Repo, short(s.Commit), s.Files, size(s.Bytes), size(s.UniqueBytes), refs, kept)
			snapshots++
		}
		blobs += r.BlobBytes + r.StaleBytes
		if r.UnlinkedBytes+r.StaleBytes > 0 {
			fmt.Fprintf(tw, "  %s\t(no snapshot)\t\t%s\t\t\t\n", r.Repo, size(r.UnlinkedBytes+r.StaleBytes))
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "  %d snapshots, %s of blobs\n", snapshots, size(blobs))
	c := st.Convert
	mlpFiles := 0
	for _, e := range c.Entries {
		mlpFiles += e.MLPFiles
	}
	fmt.Fprintf(w, "converter (%s):\n", c.Dir)
	fmt.Fprintf(w, "  pair analyses  %d, %s\n", len(c.Entries), size(c.PairBytes()))
	fmt.Fprintf(w, "  MLP operators  %d files, %s\n", mlpFiles, size(c.MLPBytes()))
	fmt.Fprintf(w, "  identities     %d files, %s\n", c.IdentityFiles, size(c.IdentityBytes))
	if c.StaleBytes+c.OtherBytes > 0 {
		fmt.Fprintf(w, "  stale %s, other %s\n", size(c.StaleBytes), size(c.OtherBytes))
	}
	fmt.Fprintf(w, "  total          %s\n", size(c.TotalBytes()))
	if len(c.Entries) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  PAIR\tLAST USED\tANALYSIS\tMLP\t(least recently used first)")
		for _, e := range c.Entries {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t\n", e.Key[:12], e.LastUsed.Format(time.RFC3339), size(e.PairBytes), size(e.MLPBytes))
		}
		tw.Flush()
	}
}

func printPruneReport(w io.Writer, rep *daemon.CacheCollectReport) {
	size := func(n int64) string { return config.ByteSize(n).String() }
	verb := "removed"
	if rep.DryRun {
		verb = "would remove"
	}
	for _, s := range rep.Snapshots {
		fmt.Fprintf(w, "%s snapshot %s@%s (%s)\n", verb, s.Repo, short(s.Commit), size(s.UniqueBytes))
	}
	if len(rep.Snapshots) > 0 || rep.SnapshotBytes > 0 { // leftovers of a killed collection free bytes too
		fmt.Fprintf(w, "base snapshots: %s freed\n", size(rep.SnapshotBytes))
	}
	if c := rep.Convert; c != nil {
		for _, e := range c.Removed {
			fmt.Fprintf(w, "%s pair %s (%s, last used %s)\n", verb, e.Key[:12], size(e.Bytes()), e.LastUsed.Format(time.RFC3339))
		}
		for _, e := range c.InUse {
			fmt.Fprintf(w, "kept pair %s: in use\n", e.Key[:12])
		}
		fmt.Fprintf(w, "converter cache: %s -> %s (stale leftovers %s)\n", size(c.Before), size(c.After), size(c.StaleBytes))
	}
}

func init() {
	for _, c := range []*cobra.Command{cacheStatusCmd, cachePruneCmd} {
		c.Flags().String("config", "", "config file: its cache_dir, state_dir and cache.* keys")
		c.Flags().String("cache-dir", "", "the daemon's cache_dir (instead of, or overriding, the config's)")
		c.Flags().Bool("json", false, "print the result as JSON")
		cacheCmd.AddCommand(c)
	}
	cachePruneCmd.Flags().String("max-size", "", `bound on the converter's cache, e.g. "50GB" ("0" removes every pair not in use)`)
	cachePruneCmd.Flags().Bool("dry-run", false, "say what would be removed, remove nothing")
	rootCmd.AddCommand(cacheCmd)
}
