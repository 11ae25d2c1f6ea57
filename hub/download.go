package hub

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DownloadFile fetches one file of repo at rev ("" = "main") into the cache
// and returns the path of its snapshot pointer
// (…/snapshots/{commit}/{path}, a symlink into blobs/), as hf_hub_download.
//
// A full commit whose pointer is already cached needs no network. A file the
// Hub reports missing is recorded under .no_exist/{commit}/ and returned as
// ErrEntryNotFound. Offline, or when the Hub cannot be reached, the cache
// answers through refs/ (or ErrOffline / the network error if it cannot).
func (c *Client) DownloadFile(ctx context.Context, repo, rev, path string) (string, error) {
	rev, rc, err := c.downloadTarget(repo, rev)
	if err != nil {
		return "", err
	}
	if err := checkRelPath(path); err != nil {
		return "", &Error{Op: "download", Repo: repo, Revision: rev, Path: path, Err: ErrUnsafePath, Cause: err}
	}
	if c.offline || IsCommit(rev) {
		p, cerr := c.cachedPointer(rc, rev, path)
		if cerr == nil || c.offline {
			return p, cerr
		}
	}

	meta, h, err := c.headFile(ctx, repo, rev, path)
	if err != nil {
		if errors.Is(err, ErrEntryNotFound) && h != nil {
			if commit := h.Get("X-Repo-Commit"); IsCommit(commit) {
				_ = rc.markNoExist(commit, path)
				_ = rc.writeRef(rev, commit)
			}
		}
		if IsRetryable(err) {
			if p, cerr := c.cachedPointer(rc, rev, path); cerr == nil {
				c.log.Warn("hub unreachable; using cached file", "repo", repo, "revision", rev, "path", path,
					"error", err.Error())
				return p, nil
			}
		}
		return "", err
	}
	if err := checkMeta(meta, repo, rev, path); err != nil {
		return "", err
	}
	writeCacheDirTag(c.cacheDir)
	if err := rc.writeRef(rev, meta.Commit); err != nil {
		return "", &Error{Op: "download", Repo: repo, Revision: rev, Path: path, Err: ErrProtocol, Cause: err}
	}
	prog := c.startProgress(ctx, "download "+repo+"/"+path, meta.Size, "repo", repo, "path", path)
	spec := blobSpec{repo: repo, rev: rev, path: path, etag: meta.ETag, size: meta.Size, url: meta.Location}
	if _, err := c.ensureBlob(ctx, rc, spec, prog); err != nil {
		prog.finish(ctx, "download", false)
		return "", err
	}
	prog.finish(ctx, "download", true)
	return rc.link(meta.Commit, path, meta.ETag)
}

// checkMeta rejects HEAD answers the cache cannot use safely.
func checkMeta(m *fileMeta, repo, rev, path string) error {
	e := &Error{Op: "file metadata", Repo: repo, Revision: rev, Path: path, Err: ErrProtocol}
	switch {
	case !IsCommit(m.Commit):
		e.Message = fmt.Sprintf("X-Repo-Commit %q is not a commit hash (is the endpoint a Hub?)", m.Commit)
	case !etagRE.MatchString(m.ETag):
		e.Message = fmt.Sprintf("ETag %q is neither a git sha1 nor a sha256", m.ETag)
	case m.Size < 0:
		e.Message = "no X-Linked-Size or Content-Length"
	default:
		return nil
	}
	return e
}

// cachedPointer answers DownloadFile from the cache alone.
func (c *Client) cachedPointer(rc *repoCache, rev, path string) (string, error) {
	notCached := &Error{Op: "download", Repo: rc.repo, Revision: rev, Path: path, Err: ErrOffline}
	commit, err := rc.resolveLocal(rev)
	if err != nil {
		notCached.Cause = err
		return "", notCached
	}
	if commit == "" {
		notCached.Message = "revision not in the cache (no refs/" + rev + ")"
		return "", notCached
	}
	ptr, err := rc.pointerPath(commit, path)
	if err != nil {
		return "", &Error{Op: "download", Repo: rc.repo, Revision: rev, Path: path, Err: ErrUnsafePath, Cause: err}
	}
	if ok, err := c.pointerOK(rc, ptr); ok {
		return ptr, nil
	} else if err != nil {
		notCached.Cause = err
	}
	if rc.knownAbsent(commit, path) {
		return "", &Error{Op: "download", Repo: rc.repo, Revision: rev, Path: path, Err: ErrEntryNotFound,
			Message: "recorded as absent in the cache (.no_exist)"}
	}
	if notCached.Message == "" {
		notCached.Message = "file not in the cached snapshot " + commit
	}
	return "", notCached
}

// pointerOK reports whether the snapshot pointer ptr resolves to a blob of
// this repository that verifies (unless TrustCache).
func (c *Client) pointerOK(rc *repoCache, ptr string) (bool, error) {
	target, err := os.Readlink(ptr)
	if err != nil {
		// Not a symlink (copied file on filesystems without symlinks) or absent.
		st, serr := os.Stat(ptr)
		return serr == nil && st.Mode().IsRegular(), nil
	}
	etag := filepath.Base(target)
	blob, err := rc.blobPath(etag)
	if err != nil {
		return false, nil
	}
	if want, _ := filepath.Rel(filepath.Dir(ptr), blob); want != target {
		return false, nil // points somewhere unexpected: rebuild it
	}
	st, err := os.Stat(blob)
	if err != nil || !st.Mode().IsRegular() {
		return false, nil
	}
	if c.trustCache {
		return true, nil
	}
	// Verification failures leave the blob alone here: ensureBlob removes
	// and refetches it under the blob lock.
	if err := verifyFile(blob, etag, -1); err != nil {
		c.log.Warn("cached blob failed verification", "repo", rc.repo, "etag", etag, "error", err.Error())
		return false, nil
	}
	return true, nil
}

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
