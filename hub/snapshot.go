package hub

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"
)

// SnapshotOptions filter the files of a Snapshot. Patterns follow
// huggingface_hub's allow_patterns/ignore_patterns (fnmatch: "*" also
// matches "/", a trailing "/" means the whole directory).
type SnapshotOptions struct {
	Include []string // if set, only paths matching one of these
	Exclude []string // paths matching one of these are skipped
}

// Snapshot downloads the files of repo at rev ("" = "main") selected by opts
// into the cache, as snapshot_download does, and returns the snapshot
// directory $HF_HUB_CACHE/models--org--name/snapshots/{commit}.
//
// A full commit whose cached tree listing shows every wanted file present
// needs no network. Every path in the listing is validated before anything
// is written. Files are fetched with Options.Concurrency workers; the first
// failure cancels the rest. Offline, or if the Hub cannot be reached, a
// complete cached snapshot is returned (or ErrOffline).
func (c *Client) Snapshot(ctx context.Context, repo, rev string, opts SnapshotOptions) (string, error) {
	rev, rc, err := c.downloadTarget(repo, rev)
	if err != nil {
		return "", err
	}
	if c.offline {
		return c.cachedSnapshot(rc, rev, opts)
	}
	if IsCommit(rev) {
		if dir, err := c.cachedSnapshot(rc, rev, opts); err == nil {
			c.log.Debug("snapshot served from cache", "repo", repo, "commit", rev)
			return dir, nil
		}
	}

	commit := rev
	if !IsCommit(rev) {
		info, err := c.RepoInfo(ctx, repo, rev)
		if err != nil {
			if IsRetryable(err) {
				if dir, cerr := c.cachedSnapshot(rc, rev, opts); cerr == nil {
					c.log.Warn("hub unreachable; using cached snapshot", "repo", repo, "revision", rev,
						"error", err.Error())
					return dir, nil
				}
			}
			return "", err
		}
		if !IsCommit(info.SHA) {
			return "", &Error{Op: "repo info", Repo: repo, Revision: rev, Err: ErrProtocol,
				Message: fmt.Sprintf("sha %q is not a commit hash", info.SHA)}
		}
		commit = info.SHA
	}

	files, cached, err := c.treeAt(ctx, rc, commit)
	if err != nil {
		return "", err
	}
	// Nothing has been written so far; the listing is known to be safe from here.
	writeCacheDirTag(c.cacheDir)
	if !cached {
		if err := rc.writeTree(commit, files); err != nil {
			return "", fmt.Errorf("hub: snapshot %s@%s: write tree cache: %w", repo, rev, err)
		}
	}
	if err := rc.writeRef(rev, commit); err != nil {
		return "", fmt.Errorf("hub: snapshot %s@%s: write ref: %w", repo, rev, err)
	}
	dir, err := rc.snapshotDir(commit)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}

	paths := selectPaths(files, opts)
	var total int64
	for _, p := range paths {
		total += files[p].Size
	}
	desc := "download " + repo + "@" + shortRev(rev)
	prog := c.startProgress(ctx, desc, total, "repo", repo, "revision", rev, "files", len(paths))
	err = c.fetchAll(ctx, paths, func(ctx context.Context, p string) error {
		return c.snapshotFile(ctx, rc, rev, commit, p, files[p], prog)
	})
	prog.finish(ctx, desc, err == nil)
	if err != nil {
		return "", err
	}
	return dir, nil
}

// treeAt returns the validated file listing of commit, from the cache's
// trees/{commit}.json (cached = true) or from the Hub's recursive tree.
func (c *Client) treeAt(ctx context.Context, rc *repoCache, commit string) (files map[string]treeEntry, cached bool, err error) {
	if files, ok := rc.readTree(commit); ok {
		return files, true, nil
	}
	entries, err := c.ListTree(ctx, rc.repo, commit, "", true)
	if err != nil {
		return nil, false, err
	}
	files = make(map[string]treeEntry, len(entries))
	for _, e := range entries {
		if e.Type != "file" {
			continue
		}
		if err := checkRelPath(e.Path); err != nil {
			return nil, false, &Error{Op: "snapshot", Repo: rc.repo, Revision: commit, Path: e.Path,
				Err: ErrUnsafePath, Cause: err, Message: "refusing a listing with an unsafe path; nothing was written"}
		}
		te := treeEntry{Size: e.Size, BlobID: e.OID}
		if e.LFS != nil {
			size := e.LFS.Size
			te.LFSSHA256, te.LFSSize = e.LFS.OID, &size
			te.Size = e.LFS.Size
		}
		if !etagRE.MatchString(te.etag()) || te.Size < 0 {
			return nil, false, &Error{Op: "snapshot", Repo: rc.repo, Revision: commit, Path: e.Path, Err: ErrProtocol,
				Message: fmt.Sprintf("listing has unusable oid %q / size %d", te.etag(), te.Size)}
		}
		if _, dup := files[e.Path]; dup {
			return nil, false, &Error{Op: "snapshot", Repo: rc.repo, Revision: commit, Path: e.Path, Err: ErrProtocol,
				Message: "listing names the file twice"}
		}
		files[e.Path] = te
	}
	return files, false, nil
}

