package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"
)

// RepoInfo is GET /api/models/{repo}[/revision/{rev}]?blobs=true.
type RepoInfo struct {
	ID           string         `json:"id"`
	InternalID   string         `json:"_id"`
	SHA          string         `json:"sha"` // commit the revision resolves to
	LastModified time.Time      `json:"lastModified"`
	CreatedAt    time.Time      `json:"createdAt"`
	Private      bool           `json:"private"`
	Gated        Gated          `json:"gated"`
	Disabled     bool           `json:"disabled"`
	Tags         []string       `json:"tags"`
	CardData     map[string]any `json:"cardData"` // model card YAML front matter (base_model, ...)
	Siblings     []Sibling      `json:"siblings"`
}

// Sibling is one file of a repository at the requested revision.
type Sibling struct {
	RFilename string   `json:"rfilename"`
	Size      int64    `json:"size"`   // with blobs=true
	BlobID    string   `json:"blobId"` // git blob sha1 (of the pointer file for LFS files)
	LFS       *LFSInfo `json:"lfs"`
}

// LFSInfo describes the LFS object behind a file.
type LFSInfo struct {
	SHA256      string `json:"sha256"`
	Size        int64  `json:"size"`
	PointerSize int64  `json:"pointerSize"`
}

// Gated is "" for an open repository, or "auto" / "manual". The Hub sends
// false for open repos and a string otherwise.
type Gated string

// UnmarshalJSON accepts false, true (reported as "true") and strings.
func (g *Gated) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case string:
		*g = Gated(x)
	case bool:
		*g = ""
		if x {
			*g = "true"
		}
	case nil:
		*g = ""
	default:
		return fmt.Errorf("gated: unexpected %s", b)
	}
	return nil
}

// RepoInfo fetches repository metadata at rev ("" means the default branch),
// with file sizes and LFS data.
func (c *Client) RepoInfo(ctx context.Context, repo, rev string) (*RepoInfo, error) {
	if err := checkRepoID(repo); err != nil {
		return nil, err
	}
	p := "/api/models/" + repo
	if rev != "" {
		p += "/revision/" + escapeRev(rev)
	}
	cl := &call{method: http.MethodGet, url: c.apiURL(p, url.Values{"blobs": {"true"}}), auth: true,
		op: "repo info", repo: repo, rev: rev}
	var info RepoInfo
	if _, err := c.doJSON(ctx, cl, &info); err != nil {
		return nil, err
	}
	return &info, nil
}

// Ref is a branch, tag, conversion or pull-request head.
type Ref struct {
	Name         string `json:"name"`
	Ref          string `json:"ref"`
	TargetCommit string `json:"targetCommit"`
}

// Refs lists a repository's branches and tags (GET /api/models/{repo}/refs).
type Refs struct {
	Branches     []Ref `json:"branches"`
	Tags         []Ref `json:"tags"`
	Converts     []Ref `json:"converts"`
	PullRequests []Ref `json:"pullRequests"`
}

