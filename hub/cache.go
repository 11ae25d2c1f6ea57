package hub

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/gofrs/flock"

	"github.com/lorasync/lorasync/internal/atomicfile"
)

// repoCache is one repository's folder in the hub cache. Every path it hands
// out has been checked to stay inside the cache root.
type repoCache struct {
	root    string // $HF_HUB_CACHE
	repo    string // org/name
	dir     string // root/models--org--name
	lockDir string // root/.locks/models--org--name
}

// downloadTarget validates a download's repo and revision ("" means main)
// and returns the revision and the repo's cache.
func (c *Client) downloadTarget(repo, rev string) (string, *repoCache, error) {
	if rev == "" {
		rev = "main"
	}
	rc, err := c.repoCache(repo)
	if err != nil {
		return "", nil, err
	}
	if err := checkRevision(repo, rev); err != nil {
		return "", nil, err
	}
	return rev, rc, nil
}

func (c *Client) repoCache(repo string) (*repoCache, error) {
	if err := checkRepoID(repo); err != nil {
		return nil, err
	}
	name := repoFolderName(repo)
	dir, err := within(c.cacheDir, name)
	if err != nil {
		return nil, err
	}
	lockDir, err := within(c.cacheDir, ".locks/"+name)
	if err != nil {
		return nil, err
	}
	return &repoCache{root: c.cacheDir, repo: repo, dir: dir, lockDir: lockDir}, nil
}

// etagRE accepts the two etag forms the Hub uses for files: a git blob sha1
// (regular files) or a sha256 (LFS files). Anything else cannot be verified,
// and could not safely be used as a file name either.
var etagRE = regexp.MustCompile(`^(?:[0-9a-f]{40}|[0-9a-f]{64})$`)

func (rc *repoCache) blobPath(etag string) (string, error) {
	if !etagRE.MatchString(etag) {
		return "", fmt.Errorf("%w: etag %q is neither a git sha1 nor a sha256", ErrProtocol, etag)
	}
	return within(rc.dir, "blobs/"+etag)
}

func (rc *repoCache) snapshotDir(commit string) (string, error) {
	if !IsCommit(commit) {
		return "", fmt.Errorf("%w: commit %q is not 40 hex digits", ErrProtocol, commit)
	}
	return within(rc.dir, "snapshots/"+commit)
}

func (rc *repoCache) pointerPath(commit, path string) (string, error) {
	if err := checkRelPath(path); err != nil {
		return "", err
	}
	if !IsCommit(commit) {
		return "", fmt.Errorf("%w: commit %q is not 40 hex digits", ErrProtocol, commit)
	}
	return within(rc.dir, "snapshots/"+commit+"/"+path)
}

// readRef returns the commit recorded in refs/{rev}, or "" if none.
func (rc *repoCache) readRef(rev string) (string, error) {
	if err := checkRelPath(rev); err != nil {
		return "", err
	}
	p, err := within(rc.dir, "refs/"+rev)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	commit := strings.TrimSpace(string(b))
	if !IsCommit(commit) {
		return "", fmt.Errorf("%w: %s holds %q, not a commit", ErrIntegrity, p, commit)
	}
	return commit, nil
}

// resolveLocal maps rev to a commit using only the cache: a full commit is
// itself, anything else goes through refs/.
func (rc *repoCache) resolveLocal(rev string) (string, error) {
	if IsCommit(rev) {
		return rev, nil
	}
	return rc.readRef(rev)
}

// writeRef records refs/{rev} = commit (temp file + rename, like Python),
// unless rev is the commit itself or the ref is already up to date.
func (rc *repoCache) writeRef(rev, commit string) error {
	if rev == commit {
		return nil
	}
	if old, err := rc.readRef(rev); err == nil && old == commit {
		return nil
	}
	p, err := within(rc.dir, "refs/"+rev)
	if err != nil {
		return err
	}
	return rc.writeFile(p, []byte(commit))
}

