package convert

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gofrs/flock"

	"github.com/lorasync/lorasync/convert/synth"
)

// fakeEntry writes an entry with a pair file of pairSize bytes and mlpFiles
// MLP files of mlpSize bytes each, the pair file last used at used. Prune
// reads names, sizes and mtimes only, so the contents are filler.
func fakeEntry(t *testing.T, cache string, n int, pairSize, mlpFiles, mlpSize int, used time.Time) CacheEntry {
	t.Helper()
	key := fmt.Sprintf("%064x", n)
	pd := pairsDir(cache)
	if err := os.MkdirAll(filepath.Join(pd, key+mlpDirExt), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range mlpFiles {
		if err := os.WriteFile(filepath.Join(pd, key+mlpDirExt, fmt.Sprintf("%d-%d-up_proj.safetensors", i, i)), make([]byte, mlpSize), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pair := filepath.Join(pd, key+pairExt)
	if err := os.WriteFile(pair, make([]byte, pairSize), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{pair + ".lock", entryLockPath(cache, key)} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(pair, used, used); err != nil {
		t.Fatal(err)
	}
	return CacheEntry{Key: key, PairBytes: int64(pairSize), MLPBytes: int64(mlpFiles * mlpSize), MLPFiles: mlpFiles, LastUsed: used}
}

// entryFiles lists the names in the pairs directory that belong to key.
func entryFiles(t *testing.T, cache, key string) []string {
	t.Helper()
	des, err := os.ReadDir(pairsDir(cache))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		if strings.Contains(de.Name(), key) {
			out = append(out, de.Name())
		}
	}
	return out
}

func keys(es []CacheEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Key[60:])
	}
	return out
}

// Entries are accounted file by file, listed least recently used first, and
// evicted in that order, whole, until the cache fits; an entry another
// process holds is skipped and stays; a use moves an entry to the back; a
// dry run removes nothing and says what a real one would.
func TestPruneCacheLRU(t *testing.T) {
	cache := t.TempDir()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// Written in another order than their use, with sizes that make the
	// byte counts distinct.
	e3 := fakeEntry(t, cache, 3, 300, 2, 30, base.Add(3*time.Hour))
	e1 := fakeEntry(t, cache, 1, 100, 3, 10, base.Add(1*time.Hour))
	e4 := fakeEntry(t, cache, 4, 400, 1, 40, base.Add(4*time.Hour))
	e2 := fakeEntry(t, cache, 2, 200, 0, 0, base.Add(2*time.Hour))
	if err := os.WriteFile(filepath.Join(cache, "pairs", "README"), make([]byte, 7), 0o644); err != nil {
		t.Fatal(err)
	}

	s, err := CacheUsage(cache)
	if err != nil {
		t.Fatal(err)
	}
	want := []CacheEntry{e1, e2, e3, e4}
	if len(s.Entries) != 4 {
		t.Fatalf("entries %+v", s.Entries)
	}
	for i := range want {
		if g := s.Entries[i]; g.Key != want[i].Key || g.Bytes() != want[i].Bytes() || g.MLPFiles != want[i].MLPFiles || !g.LastUsed.Equal(want[i].LastUsed) {
			t.Errorf("entry %d: %+v, want %+v", i, g, want[i])
		}
	}
	all := e1.Bytes() + e2.Bytes() + e3.Bytes() + e4.Bytes()
	if s.OtherBytes != 7 || s.TotalBytes() != all+7 || s.PairBytes() != 1000 || s.MLPBytes() != 30+60+40 {
		t.Errorf("totals: other %d, total %d (want %d), pair %d, mlp %d", s.OtherBytes, s.TotalBytes(), all+7, s.PairBytes(), s.MLPBytes())
	}

	// Another process holds e1 (a conversion reading it): the prune needs
	// to drop e1's and e2's bytes, so it takes e2 and then e3 instead.
	release, err := lockEntry(context.Background(), cache, e1.Key, true)
	if err != nil {
		t.Fatal(err)
	}
	limit := all + 7 - e1.Bytes() - e2.Bytes()
	dry, err := PruneCache(context.Background(), cache, PruneOptions{MaxBytes: limit, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(dry.Removed); !slices.Equal(got, []string{"0002", "0003"}) || !slices.Equal(keys(dry.InUse), []string{"0001"}) {
		t.Fatalf("dry run would remove %v (in use %v), want 0002, 0003 (in use 0001)", got, keys(dry.InUse))
	}
	if s2, _ := CacheUsage(cache); s2.TotalBytes() != s.TotalBytes() {
		t.Fatal("the dry run removed something")
	}
	res, err := PruneCache(context.Background(), cache, PruneOptions{MaxBytes: limit})
	release()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys(res.Removed), keys(dry.Removed)) || !slices.Equal(keys(res.InUse), []string{"0001"}) {
		t.Fatalf("removed %v, in use %v", keys(res.Removed), keys(res.InUse))
	}
	if res.Before != all+7 || res.After != all+7-e2.Bytes()-e3.Bytes() || res.After > limit {
		t.Errorf("before %d after %d, limit %d", res.Before, res.After, limit)
	}
	for _, e := range []CacheEntry{e2, e3} {
		if left := entryFiles(t, cache, e.Key); len(left) != 0 {
			t.Errorf("entry %s left %v", e.Key[60:], left)
		}
	}
	for _, e := range []CacheEntry{e1, e4} {
		if left := entryFiles(t, cache, e.Key); len(left) != 4 { // pair, its lock, mlp dir, entry lock
			t.Errorf("kept entry %s has %v", e.Key[60:], left)
		}
	}

	// e1 is used now (a cache hit touches it): e4 is the oldest.
	touchUsed(filepath.Join(pairsDir(cache), e1.Key+pairExt))
	res, err = PruneCache(context.Background(), cache, PruneOptions{MaxBytes: e1.Bytes() + 7})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys(res.Removed), []string{"0004"}) {
		t.Fatalf("after using 0001, removed %v, want 0004", keys(res.Removed))
	}
	// No bound: nothing but stale leftovers goes; zero: everything.
	if res, err := PruneCache(context.Background(), cache, PruneOptions{MaxBytes: -1}); err != nil || len(res.Removed) != 0 {
		t.Fatalf("unbounded prune: %+v, %v", res, err)
	}
	if res, err := PruneCache(context.Background(), cache, PruneOptions{MaxBytes: 0}); err != nil || len(res.Removed) != 1 || res.After != 7 {
		t.Fatalf("prune to zero: %+v, %v", res, err)
	}
}

// A conversion waiting for an entry lock while a prune removes the entry
// ends up holding the lock file now at the path, not the removed one: a
// second prune cannot take the entry from under it.
func TestEntryLockSurvivesRemoval(t *testing.T) {
	cache := t.TempDir()
	e := fakeEntry(t, cache, 9, 10, 1, 10, time.Now())
	// The window lockEntry guards: a file opened, then removed by a prune,
	// then locked. Such a lock must not pass for the entry's.
	stale := flock.New(entryLockPath(cache, e.Key))
	if ok, err := stale.TryRLock(); err != nil || !ok {
		t.Fatalf("TryRLock: %v %v", ok, err)
	}
	if same, err := lockedPathIsFile(stale); err != nil || !same {
		t.Fatalf("the entry's own lock file: same %v, %v", same, err)
	}
	if err := os.Remove(stale.Path()); err != nil {
		t.Fatal(err)
	}
	if same, err := lockedPathIsFile(stale); err != nil || same {
		t.Fatalf("a lock on the removed file passes for the entry's: %v %v", same, err)
	}
	stale.Unlock()

	// The whole sequence, with the waiter in a goroutine.
	release, ok, err := tryLockEntry(cache, e.Key)
	if err != nil || !ok {
		t.Fatalf("tryLockEntry: %v %v", ok, err)
	}
	got := make(chan func())
	go func() {
		rel, err := lockEntry(context.Background(), cache, e.Key, true)
		if err != nil {
			t.Error(err)
		}
		got <- rel
	}()
	// The waiter has opened the old lock file once it polls; removing the
	// entry (lock file included) and releasing hands it the removed inode
	// first, which it must notice.
	if err := removeEntry(cache, e.Key); err != nil {
		t.Fatal(err)
	}
	release()
	rel := <-got
	defer rel()
	if _, ok, err := tryLockEntry(cache, e.Key); err != nil || ok {
		t.Fatalf("a prune took the entry lock while a conversion holds it (ok %v, err %v)", ok, err)
	}
}

var errKilled = errors.New("killed here")

// A prune killed between the steps of an entry's removal leaves a cache
// that conversions read correctly: killed after the MLP operators left, the
// analysis is still served and the operators are recomputed to the same
// result; killed after the analysis left too, it is recomputed. The
// leftovers are counted as stale and the next prune removes them.
func TestPruneInterruptedLeavesReadableCache(t *testing.T) {
	dir, old, _, _ := fixture(t, synth.UpgradeSpec{Hidden: 40, Layers: 4, Intermediate: 56, Seed: 9})
	ctx := context.Background()
	o := opts(dir)
	o.Adapter = mlpAdapter(t, dir, old.Config, 4)
	nMLP := 3 * old.Config.Layers
	run := func(name string) *Result {
		t.Helper()
		oo := o
		oo.Out = filepath.Join(dir, name)
		res, err := Convert(ctx, oo)
		if err != nil {
			t.Fatal(err)
		}
		sameModules(t, name, filepath.Join(dir, "out-first"), oo.Out)
		return res
	}
	first := run("out-first")
	pair := filepath.Join(pairsDir(o.CacheDir), first.Provenance.PairKey+pairExt)
	st, err := os.Stat(pair)
	if err != nil {
		t.Fatal(err)
	}
	// A cache hit marks the entry used.
	long := st.ModTime().Add(-48 * time.Hour)
	if err := os.Chtimes(pair, long, long); err != nil {
		t.Fatal(err)
	}
	if res := run("out-hit"); !res.Provenance.Timings.PairCached {
		t.Fatal("second run missed the cache")
	}
	if st, err := os.Stat(pair); err != nil || !st.ModTime().After(long) {
		t.Fatalf("a cache hit did not mark the entry used: %v", err)
	}

	defer func() { pruneStep = func(string) error { return nil } }()
	for _, step := range []string{"mlp moved", "pair removed"} {
		pruneStep = func(s string) error {
			if s == step {
				return errKilled
			}
			return nil
		}
		if _, err := PruneCache(ctx, o.CacheDir, PruneOptions{MaxBytes: 0}); !errors.Is(err, errKilled) {
			t.Fatalf("prune killed at %q: %v", step, err)
		}
		pruneStep = func(string) error { return nil }
		s, err := CacheUsage(o.CacheDir)
		if err != nil {
			t.Fatal(err)
		}
		if s.StaleBytes == 0 {
			t.Errorf("killed at %q: the moved MLP operators are not counted as stale", step)
		}
		res := run("out-after-" + strings.ReplaceAll(step, " ", "-"))
		mt := res.Provenance.Timings.MLPOperators
		if mt.Computed != nMLP || mt.Cached != 0 {
			t.Errorf("killed at %q: MLP operators %+v, want all recomputed", step, mt)
		}
		if wantCached := step == "mlp moved"; res.Provenance.Timings.PairCached != wantCached {
			t.Errorf("killed at %q: pair cached %v, want %v", step, res.Provenance.Timings.PairCached, wantCached)
		}
	}
	// A full prune removes the entry and every leftover.
	if _, err := PruneCache(ctx, o.CacheDir, PruneOptions{MaxBytes: 0}); err != nil {
		t.Fatal(err)
	}
	des, err := os.ReadDir(pairsDir(o.CacheDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if len(des) != 0 {
		var names []string
		for _, de := range des {
			names = append(names, de.Name())
		}
		t.Fatalf("after a full prune the pairs dir holds %v", names)
	}
}

// Identity files of local model directories are counted; those of a
// directory that is gone, and pair files of the old gob format, are stale
// and go at every prune, whatever the bound.
func TestPruneCacheStale(t *testing.T) {
	dir, _, _, _ := fixture(t, synth.UpgradeSpec{Hidden: 40, Layers: 4, Seed: 10})
	o := opts(dir)
	if _, err := Convert(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	s, err := CacheUsage(o.CacheDir)
	if err != nil {
		t.Fatal(err)
	}
	if s.IdentityFiles != 2 || s.StaleBytes != 0 || len(s.Entries) != 1 {
		t.Fatalf("after one conversion of local dirs: %+v", s)
	}
	legacy := filepath.Join(pairsDir(o.CacheDir), fmt.Sprintf("%064x", 7)+legacyPairExt)
	if err := os.WriteFile(legacy, make([]byte, 11), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(o.OldBase); err != nil {
		t.Fatal(err)
	}
	s, err = CacheUsage(o.CacheDir)
	if err != nil {
		t.Fatal(err)
	}
	if s.IdentityFiles != 1 || s.StaleBytes < 11 {
		t.Fatalf("with the old base gone and a format 1 file: %+v", s)
	}
	res, err := PruneCache(context.Background(), o.CacheDir, PruneOptions{MaxBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	if res.StaleBytes != s.StaleBytes || len(res.Removed) != 0 {
		t.Fatalf("prune: %+v", res)
	}
	if s, _ = CacheUsage(o.CacheDir); s.StaleBytes != 0 || s.IdentityFiles != 1 || len(s.Entries) != 1 {
		t.Fatalf("after the prune: %+v", s)
	}
	if _, err := os.Stat(legacy); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("format 1 file still there: %v", err)
	}
}

// TestPruneSkipsEntryInUse prunes the whole cache while a conversion that
// found its pair cached is between the analysis and the MLP operators: the
// entry is in use, so the prune leaves it, and the conversion reads every
// operator from the cache.
func TestPruneSkipsEntryInUse(t *testing.T) {
	dir, old, _, _ := fixture(t, synth.UpgradeSpec{Hidden: 40, Layers: 4, Intermediate: 56, Seed: 9})
	ctx := context.Background()
	o := opts(dir)
	o.Adapter = mlpAdapter(t, dir, old.Config, 4)
	o.Out = filepath.Join(dir, "out-first")
	if _, err := Convert(ctx, o); err != nil {
		t.Fatal(err)
	}
	var pruned *PruneResult
	testHookAfterPair = func() {
		var err error
		if pruned, err = PruneCache(ctx, o.CacheDir, PruneOptions{MaxBytes: 0}); err != nil {
			t.Error(err)
		}
	}
	defer func() { testHookAfterPair = nil }()
	o.Out = filepath.Join(dir, "out-second")
	res, err := Convert(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if pruned == nil || len(pruned.Removed) != 0 || len(pruned.InUse) != 1 {
		t.Fatalf("prune during the conversion: %+v, want the one entry in use and kept", pruned)
	}
	if mt := res.Provenance.Timings.MLPOperators; mt.Computed != 0 || mt.Cached != 3*old.Config.Layers {
		t.Errorf("MLP operators %+v, want all %d from the cache", mt, 3*old.Config.Layers)
	}
	sameModules(t, "out-second", filepath.Join(dir, "out-first"), o.Out)
}

// A process killed while it saved a pair analysis or an MLP operator
// leaves the write's temp file (safetensors.WriteFile's ".<name>.tmp-*").
// Every writer holds the entry's lock shared, so once a prune holds it
// exclusively the temps are dead ones: they go, whatever the cap, and the
// entry stays. They used to go only with their entry, so an uncapped cache,
// or a pair in steady use, kept a dead copy of its analysis (~0.7 GB at 7B
// sizes) for good. An entry in use keeps its temps: they may be live.
func TestPruneCacheRemovesDeadTemps(t *testing.T) {
	cache := t.TempDir()
	used := time.Now().Add(-time.Hour)
	live := fakeEntry(t, cache, 1, 100, 1, 10, used)
	dead := fakeEntry(t, cache, 2, 100, 1, 10, used)
	pd := pairsDir(cache)
	temps := func(e CacheEntry) []string {
		return []string{filepath.Join(pd, "."+e.Key+pairExt+".tmp-12345"),
			filepath.Join(pd, e.Key+mlpDirExt, ".0-0-down_proj.safetensors.tmp-678")}
	}
	for _, e := range []CacheEntry{live, dead} {
		for i, p := range temps(e) {
			if err := os.WriteFile(p, make([]byte, 1000*(i+1)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	release, err := lockEntry(context.Background(), cache, live.Key, true) // a conversion writing
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	for _, dry := range []bool{true, false} {
		res, err := PruneCache(context.Background(), cache, PruneOptions{MaxBytes: -1, DryRun: dry})
		if err != nil {
			t.Fatal(err)
		}
		if res.StaleBytes != 3000 || res.After != res.Before-3000 || len(res.Removed) != 0 {
			t.Errorf("dry %v: %+v, want the dead entry's 3000 bytes of temps as stale, no entry removed", dry, res)
		}
	}
	for _, p := range temps(dead) {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("dead temp %s is still there: %v", p, err)
		}
	}
	for _, p := range temps(live) {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("temp %s of an entry in use went: %v", p, err)
		}
	}
	s, err := CacheUsage(cache)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range s.Entries {
		want := int64(100)
		if e.Key == live.Key {
			want = 1100
		}
		if e.PairBytes != want || e.MLPFiles != 1 {
			t.Errorf("entry %s after the prune: %+v", e.Key[60:], e)
		}
	}
}
