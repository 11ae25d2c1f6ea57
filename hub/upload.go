package hub

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// FileOp adds or replaces one file in a commit. Exactly one of LocalPath and
// Content supplies the bytes (LocalPath wins when both are set).
type FileOp struct {
	Path      string // path in the repository, slash separated
	LocalPath string // file on disk to upload
	Content   []byte // in-memory content
}

// CommitOptions describe one commit made by Upload.
type CommitOptions struct {
	Branch       string // default "main"
	Message      string // commit title; required
	Description  string
	ParentCommit string // if set, the Hub refuses (ErrConflict) when the branch head moved
	CreatePR     bool   // commit to a new pull request against Branch instead
	Files        []FileOp
	Deletes      []string // paths to delete
}

// CommitInfo is the outcome of Upload.
type CommitInfo struct {
	OID            string // the new commit (or the unchanged head when NoOp)
	URL            string // {endpoint}/{repo}/commit/{oid}
	PullRequestURL string // set with CreatePR
	Uploaded       []string
	Unchanged      []string // files skipped because the Hub already has this content
	NoOp           bool     // nothing changed: no commit was made
}

// upFile is a FileOp with what the upload needs to know about its content.
type upFile struct {
	FileOp
	size    int64
	sample  []byte // first 512 bytes, for the Hub's LFS decision
	sha256  string // hex
	gitSHA1 string // git blob sha1, hex

	mode      string // "lfs" or "regular", from preupload
	ignore    bool   // matched the repo's .gitignore
	remoteOID string // what the Hub has at this path, if anything
}

// open returns a reader over the whole content.
func (f *upFile) open() (io.ReaderAt, func() error, error) {
	if f.LocalPath == "" {
		return bytes.NewReader(f.Content), func() error { return nil }, nil
	}
	fh, err := os.Open(f.LocalPath)
	if err != nil {
		return nil, nil, err
	}
	return fh, fh.Close, nil
}

// localOID is what preupload's oid is compared with, as in Python's
// CommitOperationAdd._local_oid: sha256 for LFS, git sha1 for regular files.
func (f *upFile) localOID() string {
	if f.mode == "lfs" {
		return f.sha256
	}
	return f.gitSHA1
}

