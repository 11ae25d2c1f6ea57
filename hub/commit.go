package hub

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Upload makes one commit on opts.Branch adding opts.Files and removing
// opts.Deletes, the way create_commit does:
//
//  1. hash every file; validate README.md's YAML with the Hub if it is included;
//  2. preupload: learn which files go through LFS, and skip files whose
//     content the Hub already has at that path (CommitInfo.Unchanged);
//  3. upload LFS content (basic or multipart, presigned URLs, no token) and
//     verify it;
//  4. POST the NDJSON commit, with parentCommit when opts.ParentCommit is
//     set so a moved branch fails with ErrConflict instead of being clobbered.
//
// The commit POST is not retried blindly: when its answer is lost, the branch
// head is read back, and the commit counts as made if the head moved to a
// commit with our message on top of the head we started from; otherwise it
// is sent again with the same parentCommit, or, when the caller set none,
// with the head just read as parentCommit, so that a first attempt landing
// late turns the resend into a refusal rather than a second commit. If
// nothing changed, no commit is made and NoOp is set.
func (c *Client) Upload(ctx context.Context, repo string, opts CommitOptions) (*CommitInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	branch := opts.Branch
	if branch == "" {
		branch = "main"
	}
	bad := func(path, msg string, cause error) error {
		return &Error{Op: "upload", Repo: repo, Revision: branch, Path: path, Err: ErrBadRequest, Message: msg, Cause: cause}
	}
	if err := checkRepoID(repo); err != nil {
		return nil, err
	}
	if err := checkRevision(repo, branch); err != nil {
		return nil, err
	}
	if opts.Message == "" {
		return nil, bad("", "commit message is required", nil)
	}
	if opts.ParentCommit != "" && !IsCommit(opts.ParentCommit) {
		return nil, bad("", fmt.Sprintf("parent commit %q is not a 40-hex commit", opts.ParentCommit), nil)
	}
	seen := map[string]bool{}
	for _, p := range append(append([]string{}, opts.Deletes...), pathsOf(opts.Files)...) {
		if err := checkUploadPath(p); err != nil {
			return nil, &Error{Op: "upload", Repo: repo, Revision: branch, Path: p, Err: ErrUnsafePath, Cause: err}
		}
		if seen[p] {
			return nil, bad(p, "path appears twice in the commit", nil)
		}
		seen[p] = true
	}

	files := make([]*upFile, 0, len(opts.Files))
	for _, op := range opts.Files {
		f, err := prepare(op)
		if err != nil {
			return nil, bad(op.Path, "cannot read the file", err)
		}
		files = append(files, f)
	}
	for _, f := range files {
		if f.Path == "README.md" {
			if err := c.validateYAML(ctx, repo, branch, f); err != nil {
				return nil, err
			}
			break
		}
	}

	// The head we build on: the caller's parent, or the current head, so a
	// lost commit answer can be told apart from someone else's push.
	base := opts.ParentCommit
	if base == "" && !opts.CreatePR {
		info, err := c.RepoInfo(ctx, repo, branch)
		if err != nil {
			return nil, err
		}
		base = info.SHA
	}
	if err := c.preupload(ctx, repo, branch, opts.CreatePR, files); err != nil {
		return nil, err
	}

	res := &CommitInfo{}
	var send, lfs []*upFile
	for _, f := range files {
		switch {
		case f.ignore:
			c.log.Info("file ignored by the repository's .gitignore", "repo", repo, "path", f.Path)
		case f.remoteOID != "" && f.remoteOID == f.localOID():
			res.Unchanged = append(res.Unchanged, f.Path)
		default:
			send = append(send, f)
			res.Uploaded = append(res.Uploaded, f.Path)
			if f.mode == "lfs" {
				lfs = append(lfs, f)
			}
		}
	}
	if len(send) == 0 && len(opts.Deletes) == 0 {
		info, err := c.RepoInfo(ctx, repo, branch)
		if err != nil {
			return nil, err
		}
		res.OID, res.URL, res.NoOp = info.SHA, c.commitURL(repo, info.SHA), true
		c.log.Info("no files changed; no commit made", "repo", repo, "branch", branch, "head", info.SHA)
		return res, nil
	}

	var lfsBytes int64
	for _, f := range lfs {
		lfsBytes += f.size
	}
	prog := c.startProgress(ctx, "upload "+repo, lfsBytes, "repo", repo, "branch", branch)
	err := c.uploadLFS(ctx, repo, branch, lfs, prog)
	prog.finish(ctx, "upload", err == nil)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	body, err := commitBody(opts, send)
	if err != nil {
		return nil, bad("", "cannot build the commit", err)
	}
	oid, commitURL, prURL, err := c.commitWithRecovery(ctx, repo, branch, base, opts, body)
	if err != nil {
		return nil, err
	}
	res.OID, res.URL, res.PullRequestURL = oid, commitURL, prURL
	return res, nil
}

