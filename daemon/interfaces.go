package daemon

import (
	"context"
	"errors"
	"fmt"

	"github.com/lorasync/lorasync/daemon/config"
)

// ErrNotFound is what a Hub implementation returns (wrapped, so that
// errors.Is matches) when a repo, revision or file does not exist. The
// daemon treats it as "not published yet" when watching successors and as
// "nothing pushed yet" when reconciling.
var ErrNotFound = errors.New("not found")

// Hub is everything the daemon needs from the Hugging Face Hub.
//
// Errors: missing repos, revisions and files must match ErrNotFound.
// Errors wrapped with Permanent park the job at once; every other error is
// assumed transient and retried with backoff up to retry.max_attempts. An
// implementation should do its own short per-request retries (5xx, 429) and
// must not blindly retry a commit (see Upload).
type Hub interface {
	// Head returns the commit (40 hex) that revision of repo points to.
	Head(ctx context.Context, repo, revision string) (string, error)
	// ListModels returns the ids ("owner/name") of an author's model repos.
	ListModels(ctx context.Context, author string) ([]string, error)
	// Snapshot makes repo@commit available locally (commit is a full sha)
	// and returns its directory and how many bytes it had to download (0
	// when everything was cached).
	Snapshot(ctx context.Context, repo, commit string) (dir string, downloaded int64, err error)
	// ReadFile returns one file of repo at revision (a branch, commit or
	// "refs/pr/N").
	ReadFile(ctx context.Context, repo, revision, path string) ([]byte, error)
	// PullRequests returns the refs ("refs/pr/N") of repo's open pull
	// requests.
	PullRequests(ctx context.Context, repo string) ([]string, error)
	// Upload commits every regular file under u.Dir (paths relative to it)
	// in one commit, creating the repo (u.Private) and the branch as needed.
	// With u.ParentCommit set the commit must be refused (an error) when the
	// branch head moved; the daemon then re-checks the target before trying
	// again. With u.CreatePR the commit opens a pull request against
	// u.Revision.
	Upload(ctx context.Context, u Upload) (Pushed, error)
}

// Upload is one commit to the Hub.
type Upload struct {
	Repo     string
	Revision string // branch to commit to (or the PR's base branch)
	Dir      string
	Summary  string // commit title
	Message  string // commit description
	// ParentCommit is the branch head the daemon checked for an earlier
	// push of the same migration; "" when the branch did not exist.
	ParentCommit string
	CreatePR     bool
	Private      bool
}

// Pushed is the outcome of an Upload.
type Pushed struct {
	Commit      string // the new commit
	PullRequest string // "refs/pr/N" when CreatePR was set
}

// Converter migrates one adapter from its old base to a new one.
type Converter interface {
	// Convert writes the migrated PEFT adapter into req.OutDir (which does
	// not exist yet). It may write its own README.md (kept as the model
	// card) and lorasync.json (embedded under "convert" in the daemon's). Analysis of the base pair is cached by the converter
	// under req.CacheDir and shared by every adapter of the pair; the daemon
	// runs at most one Convert per pair at a time so the cache is computed
	// once. Bad input (a malformed adapter, an unsupported architecture)
	// must come back wrapped with Permanent.
	Convert(ctx context.Context, req ConvertRequest) (ConvertResult, error)
	// Verify checks a written adapter against its base: it loads back, its
	// tensors are finite and their shapes fit baseDir's model.
	Verify(ctx context.Context, adapterDir, baseDir string) error
}

// ConvertRequest is one migration's input.
type ConvertRequest struct {
	AdapterDir string
	OldBaseDir string
	NewBaseDir string
	OutDir     string
	// CacheDir is where the converter keeps its pair analyses.
	CacheDir string
	// NewBaseRepo and NewBaseCommit go into the output's
	// base_model_name_or_path and revision.
	NewBaseRepo   string
	NewBaseCommit string
	// Where the other inputs came from, for the converter's provenance.
	OldBaseRepo   string
	OldBaseCommit string
	// AdapterID is Adapter.PublicID (never a local path: the converter's
	// record and card are pushed).
	AdapterID     string
	AdapterCommit string
	Options       config.ConvertConfig
}

// ConvertResult reports a migration.
type ConvertResult struct {
	// Summary is one line for logs, status and the model card.
	Summary string
	// Metrics are quality signals (e.g. transfer fit residual) recorded in
	// the provenance file.
	Metrics map[string]float64
}

// permanentError marks errors that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying: a job failing with it is
// parked at once. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err (or an error it wraps) was marked with
// Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// permanentf is fmt.Errorf + Permanent.
func permanentf(format string, args ...any) error {
	return Permanent(fmt.Errorf(format, args...))
}
