package convert

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// PruneOptions bound a convert cache directory.
type PruneOptions struct {
	// MaxBytes is the size the cache may keep (CacheStats.TotalBytes);
	// negative means no bound: only the stale leftovers go.
	MaxBytes int64
	// DryRun reports what would be removed and removes nothing.
	DryRun bool
}

// PruneResult says what PruneCache did (or, dry, would do).
type PruneResult struct {
	// Before and After are the cache's TotalBytes.
	Before int64 `json:"before"`
	After  int64 `json:"after"`
	// Removed are the entries removed, least recently used first.
	Removed []CacheEntry `json:"removed,omitempty"`
	// InUse are entries that were over the bound but are in use (locked by
	// a conversion, or used since the scan); they stay.
	InUse []CacheEntry `json:"in_use,omitempty"`
	// StaleBytes are the leftovers removed (see CacheStats.StaleBytes) and
	// the unfinished writes of killed processes (see PruneCache).
	StaleBytes int64 `json:"stale_bytes"`
}

// PruneCache removes least recently used pair entries (an analysis with its
// MLP operators, together) from the convert cache directory dir until its
// size is at most o.MaxBytes, and the stale leftovers in any case. An entry
// that a conversion holds (its entry lock, taken shared by every reader and
// writer, see cachelock.go) is never removed: it is reported in InUse and
// the next oldest is tried. The identity files of local model directories
// are small and stay unless stale. A prune killed midway leaves a valid,
// smaller cache (removeEntry). The temp files of unfinished writes in an
// entry that nobody holds are a killed process's (every writer holds the
// entry's lock) and go whatever the bound; the entry stays.
func PruneCache(ctx context.Context, dir string, o PruneOptions) (*PruneResult, error) {
	s, err := CacheUsage(dir)
	if err != nil {
		return nil, err
	}
	res := &PruneResult{Before: s.TotalBytes(), StaleBytes: s.StaleBytes}
	if !o.DryRun {
		for _, p := range s.stale {
			if err := os.RemoveAll(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("convert: prune %s: %w", p, err)
			}
		}
	}
	total := res.Before - s.StaleBytes
	for i := range s.Entries {
		e := &s.Entries[i]
		if len(s.temps[e.Key]) == 0 {
			continue
		}
		pair, mlp, err := removeDeadTemps(dir, e.Key, s.temps[e.Key], o.DryRun)
		if err != nil {
			return nil, err
		}
		e.PairBytes, e.MLPBytes = e.PairBytes-pair, e.MLPBytes-mlp
		res.StaleBytes += pair + mlp
		total -= pair + mlp
	}
	for _, e := range s.Entries {
		if o.MaxBytes < 0 || total <= o.MaxBytes {
			break
		}
		if err := ctx.Err(); err != nil {
			res.After = total
			return res, err
		}
		if o.DryRun {
			if _, err := os.Lstat(entryLockPath(dir, e.Key)); errors.Is(err, fs.ErrNotExist) {
				// Nobody holds a lock file that is not there; a dry run
				// creates none.
				total -= e.Bytes()
				res.Removed = append(res.Removed, e)
				continue
			}
		}
		release, ok, err := tryLockEntry(dir, e.Key)
		if err != nil {
			return nil, err
		}
		if !ok {
			res.InUse = append(res.InUse, e)
			continue
		}
		if usedSince(dir, e) {
			release()
			res.InUse = append(res.InUse, e)
			continue
		}
		if !o.DryRun {
			err = removeEntry(dir, e.Key)
		}
		release()
		if err != nil {
			return nil, err
		}
		total -= e.Bytes()
		res.Removed = append(res.Removed, e)
	}
	res.After = total
	return res, nil
}

// removeDeadTemps removes key's write temps (paths) when nobody holds the
// entry, and returns their bytes beside the analysis and in the MLP
// directory; nothing when the entry is in use. A dry run removes nothing
// and creates no lock file.
func removeDeadTemps(dir, key string, paths []string, dry bool) (pairBytes, mlpBytes int64, err error) {
	release := func() {}
	_, lerr := os.Lstat(entryLockPath(dir, key))
	if !dry || !errors.Is(lerr, fs.ErrNotExist) {
		r, ok, err := tryLockEntry(dir, key)
		if err != nil || !ok {
			return 0, 0, err
		}
		release = r
	}
	defer release()
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if err != nil {
			continue // finished or removed meanwhile
		}
		if !dry {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return pairBytes, mlpBytes, fmt.Errorf("convert: prune %s: %w", p, err)
			}
		}
		if filepath.Dir(p) == pairsDir(dir) {
			pairBytes += fi.Size()
		} else {
			mlpBytes += fi.Size()
		}
	}
	return pairBytes, mlpBytes, nil
}

// usedSince reports whether e's analysis file was touched after the scan
// that found e: a conversion used it between the scan and the lock, so it is
// no longer the least recently used.
func usedSince(dir string, e CacheEntry) bool {
	fi, err := os.Stat(filepath.Join(pairsDir(dir), e.Key+pairExt))
	return err == nil && fi.ModTime().After(e.LastUsed)
}
