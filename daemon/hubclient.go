package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/lorasync/lorasync/hub"
)

// HubClient adapts *hub.Client to the Hub interface: it maps the client's
// typed errors onto the daemon's (missing repo, revision or file ->
// ErrNotFound; errors retrying cannot fix -> Permanent, except a moved
// branch, which the daemon handles by reconciling and trying again) and
// composes repo and branch creation with the commit.
type HubClient struct {
	c *hub.Client
}

// NewHubClient wraps c.
func NewHubClient(c *hub.Client) *HubClient { return &HubClient{c: c} }

// hubErr sorts a hub error for the daemon.
func hubErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, hub.ErrRepoNotFound), errors.Is(err, hub.ErrRevisionNotFound), errors.Is(err, hub.ErrEntryNotFound):
		return Permanent(fmt.Errorf("%w: %w", ErrNotFound, err))
	case errors.Is(err, hub.ErrConflict):
		return err // the branch moved under a parentCommit: reconcile and retry
	case errors.Is(err, hub.ErrOffline):
		return err // the network may come back
	case hub.IsPermanent(err):
		return Permanent(err)
	}
	return err
}

// Head implements Hub.
func (h *HubClient) Head(ctx context.Context, repo, revision string) (string, error) {
	info, err := h.c.RepoInfo(ctx, repo, revision)
	if err != nil {
		return "", hubErr(err)
	}
	if info.SHA == "" {
		return "", fmt.Errorf("hub: %s@%s: repo info without a commit sha", repo, revision)
	}
	return info.SHA, nil
}

// ListModels implements Hub.
func (h *HubClient) ListModels(ctx context.Context, author string) ([]string, error) {
	var ids []string
	for info, err := range h.c.ListModels(ctx, hub.ModelQuery{Author: author}) {
		if err != nil {
			return nil, hubErr(err)
		}
		ids = append(ids, info.ID)
	}
	return ids, nil
}

// snapshotFiles selects what a migration reads from a base or adapter
// repo: top-level JSON (config, tokenizer, adapter config, shard index),
// safetensors weights, SentencePiece models and tokenizer text files.
// Everything else is skipped: PyTorch .bin duplicates of the weights,
// original/ checkpoints, GGUF and ONNX exports can multiply the download
// several times over.
var snapshotFiles = hub.SnapshotOptions{
	Include: []string{"*.json", "*.safetensors", "tokenizer.model", "*.txt"},
	Exclude: []string{"*/*"}, // fnmatch "*" crosses "/": this drops every subdirectory
}

// Snapshot implements Hub with snapshotFiles. The byte count is that of the snapshot's files
// when the snapshot was not in the cache before, 0 otherwise: blobs shared
// with other cached commits are counted although not fetched again, so it
// is an upper bound.
func (h *HubClient) Snapshot(ctx context.Context, repo, commit string) (string, int64, error) {
	cached := h.cachedSnapshot(repo, commit)
	dir, err := h.c.Snapshot(ctx, repo, commit, snapshotFiles)
	if err != nil {
		return "", 0, hubErr(err)
	}
	if cached {
		return dir, 0, nil
	}
	n, err := treeSize(dir)
	if err != nil {
		return "", 0, err
	}
	return dir, n, nil
}

func (h *HubClient) cachedSnapshot(repo, commit string) bool {
	dir := filepath.Join(h.c.CacheDir(), "models--"+strings.ReplaceAll(repo, "/", "--"), "snapshots", commit)
	_, err := os.Stat(dir)
	return err == nil
}

// treeSize sums the sizes of the regular files (followed through the
// cache's symlinks) under dir.
func treeSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st.Mode().IsRegular() {
			n += st.Size()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("snapshot %s: %w", dir, err)
	}
	return n, nil
}

// ReadFile implements Hub.
func (h *HubClient) ReadFile(ctx context.Context, repo, revision, path string) ([]byte, error) {
	p, err := h.c.DownloadFile(ctx, repo, revision, path)
	if err != nil {
		return nil, hubErr(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("hub: %s@%s %s: %w", repo, revision, path, err)
	}
	return data, nil
}

// PullRequests implements Hub.
func (h *HubClient) PullRequests(ctx context.Context, repo string) ([]string, error) {
	refs, err := h.c.Refs(ctx, repo)
	if err != nil {
		return nil, hubErr(err)
	}
	var out []string
	for _, r := range refs.PullRequests {
		out = append(out, r.Ref)
	}
	return out, nil
}

// Upload implements Hub: it creates the repo (for new targets) and the
// branch as needed, then makes one commit of every file under u.Dir.
func (h *HubClient) Upload(ctx context.Context, u Upload) (Pushed, error) {
	var files []hub.FileOp
	err := filepath.WalkDir(u.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(u.Dir, p)
		files = append(files, hub.FileOp{Path: filepath.ToSlash(rel), LocalPath: p})
		return err
	})
	if err != nil {
		return Pushed{}, fmt.Errorf("upload %s: %w", u.Dir, err)
	}
	if !u.CreatePR {
		if _, err := h.c.CreateRepo(ctx, u.Repo, u.Private); err != nil {
			return Pushed{}, hubErr(err)
		}
		if u.Revision != defaultRevision && u.ParentCommit == "" {
			if err := h.c.CreateBranch(ctx, u.Repo, u.Revision, ""); err != nil {
				return Pushed{}, hubErr(err)
			}
		}
	}
	info, err := h.c.Upload(ctx, u.Repo, hub.CommitOptions{
		Branch: u.Revision, Message: u.Summary, Description: u.Message,
		ParentCommit: u.ParentCommit, CreatePR: u.CreatePR, Files: files,
	})
	if err != nil {
		return Pushed{}, hubErr(err)
	}
	p := Pushed{Commit: info.OID}
	if u.CreatePR {
		// https://hub/{repo}/discussions/N -> refs/pr/N
		i := strings.LastIndex(info.PullRequestURL, "/")
		if i < 0 || i == len(info.PullRequestURL)-1 {
			return p, fmt.Errorf("hub: pull request on %s: unexpected URL %q", u.Repo, info.PullRequestURL)
		}
		p.PullRequest = "refs/pr/" + info.PullRequestURL[i+1:]
	}
	return p, nil
}