func pathsOf(ops []FileOp) []string {
	out := make([]string, len(ops))
	for i, op := range ops {
		out[i] = op.Path
	}
	return out
}

func (c *Client) commitURL(repo, oid string) string {
	return c.endpoint.String() + "/" + repo + "/commit/" + oid
}

// commitHeader is the NDJSON commit's first line: summary, description and,
// unless parent is "", the parentCommit the Hub must find at the branch head.
func commitHeader(opts CommitOptions, parent string) []byte {
	header := map[string]string{"summary": opts.Message, "description": opts.Description}
	if parent != "" {
		header["parentCommit"] = parent
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf) // Encode appends the "\n" NDJSON needs
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any{"key": "header", "value": header}); err != nil {
		panic("hub: encoding a map of strings: " + err.Error())
	}
	return buf.Bytes()
}

// commitBody is the NDJSON commit after its header: one line per file
// (base64 content for regular files, sha256 pointer for LFS) and per
// deletion.
func commitBody(opts CommitOptions, files []*upFile) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for _, f := range files {
		var line map[string]any
		if f.mode == "lfs" {
			line = map[string]any{"key": "lfsFile", "value": map[string]any{
				"path": f.Path, "algo": "sha256", "oid": f.sha256, "size": f.size}}
		} else {
			r, closeFn, err := f.open()
			if err != nil {
				return nil, err
			}
			content, err := io.ReadAll(io.NewSectionReader(r, 0, f.size))
			closeFn()
			if err != nil {
				return nil, err
			}
			line = map[string]any{"key": "file", "value": map[string]any{
				"path": f.Path, "content": base64.StdEncoding.EncodeToString(content), "encoding": "base64"}}
		}
		if err := enc.Encode(line); err != nil {
			return nil, err
		}
	}
	for _, p := range opts.Deletes {
		if err := enc.Encode(map[string]any{"key": "deletedFile", "value": map[string]string{"path": p}}); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// commitWithRecovery POSTs the commit (header, then body) once per attempt.
// A definite refusal (4xx other than 408/429) is returned as is. A 429 is
// retried after the requested wait. A lost answer (network error, 408, 5xx)
// triggers a check of the branch head: if our commit is the child of base
// there, it landed; otherwise the commit is sent again, with the caller's
// parentCommit or, if there is none, with the head just observed as parent
// (and that head as the new base): should the lost attempt land after the
// check, the resend is refused with a conflict instead of committing twice,
// and the refusal leads to one more check, which finds it.
func (c *Client) commitWithRecovery(ctx context.Context, repo, branch, base string, opts CommitOptions,
	body []byte) (oid, commitURL, prURL string, err error) {
	q := url.Values{}
	if opts.CreatePR {
		q.Set("create_pr", "1")
	}
	cl := &call{op: "commit", repo: repo, rev: branch,
		method: http.MethodPost, url: c.apiURL("/api/models/"+repo+"/commit/"+escapeRev(branch), q),
		auth: true, noRetry: true,
		header: http.Header{"Content-Type": {"application/x-ndjson"}}}
	parent := opts.ParentCommit // the parentCommit sent
	bo := c.newBackoff()
	for {
		cl.body = bytesBody(append(commitHeader(opts, parent), body...))
		resp, err := c.do(ctx, cl)
		var lost *Error
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return "", "", "", ctx.Err()
			}
			if !errors.As(err, &lost) || !lost.Retryable() {
				return "", "", "", err
			}
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			raw, rerr := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
			resp.Body.Close()
			if rerr != nil {
				// Accepted, but the answer broke off: as lost as no answer at all.
				lost = &Error{Op: "commit", Repo: repo, Revision: branch, Status: resp.StatusCode,
					Err: ErrUnavailable, Cause: rerr}
				break
			}
			var out struct {
				CommitOID      string `json:"commitOid"`
				CommitURL      string `json:"commitUrl"`
				PullRequestURL string `json:"pullRequestUrl"`
			}
			if derr := json.Unmarshal(raw, &out); derr != nil || out.CommitOID == "" {
				return "", "", "", &Error{Op: "commit", Repo: repo, Revision: branch, Status: resp.StatusCode,
					Err: ErrProtocol, Message: "cannot read the commit answer", Cause: derr}
			}
			return out.CommitOID, out.CommitURL, out.PullRequestURL, nil
		case resp.StatusCode == http.StatusTooManyRequests:
			he := c.responseError(resp, cl.op, repo, branch, "")
			ok, werr := bo.wait(ctx, he.RetryAfter)
			if werr != nil {
				return "", "", "", werr
			}
			if !ok {
				return "", "", "", he
			}
			continue
		case retryableStatus(resp.StatusCode):
			lost = c.responseError(resp, cl.op, repo, branch, "")
		default:
			he := c.responseError(resp, cl.op, repo, branch, "")
			if parent == "" || parent == opts.ParentCommit || !errors.Is(he, ErrConflict) {
				return "", "", "", he
			}
			// Our own pin after a lost answer was refused: the head moved,
			// perhaps to the lost attempt. Check again.
			lost = he
		}

		// The answer is lost: did the commit land?
		if opts.CreatePR || base == "" {
			lost.Message = "commit outcome unknown (answer lost); check the repository before retrying"
			return "", "", "", lost
		}
		c.log.Warn("commit answer lost; checking the branch head", "repo", repo, "branch", branch,
			"error", lost.Error())
		landed, ours, cerr := c.commitLanded(ctx, repo, branch, base, opts.Message)
		if cerr != nil {
			return "", "", "", fmt.Errorf("%w (and checking the branch head failed: %w)", lost, cerr)
		}
		if landed {
			c.log.Info("commit had landed despite the lost answer", "repo", repo, "branch", branch, "commit", ours)
			return ours, c.commitURL(repo, ours), "", nil
		}
		if opts.ParentCommit == "" {
			// ours is the head observed: build on it, and only on it.
			parent, base = ours, ours
		}
		ok, werr := bo.wait(ctx, lost.RetryAfter)
		if werr != nil {
			return "", "", "", werr
		}
		if !ok {
			return "", "", "", lost
		}
		c.log.Info("commit not on the branch; sending it again", "repo", repo, "branch", branch, "parent", parent)
	}
}

