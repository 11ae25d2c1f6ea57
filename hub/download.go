package hub

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	if rev == "" {
		rev = "main"
	}
	rc, err := c.repoCache(repo)
	if err != nil {
		return "", err
	}
	if err := checkRevision(repo, rev); err != nil {
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
