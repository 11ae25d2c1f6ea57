package hub

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// fileMeta is what a HEAD on /resolve tells about one file.
type fileMeta struct {
	Commit   string // X-Repo-Commit
	ETag     string // X-Linked-Etag, else ETag; W/ and quotes stripped
	Size     int64  // X-Linked-Size, else Content-Length (not for redirects)
	Location string // where to GET the bytes: the CDN URL, or the resolve URL
}

// resolveURL is {endpoint}/{repo}/resolve/{rev}/{path}.
func (c *Client) resolveURL(repo, rev, path string) string {
	return c.apiURL("/"+repo+"/resolve/"+escapeRev(rev)+"/"+escapePath(path), nil)
}

// maxRelativeRedirects bounds the same-host redirects followed by a HEAD.
const maxRelativeRedirects = 10

// headFile fetches a file's metadata as huggingface_hub's
// get_hf_file_metadata does: HEAD with Accept-Encoding: identity (so sizes
// are real, not gzipped), following same-host redirects (renamed repos,
// /api/resolve-cache for regular files) but not cross-host ones, whose
// Location is the CDN. It returns the last response's headers on error too,
// so callers can read X-Repo-Commit from a 404.
func (c *Client) headFile(ctx context.Context, repo, rev, path string) (*fileMeta, http.Header, error) {
	target := c.resolveURL(repo, rev, path)
	for hop := 0; ; hop++ {
		cl := &call{op: "file metadata", repo: repo, rev: rev, path: path,
			method: http.MethodHead, url: target, auth: true, noFollow: true,
			header: http.Header{"Accept-Encoding": {"identity"}}}
		resp, err := c.do(ctx, cl)
		if err != nil {
			return nil, nil, err
		}
		resp.Body.Close()
		h := resp.Header
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			loc := h.Get("Location")
			if loc == "" {
				return nil, h, &Error{Op: cl.op, Repo: repo, Revision: rev, Path: path, Status: resp.StatusCode,
					Err: ErrProtocol, Message: "redirect without Location"}
			}
			base, _ := url.Parse(target)
			next, err := base.Parse(loc)
			if err != nil {
				return nil, h, &Error{Op: cl.op, Repo: repo, Revision: rev, Path: path, Status: resp.StatusCode,
					Err: ErrProtocol, Message: "bad Location header"}
			}
			if c.sameHost(next) {
				if hop >= maxRelativeRedirects {
					return nil, h, &Error{Op: cl.op, Repo: repo, Revision: rev, Path: path, Err: ErrProtocol,
						Message: "too many same-host redirects"}
				}
				target = next.String()
				continue
			}
			// Cross-host: the CDN. Its own ETag is not the content hash.
			return metaFrom(h, true, next.String()), h, nil
		}
		if resp.StatusCode < 200 || resp.StatusCode >= 300 {
			return nil, h, c.errorFromHead(resp, cl)
		}
		return metaFrom(h, false, target), h, nil
	}
}

// errorFromHead builds the *Error for a failed HEAD (no body to read).
func (c *Client) errorFromHead(resp *http.Response, cl *call) *Error {
	resp.Body = http.NoBody
	return c.responseError(resp, cl.op, cl.repo, cl.rev, cl.path)
}

func metaFrom(h http.Header, redirect bool, location string) *fileMeta {
	m := &fileMeta{Commit: h.Get("X-Repo-Commit"), Location: location, Size: -1}
	etag := h.Get("X-Linked-Etag")
	if etag == "" {
		etag = h.Get("ETag")
	}
	m.ETag = normalizeETag(etag)
	size := h.Get("X-Linked-Size")
	if size == "" && !redirect {
		size = h.Get("Content-Length")
	}
	if n, err := strconv.ParseInt(size, 10, 64); err == nil && n >= 0 {
		m.Size = n
	}
	return m
}

// normalizeETag strips the weak prefix and quotes: W/"abc" -> abc.
func normalizeETag(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "W/")
	return strings.Trim(s, `"`)
}