// commitTitle is the title the Hub reports for a commit whose summary is
// message: its first line (the git subject), without surrounding blanks.
func commitTitle(message string) string {
	first, _, _ := strings.Cut(message, "\n")
	return strings.TrimSpace(first)
}

// landedWindow is how far back commitLanded looks for our commit, in case
// others pushed on top of it before we checked.
const landedWindow = 20

// commitLanded reports whether our commit (titled with the first line of
// message, with parent base) is in the recent history of branch, and
// returns its id. History is linear
// on a branch, so each listed commit's parent is the next one listed.
func (c *Client) commitLanded(ctx context.Context, repo, branch, base, message string) (bool, string, error) {
	info, err := c.RepoInfo(ctx, repo, branch)
	if err != nil {
		return false, "", err
	}
	if info.SHA == base {
		return false, info.SHA, nil
	}
	var recent []Commit
	for cm, err := range c.ListCommits(ctx, repo, info.SHA, landedWindow+1) {
		if err != nil {
			return false, "", err
		}
		if cm.ID == base {
			break
		}
		recent = append(recent, cm)
	}
	// recent now runs from the head down to the child of base (if base is
	// in the window); our commit can only be that child.
	if n := len(recent); n > 0 && n <= landedWindow && strings.TrimSpace(recent[n-1].Title) == commitTitle(message) {
		return true, recent[n-1].ID, nil
	}
	return false, info.SHA, nil
}
