package convert

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/lorasync/lorasync/internal/atomicfile"
)

var snapshotDir = regexp.MustCompile(`(^|/)snapshots/([0-9a-f]{40})$`)

// identify names a model directory's content: "commit:<sha>" for a Hub cache
// snapshot (snapshots/<40-hex commit>), else "sha256:<hex>" over the names and
// contents of its config, tokenizer and weight files. Either way the same
// bytes give the same identity wherever they live.
//
// Hashing a local 16 GB checkpoint takes 20-30 s, so with a cache directory
// the sum is remembered in <cacheDir>/ids/<hash of the absolute path>.json
// together with the name, size, modification time (ns) and inode of every
// hashed file, and reused while all of those are unchanged. A file rewritten
// in place that keeps its size, mtime and inode would not be noticed: that
// takes deliberate effort (and would fool make and rsync too).
func identify(dir, cacheDir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if m := snapshotDir.FindStringSubmatch(filepath.ToSlash(abs)); m != nil {
		return "commit:" + m[2], nil
	}
	keep := func(name string) bool {
		return strings.HasSuffix(name, ".safetensors") || strings.HasSuffix(name, ".json")
	}
	var stamp *dirStamp
	var path string
	if cacheDir != "" {
		if stamp, err = stampDir(abs, keep); err != nil {
			return "", err
		}
		h := sha256.Sum256([]byte(abs))
		path = filepath.Join(cacheDir, "ids", hex.EncodeToString(h[:])+".json")
		if id, ok := cachedIdentity(path, stamp); ok {
			return id, nil
		}
	}
	sum, err := hashFiles(dir, keep)
	if err != nil {
		return "", err
	}
	id := "sha256:" + sum
	if stamp != nil {
		// Saved only if nothing changed while hashing; a failure to save costs
		// the next run a rehash, nothing else.
		if again, err := stampDir(abs, keep); err == nil && slices.Equal(again.Files, stamp.Files) {
			stamp.ID = id
			_ = saveIdentity(path, stamp)
		}
	}
	return id, nil
}

// identityFormat versions the files under <CacheDir>/ids. 2: file sizes are
// part of the hash (hashFiles), so identities saved by format 1 are stale.
const identityFormat = 2

// dirStamp is what an identity cache file holds: the directory, the stat of
// every hashed file (name order) and the identity they had.
type dirStamp struct {
	Format int         `json:"format"`
	Dir    string      `json:"dir"`
	Files  []fileStamp `json:"files"`
	ID     string      `json:"id,omitempty"`
}

type fileStamp struct {
	Name    string `json:"name"`
	Size    int64  `json:"size"`
	MtimeNS int64  `json:"mtime_ns"`
	Inode   uint64 `json:"inode"`
}

// stampDir stats the files of dir that keep accepts (following symlinks, as
// hashFiles reads through them).
func stampDir(dir string, keep func(string) bool) (*dirStamp, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	s := &dirStamp{Format: identityFormat, Dir: dir}
	for _, e := range entries {
		if e.IsDir() || !keep(e.Name()) {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		s.Files = append(s.Files, fileStamp{Name: e.Name(), Size: fi.Size(), MtimeNS: fi.ModTime().UnixNano(), Inode: inode(fi)})
	}
	slices.SortFunc(s.Files, func(a, b fileStamp) int { return strings.Compare(a.Name, b.Name) })
	return s, nil
}

// cachedIdentity returns the identity stored at path when its stamp is want's.
func cachedIdentity(path string, want *dirStamp) (string, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	var got dirStamp
	if json.Unmarshal(data, &got) != nil || got.Format != identityFormat || got.Dir != want.Dir ||
		!slices.Equal(got.Files, want.Files) || !strings.HasPrefix(got.ID, "sha256:") {
		return "", false
	}
	return got.ID, true
}

// saveIdentity writes s to path atomically (temp file and rename).
func saveIdentity(path string, s *dirStamp) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o644)
}

// hashFiles hashes the names, sizes and contents of dir's regular files that
// keep accepts, in name order.
func hashFiles(dir string, keep func(string) bool) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if !e.IsDir() && keep(e.Name()) {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	h := sha256.New()
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			return "", err
		}
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil {
			// The size makes each record self-delimiting: without it, one
			// file's bytes could spell another file's name and contents.
			fmt.Fprintf(h, "%s\x00%d\x00", n, fi.Size())
			var k int64
			if k, err = io.Copy(h, f); err == nil && k != fi.Size() {
				err = fmt.Errorf("size changed while hashing (%d bytes, then %d)", fi.Size(), k)
			}
		}
		f.Close()
		if err != nil {
			return "", fmt.Errorf("%s: %w", filepath.Join(dir, n), err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
