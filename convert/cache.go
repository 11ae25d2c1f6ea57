package convert

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/lorasync/lorasync/convert/safetensors"
)

// CacheEntry is one pair's entry in a convert cache directory: its analysis
// and its MLP operators, removed together (see cachelock.go for the files).
type CacheEntry struct {
	Key string `json:"key"`
	// PairBytes is the pair analysis file's size, plus any unfinished write
	// of it.
	PairBytes int64 `json:"pair_bytes"`
	// MLPBytes and MLPFiles count the MLP operators and pinv(W_x) files.
	MLPBytes int64 `json:"mlp_bytes"`
	MLPFiles int   `json:"mlp_files"`
	// LastUsed is when a conversion last used the entry: the analysis
	// file's mtime, which every cache hit touches (the newest part's mtime
	// when the analysis file is missing).
	LastUsed time.Time `json:"last_used"`
}

// Bytes is the entry's size on disk (file sizes).
func (e CacheEntry) Bytes() int64 { return e.PairBytes + e.MLPBytes }

// CacheStats is what a convert cache directory (Options.CacheDir) holds.
type CacheStats struct {
	Dir string `json:"dir"`
	// Entries are the pair entries, least recently used first.
	Entries []CacheEntry `json:"entries"`
	// IdentityFiles and IdentityBytes count the remembered content
	// identities of local model directories (<dir>/ids).
	IdentityFiles int   `json:"identity_files"`
	IdentityBytes int64 `json:"identity_bytes"`
	// StaleBytes are leftovers that PruneCache removes whatever the cap:
	// MLP directories of an interrupted prune, pair files of an older
	// format, identities of directories that no longer exist.
	StaleBytes int64 `json:"stale_bytes"`
	// OtherBytes are files the cache does not know; they are never removed.
	OtherBytes int64 `json:"other_bytes"`

	stale []string // paths of the stale leftovers
	// temps are the entries' unfinished writes (".<name>.tmp-*", beside the
	// analysis or in the MLP directory), by key: a live writer's, or a
	// killed one's (see PruneCache).
	temps map[string][]string
}

// PairBytes sums the entries' pair analysis files.
func (s *CacheStats) PairBytes() int64 {
	var n int64
	for _, e := range s.Entries {
		n += e.PairBytes
	}
	return n
}

// MLPBytes sums the entries' MLP operator files.
func (s *CacheStats) MLPBytes() int64 {
	var n int64
	for _, e := range s.Entries {
		n += e.MLPBytes
	}
	return n
}

// TotalBytes is everything under the directory that the stats count.
func (s *CacheStats) TotalBytes() int64 {
	return s.PairBytes() + s.MLPBytes() + s.IdentityBytes + s.StaleBytes + s.OtherBytes
}

// CacheUsage scans a convert cache directory (Options.CacheDir). A missing
// directory is an empty cache. Symbolic links are counted as other files and
// never followed.
func CacheUsage(dir string) (*CacheStats, error) {
	s := &CacheStats{Dir: dir, temps: map[string][]string{}}
	byKey := map[string]*CacheEntry{}
	pairMtime := map[string]time.Time{}
	entry := func(key string) *CacheEntry {
		e := byKey[key]
		if e == nil {
			e = &CacheEntry{Key: key}
			byKey[key] = e
		}
		return e
	}
	used := func(key string, t time.Time) {
		if e := entry(key); t.After(e.LastUsed) {
			e.LastUsed = t
		}
	}
	pd := pairsDir(dir)
	des, err := os.ReadDir(pd)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("convert: cache %s: %w", dir, err)
	}
	for _, de := range des {
		path := filepath.Join(pd, de.Name())
		key, part := parseEntryName(de.Name())
		switch {
		case part == partMLP && de.IsDir():
			n, files, newest, err := treeBytes(path)
			if err != nil {
				return nil, err
			}
			e := entry(key)
			e.MLPBytes, e.MLPFiles = e.MLPBytes+n, e.MLPFiles+files
			used(key, newest)
			s.temps[key] = append(s.temps[key], writeTemps(path)...)
		case part == partDeleting && de.IsDir(), part == partLegacy && de.Type().IsRegular():
			n, _, _, err := treeBytes(path)
			if err != nil {
				return nil, err
			}
			s.StaleBytes += n
			s.stale = append(s.stale, path)
		case (part == partPair || part == partTemp) && de.Type().IsRegular():
			fi, err := de.Info()
			if err != nil {
				return nil, fmt.Errorf("convert: cache %s: %w", dir, err)
			}
			entry(key).PairBytes += fi.Size()
			used(key, fi.ModTime())
			if part == partPair {
				pairMtime[key] = fi.ModTime()
			} else {
				s.temps[key] = append(s.temps[key], path)
			}
		case (part == partEntryLock || part == partComputeLock) && de.Type().IsRegular():
			// Empty files; an entry with nothing else is removed with them.
			entry(key)
		default:
			n, _, _, err := treeBytes(path)
			if err != nil {
				return nil, err
			}
			s.OtherBytes += n
		}
	}
	for key, e := range byKey {
		if t, ok := pairMtime[key]; ok {
			e.LastUsed = t
		}
		s.Entries = append(s.Entries, *e)
	}
	slices.SortFunc(s.Entries, func(a, b CacheEntry) int {
		if c := a.LastUsed.Compare(b.LastUsed); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	if err := s.scanIdentities(filepath.Join(dir, "ids")); err != nil {
		return nil, err
	}
	return s, nil
}

// scanIdentities counts the identity files under ids; those of another
// format or of a directory that is gone are stale.
func (s *CacheStats) scanIdentities(ids string) error {
	des, err := os.ReadDir(ids)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("convert: cache %s: %w", ids, err)
	}
	for _, de := range des {
		path := filepath.Join(ids, de.Name())
		fi, err := de.Info()
		if err != nil {
			return fmt.Errorf("convert: cache %s: %w", ids, err)
		}
		if !fi.Mode().IsRegular() || !strings.HasSuffix(de.Name(), ".json") {
			s.OtherBytes += fi.Size()
			continue
		}
		var st dirStamp
		data, err := os.ReadFile(path)
		stale := err != nil || json.Unmarshal(data, &st) != nil || st.Format != identityFormat || st.Dir == ""
		if !stale {
			if _, err := os.Lstat(st.Dir); errors.Is(err, fs.ErrNotExist) {
				stale = true
			}
		}
		if stale {
			s.StaleBytes += fi.Size()
			s.stale = append(s.stale, path)
			continue
		}
		s.IdentityFiles++
		s.IdentityBytes += fi.Size()
	}
	return nil
}

