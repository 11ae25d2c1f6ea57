package main

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lorasync/lorasync/hub"
)

// hubCmd groups the operator commands that talk to the Hugging Face Hub.
// Settings come from the environment, as for the official clients:
// HF_ENDPOINT, HF_TOKEN (or HUGGING_FACE_HUB_TOKEN, HF_TOKEN_PATH), HF_HOME,
// HF_HUB_CACHE and HF_HUB_OFFLINE.
var hubCmd = &cobra.Command{
	Use:   "hub",
	Short: "Download from and upload to the Hugging Face Hub (settings from HF_* variables)",
}

var hubDownloadCmd = &cobra.Command{
	Use:   "download REPO[@REV]",
	Short: "Download a repository snapshot into the shared HF cache and print its path",
	Long: `Download the files of REPO at REV (default main) into the Hugging Face cache
($HF_HUB_CACHE, shared with Python tools) and print the snapshot directory.
--include/--exclude take fnmatch globs as huggingface_hub does ("*" also
matches "/", a trailing "/" selects a directory).`,
	Args: cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		repo, rev, _ := strings.Cut(args[0], "@")
		include, _ := cmd.Flags().GetStringArray("include")
		exclude, _ := cmd.Flags().GetStringArray("exclude")
		c, err := hubClient(cmd)
		if err != nil {
			return err
		}
		dir, err := c.Snapshot(cmd.Context(), repo, rev, hub.SnapshotOptions{Include: include, Exclude: exclude})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(cmd.OutOrStdout(), dir)
		return err
	},
}

var hubUploadCmd = &cobra.Command{
	Use:   "upload REPO DIR",
	Short: "Upload the files of DIR to REPO in one commit and print the commit URL",
	Long: `Create REPO if needed, then commit every file under DIR (except .git/ and
.cache/) to --branch (default main), or to a new pull request with --pr. Files
the Hub already has with the same content are skipped. Prints the commit URL,
and the pull request URL on a second line with --pr.`,
	Args: cobra.ExactArgs(2),
	RunE: func(cmd *cobra.Command, args []string) error {
		repo, dir := args[0], args[1]
		flags := cmd.Flags()
		branch, _ := flags.GetString("branch")
		pr, _ := flags.GetBool("pr")
		msg, _ := flags.GetString("message")
		private, _ := flags.GetBool("private")
		files, err := dirFiles(dir)
		if err != nil {
			return err
		}
		if len(files) == 0 {
			return fmt.Errorf("hub upload: %s holds no files", dir)
		}
		c, err := hubClient(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		if _, err := c.CreateRepo(ctx, repo, private); err != nil {
			return err
		}
		if branch != "" && branch != "main" {
			if err := c.CreateBranch(ctx, repo, branch, ""); err != nil {
				return err
			}
		}
		if msg == "" {
			msg = "Upload " + filepath.Base(filepath.Clean(dir)) + " with lorasync"
		}
		info, err := c.Upload(ctx, repo, hub.CommitOptions{Branch: branch, Message: msg, CreatePR: pr, Files: files})
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if _, err := fmt.Fprintln(out, info.URL); err != nil {
			return err
		}
		if info.PullRequestURL != "" {
			_, err = fmt.Fprintln(out, info.PullRequestURL)
		}
		return err
	},
}

// hubClient builds a client from the environment, logging to stderr.
func hubClient(cmd *cobra.Command) (*hub.Client, error) {
	o, err := hub.OptionsFromEnv()
	if err != nil {
		return nil, err
	}
	o.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	o.ProgressOutput = cmd.ErrOrStderr()
	if n, _ := cmd.Flags().GetInt("concurrency"); n > 0 {
		o.Concurrency = n
	}
	return hub.New(o)
}

// dirFiles lists the regular files under dir as upload operations, with
// slash-separated repository paths, skipping .git/ and .cache/ at any depth
// (huggingface_hub's upload_folder ignores them too).
func dirFiles(dir string) ([]hub.FileOp, error) {
	var ops []hub.FileOp
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && (d.Name() == ".git" || d.Name() == ".cache") {
				return filepath.SkipDir
			}
			return nil
		}
		st, err := os.Stat(p) // follows symlinks: upload what they point to
		if err != nil {
			return err
		}
		if !st.Mode().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		ops = append(ops, hub.FileOp{Path: filepath.ToSlash(rel), LocalPath: p})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hub upload: list %s: %w", dir, err)
	}
	return ops, nil
}

func init() {
	hubDownloadCmd.Flags().StringArray("include", nil, "only files matching this glob (repeatable)")
	hubDownloadCmd.Flags().StringArray("exclude", nil, "skip files matching this glob (repeatable)")
	hubUploadCmd.Flags().String("branch", "main", "branch to commit to (created if missing)")
	hubUploadCmd.Flags().Bool("pr", false, "open a pull request instead of committing to the branch")
	hubUploadCmd.Flags().String("message", "", "commit message")
	hubUploadCmd.Flags().Bool("private", false, "create the repository as private (ignored if it exists)")
	hubCmd.PersistentFlags().Int("concurrency", 0, "parallel file transfers (default 8)")
	hubCmd.AddCommand(hubDownloadCmd, hubUploadCmd)
	rootCmd.AddCommand(hubCmd)
}