func selectPaths(files map[string]treeEntry, opts SnapshotOptions) []string {
	var out []string
	for p := range files {
		if wanted(p, opts.Include, opts.Exclude) {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// snapshotFile makes snapshots/{commit}/{path} point at a verified blob,
// downloading it only when the cache lacks it.
func (c *Client) snapshotFile(ctx context.Context, rc *repoCache, rev, commit, path string, e treeEntry, prog *progress) error {
	spec := blobSpec{repo: rc.repo, rev: rev, path: path, etag: e.etag(), size: e.Size}
	blob, err := rc.blobPath(spec.etag)
	if err != nil {
		return &Error{Op: "snapshot", Repo: rc.repo, Revision: rev, Path: path, Err: ErrProtocol, Cause: err}
	}
	if _, err := os.Stat(blob); err != nil {
		// Not cached: ask the Hub where the bytes are (CDN location) and
		// confirm etag and size.
		meta, _, err := c.headFile(ctx, rc.repo, commit, path)
		if err != nil {
			return err
		}
		if err := checkMeta(meta, rc.repo, commit, path); err != nil {
			return err
		}
		if meta.ETag != spec.etag || meta.Size != spec.size {
			c.log.Warn("tree listing and file metadata disagree; trusting the file metadata",
				"repo", rc.repo, "path", path, "tree_etag", spec.etag, "etag", meta.ETag)
			prog.grow(meta.Size - spec.size)
			spec.etag, spec.size = meta.ETag, meta.Size
		}
		spec.url = meta.Location
	} else {
		spec.url = c.resolveURL(rc.repo, commit, path)
	}
	if _, err := c.ensureBlob(ctx, rc, spec, prog); err != nil {
		return err
	}
	_, err = rc.link(commit, path, spec.etag)
	return err
}

// cachedSnapshot answers Snapshot from the cache alone: rev must resolve to
// a commit (itself or refs/{rev}) whose snapshot directory exists and, when
// the tree listing is cached, holds every wanted file with a verified blob.
func (c *Client) cachedSnapshot(rc *repoCache, rev string, opts SnapshotOptions) (string, error) {
	fail := func(msg string, cause error) error {
		return &Error{Op: "snapshot", Repo: rc.repo, Revision: rev, Err: ErrOffline, Message: msg, Cause: cause}
	}
	commit, err := rc.resolveLocal(rev)
	if err != nil {
		return "", fail("cannot read refs", err)
	}
	if commit == "" {
		return "", fail("revision not in the cache (no refs/"+rev+")", nil)
	}
	dir, err := rc.snapshotDir(commit)
	if err != nil {
		return "", fail("bad cached commit", err)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", fail("snapshot "+commit+" not in the cache", nil)
	}
	files, ok := rc.readTree(commit)
	if !ok {
		if IsCommit(rev) && !c.offline {
			return "", fail("no cached tree listing for "+commit, nil) // go online to learn it
		}
		return dir, nil // older caches have no listing: trust the directory, as Python does
	}
	for _, p := range selectPaths(files, opts) {
		ptr, err := rc.pointerPath(commit, p)
		if err != nil {
			return "", fail("unsafe cached path", err)
		}
		if ok, _ := c.pointerOK(rc, ptr); !ok {
			return "", fail("cached snapshot "+commit+" lacks "+p, nil)
		}
	}
	return dir, nil
}

// fetchAll runs fn for every path with at most c.concurrency running at
// once. The first error cancels the others and is returned (context errors
// caused by that cancellation are not reported in its place).
func (c *Client) fetchAll(ctx context.Context, paths []string, fn func(context.Context, string) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, c.concurrency)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for _, p := range paths {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(ctx, p); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				cancel()
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

func shortRev(rev string) string {
	if IsCommit(rev) {
		return rev[:8]
	}
	return rev
}
