package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/gofrs/flock"
)

// A snapshot is removed so that the cache reads correctly at every point,
// whenever the process dies: its refs go first (a ref never names a missing
// snapshot, which huggingface_hub's scan_cache_dir reports as corrupt), then
// the snapshot directory leaves in one rename to a trash directory inside the
// repo folder (hub.Client then finds the snapshot absent and downloads it
// again, where a half-deleted directory would be re-linked blob by blob), then
// its listing, and last the blobs that no remaining snapshot links or lists,
// each under its blob lock (a download holds it). Nothing here follows a
// symbolic link: links are read, never traversed, and only removed as names.

// gcStep is called between the steps of a snapshot's removal; tests make it
// fail to stand for a process killed there.
var gcStep = func(step string) error { return nil }

// removeSnapshots removes the snapshots of repo's commits in drop from the
// cache at root (see the top of this file for the order), and what an
// interrupted collection left (its trash, the listings of snapshots no
// longer there), then the blobs that no remaining snapshot links or lists. It returns the bytes of the
// blobs removed.
func removeSnapshots(ctx context.Context, root, repo string, drop []string) (int64, error) {
	rf, err := scanRepoFolder(root, repo)
	if err != nil {
		return 0, err
	}
	fail := func(err error) (int64, error) { return 0, fmt.Errorf("hub cache %s: %w", rf.dir, err) }
	for _, p := range rf.trash { // an earlier collection's leftovers
		if err := os.RemoveAll(p); err != nil {
			return fail(err)
		}
	}
	gone := map[string]bool{}
	for _, c := range rf.strays { // listings an earlier collection left
		if err := rf.removeListing(c); err != nil {
			return fail(err)
		}
		gone[c] = true
	}
	for _, c := range drop {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if !commitHexRE.MatchString(c) {
			panic(fmt.Sprintf("daemon: removeSnapshots: %q is not a commit", c))
		}
		for _, ref := range rf.refs[c] {
			if err := os.Remove(filepath.Join(rf.dir, "refs", filepath.FromSlash(ref))); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fail(err)
			}
		}
		if err := gcStep("refs removed"); err != nil {
			return 0, err
		}
		snap := filepath.Join(rf.dir, "snapshots", c)
		if isRealDir(snap) {
			dir, err := rf.trashDir()
			if err != nil {
				return fail(err)
			}
			trash := filepath.Join(dir, c+"."+randName())
			if err := os.Rename(snap, trash); err != nil {
				return fail(err)
			}
			if err := syncDirOf(snap); err != nil {
				return fail(err)
			}
			if err := gcStep("snapshot moved"); err != nil {
				return 0, err
			}
			if err := os.RemoveAll(trash); err != nil {
				return fail(err)
			}
		}
		if err := rf.removeListing(c); err != nil {
			return fail(err)
		}
		gone[c] = true
	}
	if err := gcStep("snapshots removed"); err != nil {
		return 0, err
	}
	keep := rf.keptBlobs(gone)
	var freed int64
	for e, size := range rf.blobs {
		if keep[e] {
			continue
		}
		removed, err := rf.removeBlob(root, e)
		if err != nil {
			return freed, fmt.Errorf("hub cache %s: %w", rf.dir, err)
		}
		if removed {
			freed += size
		}
	}
	for e, ps := range rf.partial {
		if keep[e] || rf.blobs[e] != 0 {
			continue
		}
		unlock, ok := lockBlob(root, repo, e)
		if !ok {
			continue
		}
		for _, p := range ps {
			_ = os.Remove(p)
		}
		unlock()
	}
	return freed, nil
}

// removeListing removes commit c's listing and known-absent files, each
// only from a directory that is not a link (a link's target is not the
// cache's).
func (rf *repoFolder) removeListing(c string) error {
	for _, p := range []string{filepath.Join(rf.dir, "trees", c+".json"), filepath.Join(rf.dir, ".no_exist", c)} {
		if !isRealDir(filepath.Dir(p)) {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	return nil
}

// trashDir returns the repo folder's trash directory, made if needed. A
// link in its place is removed (only the name) and replaced by a directory:
// a snapshot moved through it would leave the cache.
func (rf *repoFolder) trashDir() (string, error) {
	dir := filepath.Join(rf.dir, gcTrashDir)
	if fi, err := os.Lstat(dir); err == nil && !fi.IsDir() {
		if err := os.Remove(dir); err != nil {
			return "", err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", err
	}
	return dir, nil
}

// keptBlobs are the blobs that the snapshots not in gone link or list.
func (rf *repoFolder) keptBlobs(gone map[string]bool) map[string]bool {
	keep := map[string]bool{}
	for _, m := range []map[string][]string{rf.links, rf.listed} {
		for c, etags := range m {
			if !gone[c] {
				for _, e := range etags {
					keep[e] = true
				}
			}
		}
	}
	return keep
}

// freedBy is what removeSnapshots(drop) would free: the bytes of the blobs
// that only the dropped snapshots (and leftover listings) link or list.
func freedBy(root, repo string, drop []string) (int64, error) {
	rf, err := scanRepoFolder(root, repo)
	if err != nil {
		return 0, err
	}
	gone := map[string]bool{}
	for _, c := range append(drop, rf.strays...) {
		gone[c] = true
	}
	keep := rf.keptBlobs(gone)
	var n int64
	for e, size := range rf.blobs {
		if !keep[e] {
			n += size
		}
	}
	return n, nil
}

// removeBlob removes blobs/<etag> unless a download holds its lock.
func (rf *repoFolder) removeBlob(root, etag string) (bool, error) {
	unlock, ok := lockBlob(root, rf.repo, etag)
	if !ok {
		return false, nil
	}
	defer unlock()
	err := os.Remove(filepath.Join(rf.dir, "blobs", etag))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// lockBlob takes the blob's download lock (.locks/<folder>/<etag>.lock)
// without waiting; ok is false when a download holds it.
func lockBlob(root, repo, etag string) (unlock func(), ok bool) {
	dir := filepath.Join(root, ".locks", folderOf(repo))
	if !isRealDir(dir) {
		return func() {}, true // no lock dir: nothing downloads here now
	}
	l := flock.New(filepath.Join(dir, etag+".lock"))
	if ok, err := l.TryLock(); err != nil || !ok {
		return nil, false
	}
	return func() { _ = l.Unlock() }, true
}

// syncDirOf fsyncs the directory holding p, so that a rename of p is on
// disk before the next step.
func syncDirOf(p string) error {
	d, err := os.Open(filepath.Dir(p))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func randName() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