// markNoExist records that path does not exist at commit
// (.no_exist/{commit}/{path}, an empty file), as hf_hub_download does.
func (rc *repoCache) markNoExist(commit, path string) error {
	if !IsCommit(commit) || checkRelPath(path) != nil {
		return nil // nothing trustworthy to record
	}
	p, err := within(rc.dir, ".no_exist/"+commit+"/"+path)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

func (rc *repoCache) knownAbsent(commit, path string) bool {
	p, err := within(rc.dir, ".no_exist/"+commit+"/"+path)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

// link points snapshots/{commit}/{path} at blobs/{etag} with a relative
// symlink ("../../blobs/x" plus one "../" per directory level of path), as
// huggingface_hub's _create_symlink does. The link is made under a temporary
// name at the repo's top level (see writeFile) and renamed into place so
// readers never see a missing pointer.
func (rc *repoCache) link(commit, path, etag string) (string, error) {
	ptr, err := rc.pointerPath(commit, path)
	if err != nil {
		return "", err
	}
	blob, err := rc.blobPath(etag)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(filepath.Dir(ptr), blob)
	if err != nil {
		return "", err
	}
	if cur, err := os.Readlink(ptr); err == nil && cur == rel {
		return ptr, nil
	}
	if err := os.MkdirAll(filepath.Dir(ptr), 0o755); err != nil {
		return "", err
	}
	tmp := filepath.Join(rc.dir, ".link-"+randHex(4)+".tmp")
	if err := os.Symlink(rel, tmp); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, ptr); err != nil {
		_ = os.Remove(tmp)
		return "", err
	}
	return ptr, nil
}

// lock takes the per-blob lock Python uses
// ($HF_HUB_CACHE/.locks/models--org--name/{etag}.lock). Python's filelock
// uses flock(2) on Unix, as gofrs/flock does, so the two exclude each other.
func (rc *repoCache) lock(ctx context.Context, etag string) (func(), error) {
	if !etagRE.MatchString(etag) {
		return nil, fmt.Errorf("%w: etag %q", ErrProtocol, etag)
	}
	if err := os.MkdirAll(rc.lockDir, 0o755); err != nil {
		return nil, err
	}
	fl := flock.New(filepath.Join(rc.lockDir, etag+".lock"))
	ok, err := fl.TryLockContext(ctx, 50*time.Millisecond)
	if err != nil {
		return nil, fmt.Errorf("lock blob %s: %w", etag, err)
	}
	if !ok {
		return nil, fmt.Errorf("lock blob %s: not acquired", etag)
	}
	return func() { _ = fl.Unlock() }, nil
}

// treeFile is huggingface_hub's on-disk tree listing (_tree_cache.py,
// format_version 1): trees/{commit}.json maps each file path to its size,
// git blob id and, for LFS files, sha256 and size.
type treeFile struct {
	FormatVersion int                  `json:"format_version"`
	Files         map[string]treeEntry `json:"files"`
}

type treeEntry struct {
	Size      int64  `json:"size"`
	BlobID    string `json:"blob_id"`
	LFSSHA256 string `json:"lfs_sha256,omitempty"`
	LFSSize   *int64 `json:"lfs_size,omitempty"`
}

// etag is what the Hub reports for the file: the sha256 of an LFS file's
// content, or the git blob sha1 of a regular file.
func (e treeEntry) etag() string {
	if e.LFSSHA256 != "" {
		return e.LFSSHA256
	}
	return e.BlobID
}

const treeFormatVersion = 1

func (rc *repoCache) readTree(commit string) (map[string]treeEntry, bool) {
	p, err := within(rc.dir, "trees/"+commit+".json")
	if err != nil || !IsCommit(commit) {
		return nil, false
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, false
	}
	var tf treeFile
	if json.Unmarshal(b, &tf) != nil || tf.FormatVersion != treeFormatVersion || tf.Files == nil {
		return nil, false
	}
	for path := range tf.Files {
		if checkRelPath(path) != nil {
			return nil, false // a tampered listing is ignored, never trusted
		}
	}
	return tf.Files, true
}

func (rc *repoCache) writeTree(commit string, files map[string]treeEntry) error {
	p, err := within(rc.dir, "trees/"+commit+".json")
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ") // Python writes json.dump(data, f, indent=1)
	if err := enc.Encode(treeFile{FormatVersion: treeFormatVersion, Files: files}); err != nil {
		return err
	}
	return rc.writeFile(p, bytes.TrimRight(buf.Bytes(), "\n"))
}

// cacheDirTag is the Cache Directory Tagging Standard file huggingface_hub
// writes at the cache root so backup tools skip it.
const cacheDirTag = "Signature: 8a477f597d28d172789f06886806bc55\n" +
	"# This file is a cache directory tag created by huggingface_hub.\n" +
	"# For information about cache directory tags, see:\n" +
	"#\thttps://bford.info/cachedir/\n"

func writeCacheDirTag(root string) {
	p := filepath.Join(root, "CACHEDIR.TAG")
	if _, err := os.Stat(p); err == nil {
		return
	}
	_ = writeFileAtomic(p, []byte(cacheDirTag))
}

// writeFile writes p (a ref or a tree listing inside the repo's cache)
// atomically, its temp file in the repo's directory itself rather than
// beside p: huggingface_hub's scan_cache_dir reads every file under refs/ as
// a ref (and every entry under snapshots/ as a file), so debris left there
// by a crash would make it report the repo corrupted, while it ignores
// entries at the repo's top level.
func (rc *repoCache) writeFile(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFileVia(rc.dir, p, data, 0o644)
}

// writeFileAtomic creates p's directory and writes p atomically
// (atomicfile.WriteFile), so readers see the old or the new content, never half.
func writeFileAtomic(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(p, data, 0o644)
}

// randHex returns 2n random hex digits (uuid4().hex[:8] in Python for n=4).
func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// syncDir fsyncs a directory so a rename inside it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
