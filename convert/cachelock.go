package convert

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/gofrs/flock"
)

// A pair's cache entry is every file under <CacheDir>/pairs named by its
// key (64 hex digits):
//
//	<key>.pair.safetensors            the pair analysis (pairstore.go)
//	<key>.pair.safetensors.lock       its compute lock (pair.go)
//	.<key>.pair.safetensors.tmp-*     a write in progress, or a dead one's
//	<key>.mlp/                        MLP operators and pinv(W_x) (mlpcache.go)
//	<key>.lock                        the entry lock
//	<key>.deleting.<rand>/            an MLP dir being removed by PruneCache
//
// The entry lock is a flock(2) (gofrs/flock, like the compute locks): a
// conversion holds it shared while it reads, computes or writes any part of
// the entry, PruneCache takes it exclusively, without waiting, before it
// removes the entry, and skips the entry when it cannot. PruneCache removes
// the lock file too, so a conversion that was waiting for it may end up
// holding a lock on a file no longer in the directory: lockEntry checks, once
// it holds the lock, that the path still names the file it locked, and locks
// again otherwise.

// entryKeyRE matches a pair key.
var entryKeyRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Suffixes of an entry's files after the key.
const (
	entryLockExt  = ".lock"
	computeLock   = pairExt + ".lock"
	mlpDirExt     = ".mlp"
	deletingInfix = ".deleting."
	legacyPairExt = ".gob" // pairFormat 1, never read since format 2
)

func pairsDir(cacheDir string) string { return filepath.Join(cacheDir, "pairs") }

func entryLockPath(cacheDir, key string) string {
	return filepath.Join(pairsDir(cacheDir), key+entryLockExt)
}

// lockEntry takes key's entry lock, shared (a conversion using the entry)
// or exclusive, waiting for it until ctx is done, and creates the pairs
// directory if needed. The returned func releases it.
func lockEntry(ctx context.Context, cacheDir, key string, shared bool) (func(), error) {
	if !entryKeyRE.MatchString(key) {
		panic(fmt.Sprintf("convert: cache entry key %q is not a pair key", key))
	}
	if err := os.MkdirAll(pairsDir(cacheDir), 0o755); err != nil {
		return nil, fmt.Errorf("convert: cache %s: %w", cacheDir, err)
	}
	path := entryLockPath(cacheDir, key)
	for {
		l := flock.New(path)
		var err error
		if shared {
			_, err = l.TryRLockContext(ctx, 100*time.Millisecond)
		} else {
			_, err = l.TryLockContext(ctx, 100*time.Millisecond)
		}
		if err != nil {
			return nil, fmt.Errorf("convert: cache entry lock %s: %w", path, err)
		}
		if same, err := lockedPathIsFile(l); err != nil {
			l.Unlock()
			return nil, fmt.Errorf("convert: cache entry lock %s: %w", path, err)
		} else if same {
			return func() { l.Unlock() }, nil
		}
		l.Unlock() // removed by a prune while we waited: lock the new file
	}
}

// tryLockEntry takes key's entry lock exclusively if nobody holds it. ok is
// false when somebody does.
func tryLockEntry(cacheDir, key string) (release func(), ok bool, err error) {
	path := entryLockPath(cacheDir, key)
	for {
		l := flock.New(path)
		ok, err := l.TryLock()
		if err != nil {
			return nil, false, fmt.Errorf("convert: cache entry lock %s: %w", path, err)
		}
		if !ok {
			return nil, false, nil
		}
		if same, err := lockedPathIsFile(l); err != nil {
			l.Unlock()
			return nil, false, fmt.Errorf("convert: cache entry lock %s: %w", path, err)
		} else if same {
			return func() { l.Unlock() }, true, nil
		}
		l.Unlock()
	}
}

// lockedPathIsFile reports whether the locked file is still the one its path
// names (false when it was removed or replaced meanwhile).
func lockedPathIsFile(l *flock.Flock) (bool, error) {
	held, err := l.Stat() // the open descriptor's file while locked
	if err != nil {
		return false, err
	}
	cur, err := os.Stat(l.Path())
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(held, cur), nil
}

// touchUsed marks a cache file used now (its mtime), for PruneCache's
// least-recently-used order. A cache that cannot be touched (read-only) only
// loses that.
func touchUsed(path string) {
	now := time.Now()
	_ = os.Chtimes(path, now, now)
}

// entryPart says which part of key's entry the name in the pairs directory
// is (key "" when it is none).
type entryPart int

const (
	partNone entryPart = iota
	partPair
	partComputeLock
	partTemp
	partMLP
	partEntryLock
	partDeleting
	partLegacy
)

// parseEntryName maps a file name in the pairs directory to its entry and
// part.
func parseEntryName(name string) (key string, part entryPart) {
	tmp := false
	if strings.HasPrefix(name, ".") {
		name, tmp = name[1:], true
	}
	if len(name) < 64 || !entryKeyRE.MatchString(name[:64]) {
		return "", partNone
	}
	key, rest := name[:64], name[64:]
	switch {
	case tmp && strings.HasPrefix(rest, pairExt+".tmp-"):
		return key, partTemp
	case tmp:
		return "", partNone
	case rest == pairExt:
		return key, partPair
	case rest == computeLock:
		return key, partComputeLock
	case rest == mlpDirExt:
		return key, partMLP
	case rest == entryLockExt:
		return key, partEntryLock
	case strings.HasPrefix(rest, deletingInfix):
		return key, partDeleting
	case rest == legacyPairExt:
		return key, partLegacy
	}
	return "", partNone
}