// treeBytes sums the sizes of the regular files at or under path (symbolic
// links are not followed), and returns their count and the newest mtime.
func treeBytes(path string) (n int64, files int, newest time.Time, err error) {
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if filepath.Ext(p) != ".lock" && !isWriteTemp(d.Name()) {
			files++
		}
		n += fi.Size()
		if fi.ModTime().After(newest) {
			newest = fi.ModTime()
		}
		return nil
	})
	if err != nil {
		return 0, 0, time.Time{}, fmt.Errorf("convert: cache %s: %w", path, err)
	}
	return n, files, newest, nil
}

// isWriteTemp reports whether name is an unfinished write's temp file
// (safetensors.WriteFile: ".<name>.tmp-<rand>").
func isWriteTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-")
}

// writeTemps lists the write temps directly in an MLP directory (it has no
// subdirectories); links are not followed.
func writeTemps(mlpDir string) []string {
	des, err := os.ReadDir(mlpDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, de := range des {
		if de.Type().IsRegular() && isWriteTemp(de.Name()) {
			out = append(out, filepath.Join(mlpDir, de.Name()))
		}
	}
	return out
}

// randSuffix is a short random name part for a directory being removed.
func randSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// syncDir fsyncs dir, so that a rename or removal in it is on disk before the
// next step.
func syncDir(dir string) error { return safetensors.SyncDir(dir) }

// pruneStep is called between the steps of an entry's removal; tests make it
// fail to stand for a process killed there.
var pruneStep = func(step string) error { return nil }

// removeEntry deletes key's entry; the caller holds its lock exclusively.
// The steps keep what is left readable at every point: first the MLP
// directory leaves in one rename (the analysis alone is a valid entry),
// then the analysis and its locks, then the renamed directory's files, and
// the entry lock last. A process killed midway leaves a smaller valid entry
// and a ".deleting." directory that nothing reads and the next prune
// removes.
func removeEntry(cacheDir, key string) error {
	pd := pairsDir(cacheDir)
	mlp := filepath.Join(pd, key+mlpDirExt)
	trash := ""
	if fi, err := os.Lstat(mlp); err == nil {
		if !fi.IsDir() {
			if err := os.Remove(mlp); err != nil { // not ours (a link?): only the name goes
				return fmt.Errorf("convert: prune %s: %w", mlp, err)
			}
		} else {
			trash = filepath.Join(pd, key+deletingInfix+randSuffix())
			if err := os.Rename(mlp, trash); err != nil {
				return fmt.Errorf("convert: prune %s: %w", mlp, err)
			}
			if err := syncDir(pd); err != nil {
				return fmt.Errorf("convert: prune %s: %w", pd, err)
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("convert: prune %s: %w", mlp, err)
	}
	if err := pruneStep("mlp moved"); err != nil {
		return err
	}
	temps, _ := filepath.Glob(filepath.Join(pd, "."+key+pairExt+".tmp-*"))
	for _, p := range append([]string{filepath.Join(pd, key+pairExt), filepath.Join(pd, key+computeLock), filepath.Join(pd, key+legacyPairExt)}, temps...) {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("convert: prune: %w", err)
		}
	}
	if err := syncDir(pd); err != nil {
		return fmt.Errorf("convert: prune %s: %w", pd, err)
	}
	if err := pruneStep("pair removed"); err != nil {
		return err
	}
	if trash != "" {
		if err := os.RemoveAll(trash); err != nil {
			return fmt.Errorf("convert: prune: %w", err)
		}
	}
	if err := os.Remove(entryLockPath(cacheDir, key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("convert: prune: %w", err)
	}
	return nil
}