// Refs fetches branches, tags and (when the Hub sends them) pull requests.
func (c *Client) Refs(ctx context.Context, repo string) (*Refs, error) {
	if err := checkRepoID(repo); err != nil {
		return nil, err
	}
	cl := &call{method: http.MethodGet, url: c.apiURL("/api/models/"+repo+"/refs", url.Values{"include_prs": {"1"}}),
		auth: true, op: "list refs", repo: repo}
	var r Refs
	if _, err := c.doJSON(ctx, cl, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Commit is one entry of a repository's history.
type Commit struct {
	ID      string    `json:"id"`
	Title   string    `json:"title"`
	Message string    `json:"message"`
	Authors []Author  `json:"authors"`
	Date    time.Time `json:"date"`
}

// Author of a commit.
type Author struct {
	User string `json:"user"`
}

// ListCommits iterates over the history of rev, newest first, following the
// Hub's Link pagination. limit > 0 stops after that many commits. Iteration
// stops at the first error, which is yielded with a zero Commit.
func (c *Client) ListCommits(ctx context.Context, repo, rev string, limit int) iter.Seq2[Commit, error] {
	if rev == "" {
		rev = "main"
	}
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	first := c.apiURL("/api/models/"+repo+"/commits/"+escapeRev(rev), q)
	return paginate[Commit](ctx, c, first, limit, &call{op: "list commits", repo: repo, rev: rev})
}

// ModelQuery selects models for ListModels.
type ModelQuery struct {
	Author string // namespace
	Search string // substring of the repo id
	Sort   string // default "lastModified" (newest first)
	Limit  int    // total results wanted; 0 means all
}

// ListModels iterates over models matching q, newest modification first by
// default. Full metadata is requested (full=true) so LastModified and SHA are
// filled; siblings are not.
func (c *Client) ListModels(ctx context.Context, q ModelQuery) iter.Seq2[RepoInfo, error] {
	v := url.Values{"full": {"true"}}
	if q.Author != "" {
		v.Set("author", q.Author)
	}
	if q.Search != "" {
		v.Set("search", q.Search)
	}
	sort := q.Sort
	if sort == "" {
		sort = "lastModified"
	}
	v.Set("sort", sort)
	v.Set("direction", "-1")
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return paginate[RepoInfo](ctx, c, c.apiURL("/api/models", v), q.Limit, &call{op: "list models"})
}

// TreeEntry is one file or directory of ListTree.
type TreeEntry struct {
	Type string   `json:"type"` // "file" or "directory"
	Path string   `json:"path"`
	OID  string   `json:"oid"` // git blob (file) or tree (directory) id
	Size int64    `json:"size"`
	LFS  *TreeLFS `json:"lfs"`
}

// TreeLFS is the LFS object behind a file of ListTree.
type TreeLFS struct {
	OID         string `json:"oid"` // sha256
	Size        int64  `json:"size"`
	PointerSize int64  `json:"pointerSize"`
}

// ListTree lists the files and directories at rev under dir ("" for the
// root), descending into subdirectories when recursive is set.
func (c *Client) ListTree(ctx context.Context, repo, rev, dir string, recursive bool) ([]TreeEntry, error) {
	if err := checkRepoID(repo); err != nil {
		return nil, err
	}
	if rev == "" {
		rev = "main"
	}
	p := "/api/models/" + repo + "/tree/" + escapeRev(rev)
	if dir != "" {
		p += "/" + escapePath(dir)
	}
	q := url.Values{}
	if recursive {
		q.Set("recursive", "true")
	}
	var out []TreeEntry
	for e, err := range paginate[TreeEntry](ctx, c, c.apiURL(p, q), 0, &call{op: "list tree", repo: repo, rev: rev, path: dir}) {
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// linkNextRE extracts the rel="next" target of a Link header.
var linkNextRE = regexp.MustCompile(`<([^>]+)>\s*;\s*rel="?next"?`)

// nextPage returns the absolute URL of the next page, or "" at the end. The
// next page must stay on the endpoint host: the token is sent there.
func (c *Client) nextPage(h http.Header, current string) (string, error) {
	m := linkNextRE.FindStringSubmatch(h.Get("Link"))
	if m == nil {
		return "", nil
	}
	base, err := url.Parse(current)
	if err != nil {
		return "", err
	}
	u, err := base.Parse(m[1])
	if err != nil {
		return "", fmt.Errorf("%w: bad Link header %q", ErrProtocol, m[1])
	}
	if !c.sameHost(u) {
		return "", fmt.Errorf("%w: pagination link leaves the endpoint host: %s", ErrProtocol, redactURL(u.String()))
	}
	return u.String(), nil
}

// paginate yields the JSON array items of first and of every page reached
// through Link rel="next", up to limit items (0 = all).
func paginate[T any](ctx context.Context, c *Client, first string, limit int, about *call) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		var zero T
		if err := checkRepoIDIfAny(about.repo); err != nil {
			yield(zero, err)
			return
		}
		n := 0
		for next := first; next != ""; {
			cl := &call{method: http.MethodGet, url: next, auth: true,
				op: about.op, repo: about.repo, rev: about.rev, path: about.path}
			var page []T
			h, err := c.doJSON(ctx, cl, &page)
			if err != nil {
				yield(zero, err)
				return
			}
			for _, item := range page {
				if !yield(item, nil) {
					return
				}
				if n++; limit > 0 && n >= limit {
					return
				}
			}
			if next, err = c.nextPage(h, next); err != nil {
				yield(zero, &Error{Op: about.op, Repo: about.repo, Revision: about.rev, Err: ErrProtocol, Cause: err})
				return
			}
		}
	}
}

func checkRepoIDIfAny(repo string) error {
	if repo == "" {
		return nil
	}
	return checkRepoID(repo)
}