// prepare stats and hashes one FileOp in a single pass.
func prepare(op FileOp) (*upFile, error) {
	f := &upFile{FileOp: op}
	if op.LocalPath != "" {
		st, err := os.Stat(op.LocalPath)
		if err != nil {
			return nil, err
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file", op.LocalPath)
		}
		f.size = st.Size()
	} else {
		f.size = int64(len(op.Content))
	}
	r, closeFn, err := f.open()
	if err != nil {
		return nil, err
	}
	defer closeFn()
	s256, s1 := sha256.New(), sha1.New()
	fmt.Fprintf(s1, "blob %d\x00", f.size)
	n, err := io.CopyBuffer(io.MultiWriter(s256, s1), io.NewSectionReader(r, 0, f.size), make([]byte, copyBufferSize))
	if err != nil {
		return nil, err
	}
	if n != f.size {
		return nil, fmt.Errorf("%s changed size while reading (%d, want %d)", op.LocalPath, n, f.size)
	}
	f.sha256, f.gitSHA1 = hex.EncodeToString(s256.Sum(nil)), hex.EncodeToString(s1.Sum(nil))
	f.sample = make([]byte, min(512, f.size))
	if _, err := r.ReadAt(f.sample, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return f, nil
}

// checkUploadPath refuses repository paths the Hub would refuse or that
// could not be downloaded safely again (see checkRelPath), and .git/.
func checkUploadPath(p string) error {
	if err := checkRelPath(p); err != nil {
		return err
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == ".git" {
			return fmt.Errorf("%w: %q is under .git/", ErrUnsafePath, p)
		}
	}
	return nil
}

// CreateRepo creates the model repository repo ("namespace/name"). An
// existing repository is not an error (exist_ok). It returns the repo URL.
func (c *Client) CreateRepo(ctx context.Context, repo string, private bool) (string, error) {
	if err := checkRepoID(repo); err != nil {
		return "", err
	}
	payload := map[string]any{"type": "model", "private": private}
	if ns, name, ok := strings.Cut(repo, "/"); ok {
		payload["organization"], payload["name"] = ns, name
	} else {
		payload["name"] = repo
	}
	body, err := jsonBody(payload)
	if err != nil {
		return "", err
	}
	cl := &call{method: http.MethodPost, url: c.apiURL("/api/repos/create", nil), body: body, auth: true,
		header: http.Header{"Content-Type": {"application/json"}}, op: "create repo", repo: repo}
	if _, err := c.doJSON(ctx, cl, nil); err != nil && !isConflict(err) {
		return "", err
	}
	return c.endpoint.String() + "/" + repo, nil
}

// CreateBranch creates branch from startingPoint ("" = the default branch
// head). An existing branch is not an error.
func (c *Client) CreateBranch(ctx context.Context, repo, branch, startingPoint string) error {
	if err := checkRepoID(repo); err != nil {
		return err
	}
	if err := checkRevision(repo, branch); err != nil {
		return err
	}
	payload := map[string]any{}
	if startingPoint != "" {
		payload["startingPoint"] = startingPoint
	}
	body, err := jsonBody(payload)
	if err != nil {
		return err
	}
	cl := &call{method: http.MethodPost, url: c.apiURL("/api/models/"+repo+"/branch/"+escapeRev(branch), nil),
		body: body, auth: true, header: http.Header{"Content-Type": {"application/json"}},
		op: "create branch", repo: repo, rev: branch}
	if _, err := c.doJSON(ctx, cl, nil); err != nil && !isConflict(err) {
		return err
	}
	return nil
}

func isConflict(err error) bool {
	var he *Error
	return errors.As(err, &he) && he.Status == http.StatusConflict
}

// validateYAML asks the Hub to check README.md's front matter before
// anything is uploaded, as create_commit does.
func (c *Client) validateYAML(ctx context.Context, repo, rev string, f *upFile) error {
	r, closeFn, err := f.open()
	if err != nil {
		return err
	}
	content, err := io.ReadAll(io.NewSectionReader(r, 0, f.size))
	closeFn()
	if err != nil {
		return err
	}
	body, err := jsonBody(map[string]string{"content": string(content), "repoType": "model"})
	if err != nil {
		return err
	}
	cl := &call{method: http.MethodPost, url: c.apiURL("/api/validate-yaml", nil), body: body, auth: true,
		header: http.Header{"Content-Type": {"application/json"}}, op: "validate README.md", repo: repo, rev: rev, path: f.Path}
	_, err = c.doJSON(ctx, cl, nil)
	return err
}

// preupload asks the Hub, 256 files at a time, how each file must be sent
// (lfs or regular), whether .gitignore drops it, and what oid it has now.
func (c *Client) preupload(ctx context.Context, repo, rev string, createPR bool, files []*upFile) error {
	for start := 0; start < len(files); start += 256 {
		chunk := files[start:min(start+256, len(files))]
		type reqFile struct {
			Path   string `json:"path"`
			Sample string `json:"sample"`
			Size   int64  `json:"size"`
		}
		req := struct {
			Files []reqFile `json:"files"`
		}{}
		for _, f := range chunk {
			req.Files = append(req.Files, reqFile{f.Path, base64.StdEncoding.EncodeToString(f.sample), f.size})
		}
		body, err := jsonBody(req)
		if err != nil {
			return err
		}
		q := url.Values{}
		if createPR {
			q.Set("create_pr", "1")
		}
		cl := &call{method: http.MethodPost, url: c.apiURL("/api/models/"+repo+"/preupload/"+escapeRev(rev), q),
			body: body, auth: true, header: http.Header{"Content-Type": {"application/json"}},
			op: "preupload", repo: repo, rev: rev}
		var resp struct {
			Files []struct {
				Path         string `json:"path"`
				UploadMode   string `json:"uploadMode"`
				ShouldIgnore bool   `json:"shouldIgnore"`
				OID          string `json:"oid"`
			} `json:"files"`
		}
		if _, err := c.doJSON(ctx, cl, &resp); err != nil {
			return err
		}
		byPath := map[string]*upFile{}
		for _, f := range chunk {
			byPath[f.Path] = f
		}
		for _, r := range resp.Files {
			f, ok := byPath[r.Path]
			if !ok || (r.UploadMode != "lfs" && r.UploadMode != "regular") {
				return &Error{Op: "preupload", Repo: repo, Revision: rev, Path: r.Path, Err: ErrProtocol,
					Message: fmt.Sprintf("unexpected entry (uploadMode %q)", r.UploadMode)}
			}
			f.mode, f.ignore, f.remoteOID = r.UploadMode, r.ShouldIgnore, r.OID
		}
		for _, f := range chunk {
			if f.mode == "" {
				return &Error{Op: "preupload", Repo: repo, Revision: rev, Path: f.Path, Err: ErrProtocol,
					Message: "file missing from the answer"}
			}
			if f.size == 0 {
				f.mode = "regular" // S3 refuses empty LFS uploads; Python does the same
			}
		}
	}
	return nil
}
