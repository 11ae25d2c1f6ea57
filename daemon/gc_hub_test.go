package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/daemon/state"
	"github.com/lorasync/lorasync/hub"
	"github.com/lorasync/lorasync/hub/hubtest"
)

// gcBed is a hub cache filled by hub.Client from hubtest: org/base with
// three commits that share config.json (one blob) and differ in their
// weights, all three downloaded; refs/main names the newest and refs/v1 (a
// tag) the oldest.
type gcBed struct {
	srv     *hubtest.Server
	root    string
	commits []string // oldest first
	weights []string // each commit's weights
}

func newGCBed(t *testing.T) *gcBed {
	t.Helper()
	b := &gcBed{srv: hubtest.NewTB(t), root: filepath.Join(t.TempDir(), "hub")}
	b.srv.AddToken("hf_gctest", "org")
	if err := b.srv.CreateRepo("org/base", false); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"v0", "v1", "v2"} {
		w := strings.Repeat(v, 100)
		c, err := b.srv.Commit("org/base", "main", map[string][]byte{
			"config.json": []byte(`{"model_type":"llama"}`), "model.safetensors": []byte(w)}, v)
		if err != nil {
			t.Fatal(err)
		}
		b.commits, b.weights = append(b.commits, c), append(b.weights, w)
	}
	if err := b.srv.CreateTag("org/base", "v1", b.commits[0]); err != nil {
		t.Fatal(err)
	}
	c := b.client(t, false)
	for _, rev := range append([]string{"v1", "main"}, b.commits...) {
		if _, err := c.Snapshot(context.Background(), "org/base", rev, hub.SnapshotOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func (b *gcBed) client(t *testing.T, offline bool) *hub.Client {
	t.Helper()
	c, err := hub.New(hub.Options{Endpoint: b.srv.URL, Token: "hf_gctest", CacheDir: b.root, Offline: offline, MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// read returns commit i's weights as the cache serves them offline, or
// the error.
func (b *gcBed) read(t *testing.T, i int) (string, error) {
	t.Helper()
	dir, err := b.client(t, true).Snapshot(context.Background(), "org/base", b.commits[i], hub.SnapshotOptions{})
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(filepath.Join(dir, "model.safetensors"))
	return string(data), err
}

// checkConsistent asserts what a reader of the cache relies on: every
// snapshot left is complete (served offline with the right bytes), every
// other is absent (offline: not in the cache, never a partial directory),
// and every ref names a snapshot that is there.
func (b *gcBed) checkConsistent(t *testing.T, what string) (present []bool) {
	t.Helper()
	for i := range b.commits {
		got, err := b.read(t, i)
		switch {
		case err == nil && got == b.weights[i]:
			present = append(present, true)
		case errors.Is(err, hub.ErrOffline):
			if _, serr := os.Lstat(filepath.Join(b.root, "models--org--base", "snapshots", b.commits[i])); serr == nil {
				t.Errorf("%s: commit %d is refused offline but its snapshot directory is there (partial)", what, i)
			}
			present = append(present, false)
		default:
			t.Errorf("%s: commit %d reads %q, %v", what, i, got, err)
			present = append(present, false)
		}
	}
	refs := filepath.Join(b.root, "models--org--base", "refs")
	_ = filepath.WalkDir(refs, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, _ := os.ReadFile(p)
		if _, err := os.Lstat(filepath.Join(b.root, "models--org--base", "snapshots", strings.TrimSpace(string(data)))); err != nil {
			t.Errorf("%s: ref %s names a missing snapshot", what, p)
		}
		return nil
	})
	return present
}

// Removing two of three snapshots: their directories, listings and refs go,
// the blob they alone linked goes, the blob shared with the one kept stays,
// and the kept snapshot reads offline byte for byte. Sizes: each weights
// blob is 200 bytes, counted once per snapshot; the shared config counts in
// Bytes but not in UniqueBytes.
func TestRemoveSnapshotsKeepsTheRestReadable(t *testing.T) {
	b := newGCBed(t)
	st, err := HubCacheUsage(b.root)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Repos) != 1 || len(st.Repos[0].Snapshots) != 3 {
		t.Fatalf("scan: %+v", st)
	}
	cfgLen := int64(len(`{"model_type":"llama"}`))
	for _, s := range st.Repos[0].Snapshots {
		if s.Files != 3 || s.Bytes < 200+cfgLen || s.UniqueBytes != 200 { // + .gitattributes, also shared
			t.Errorf("snapshot %s: %+v", s.Commit[:8], s)
		}
	}
	planned, err := freedBy(b.root, "org/base", b.commits[:2])
	if err != nil {
		t.Fatal(err)
	}
	freed, err := removeSnapshots(context.Background(), b.root, "org/base", b.commits[:2])
	if err != nil {
		t.Fatal(err)
	}
	if freed != 400 || planned != freed {
		t.Errorf("freed %d bytes (a dry run says %d), want the two 200-byte weights", freed, planned)
	}
	if got := b.checkConsistent(t, "after"); got[0] || got[1] || !got[2] {
		t.Fatalf("present after removal: %v, want only the newest", got)
	}
	repo := filepath.Join(b.root, "models--org--base")
	if _, err := os.Stat(filepath.Join(repo, "refs", "v1")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("refs/v1 names a removed commit and is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(repo, "refs", "main")); err != nil {
		t.Errorf("refs/main (the kept commit) went: %v", err)
	}
	for _, c := range b.commits[:2] {
		if _, err := os.Stat(filepath.Join(repo, "trees", c+".json")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("listing of removed %s left: %v", c[:8], err)
		}
	}
	st, _ = HubCacheUsage(b.root)
	if r := st.Repos[0]; r.UnlinkedBytes != 0 || r.StaleBytes != 0 || len(r.Snapshots) != 1 {
		t.Errorf("after removal: %+v", r)
	}
	// Online, a removed snapshot comes back.
	if _, err := b.client(t, false).Snapshot(context.Background(), "org/base", b.commits[0], hub.SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, err := b.read(t, 0); err != nil || got != b.weights[0] {
		t.Fatalf("downloaded again: %q %v", got, err)
	}
}

// A collection killed after any step leaves a cache the hub client reads
// correctly: each snapshot complete or absent, no ref to a missing one; the
// next collection finishes the work and empties the trash.
func TestRemoveSnapshotsInterrupted(t *testing.T) {
	defer func() { gcStep = func(string) error { return nil } }()
	for _, step := range []string{"refs removed", "snapshot moved", "snapshots removed"} {
		t.Run(strings.ReplaceAll(step, " ", "-"), func(t *testing.T) {
			b := newGCBed(t)
			b.removeKilledAfter(t, step)
			if got := b.checkConsistent(t, "killed after "+step); !got[1] || !got[2] {
				t.Fatalf("kept snapshots unreadable: %v", got)
			}
			if _, err := removeSnapshots(context.Background(), b.root, "org/base", b.commits[:1]); err != nil {
				t.Fatal(err)
			}
			if got := b.checkConsistent(t, "finished"); got[0] || !got[1] || !got[2] {
				t.Fatalf("after the second collection: %v", got)
			}
			st, _ := HubCacheUsage(b.root)
			if r := st.Repos[0]; r.StaleBytes != 0 || r.UnlinkedBytes != 0 {
				t.Errorf("leftovers after the second collection: %+v", r)
			}
		})
	}
}

var errKilledHere = errors.New("killed here")

// Links that lead out of the cache are never followed: a snapshot file
// that is a link to a file elsewhere, and a blobs directory that is a link
// to a directory elsewhere, leave their targets untouched.
func TestRemoveSnapshotsFollowsNoLinks(t *testing.T) {
	b := newGCBed(t)
	outside := t.TempDir()
	victim := filepath.Join(outside, "precious")
	if err := os.WriteFile(victim, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(b.root, "models--org--base")
	if err := os.Symlink(victim, filepath.Join(repo, "snapshots", b.commits[0], "escape")); err != nil {
		t.Fatal(err)
	}
	// A second repo folder whose blobs dir points outside.
	other := filepath.Join(b.root, "models--org--other")
	if err := os.MkdirAll(filepath.Join(other, "snapshots", strings.Repeat("a", 40)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(other, "blobs")); err != nil {
		t.Fatal(err)
	}
	if _, err := removeSnapshots(context.Background(), b.root, "org/base", b.commits[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := removeSnapshots(context.Background(), b.root, "org/other", []string{strings.Repeat("a", 40)}); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(victim); err != nil || string(data) != "keep me" {
		t.Fatalf("a file outside the cache was touched: %q %v", data, err)
	}
	if _, err := os.Lstat(filepath.Join(other, "blobs")); err != nil {
		t.Fatalf("the blobs link itself: %v", err)
	}
}

// A collection killed after any step is finished by the next collection,
// which finds what is left by itself (a real collection is not told the
// commit again: once its snapshot directory has left, it is no longer among
// the snapshots). Killed after the snapshot moved to the trash, its listing
// went on naming the removed snapshot's weights; killed among the blobs,
// the ones not removed yet were linked and listed by nothing; both stayed
// until another snapshot of the repo went, as did the trash.
func TestCollectCachesFinishesAnInterruptedRemoval(t *testing.T) {
	defer func() { gcStep = func(string) error { return nil } }()
	for _, step := range []string{"refs removed", "snapshot moved", "snapshots removed"} {
		t.Run(strings.ReplaceAll(step, " ", "-"), func(t *testing.T) {
			b := newGCBed(t)
			b.removeKilledAfter(t, step)
			// The two commits left are the track's baseline and latest
			// version: nothing else is to be dropped.
			cfg := &config.Config{Tracks: []config.Track{{Name: "t", Base: config.RepoRef{Repo: "org/base"}}}}
			snap := &state.Snapshot{Tracks: []state.TrackState{{Track: "t", BaseRepo: "org/base", BaselineCommit: b.commits[1],
				Versions: []state.Version{{Repo: "org/base", Commit: b.commits[2]}}}}}
			o := CacheCollectOptions{Config: cfg, State: snap, HubDir: b.root, DryRun: true, Logger: slog.New(slog.DiscardHandler)}
			dry, err := CollectCaches(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			o.DryRun = false
			rep, err := CollectCaches(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if rep.SnapshotBytes != 200 || dry.SnapshotBytes != rep.SnapshotBytes {
				t.Errorf("freed %d bytes (a dry run says %d), want the removed snapshot's 200-byte weights", rep.SnapshotBytes, dry.SnapshotBytes)
			}
			repo := filepath.Join(b.root, "models--org--base")
			if _, err := os.Stat(filepath.Join(repo, "trees", b.commits[0]+".json")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the removed snapshot's listing is still there: %v", err)
			}
			if got := b.checkConsistent(t, "finished"); got[0] || !got[1] || !got[2] {
				t.Fatalf("after the collection: %v", got)
			}
			st, _ := HubCacheUsage(b.root)
			if r := st.Repos[0]; r.UnlinkedBytes != 0 || r.StaleBytes != 0 || r.Leftovers != 0 {
				t.Errorf("leftovers after the collection: %+v", r)
			}
			if des, _ := os.ReadDir(filepath.Join(repo, gcTrashDir)); len(des) != 0 {
				t.Errorf("trash not emptied: %v", des)
			}
		})
	}
}

// The repo folder's trees/, .no_exist/ and trash are no way out of the
// cache either: when they are links to directories elsewhere, a
// collection neither removes the files there that are named like the
// removed commit, nor moves the removed snapshot there.
func TestRemoveSnapshotsFollowsNoListingLinks(t *testing.T) {
	b := newGCBed(t)
	repo := filepath.Join(b.root, "models--org--base")
	c := b.commits[0]
	outside := t.TempDir()
	for _, p := range []string{filepath.Join(outside, c, "precious"), filepath.Join(outside, c+".json")} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("keep me"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	trashOutside := t.TempDir()
	for name, target := range map[string]string{"trees": outside, ".no_exist": outside, gcTrashDir: trashOutside} {
		if err := os.RemoveAll(filepath.Join(repo, name)); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(repo, name)); err != nil {
			t.Fatal(err)
		}
	}
	defer func() { gcStep = func(string) error { return nil } }()
	var outsideTrash []fs.DirEntry
	gcStep = func(s string) error {
		if s == "snapshot moved" {
			outsideTrash, _ = os.ReadDir(trashOutside)
		}
		return nil
	}
	if _, err := removeSnapshots(context.Background(), b.root, "org/base", b.commits[:1]); err != nil {
		t.Fatal(err)
	}
	if len(outsideTrash) != 0 {
		t.Errorf("the removed snapshot went outside the cache: %v", outsideTrash)
	}
	for _, p := range []string{filepath.Join(outside, c, "precious"), filepath.Join(outside, c+".json")} {
		if data, err := os.ReadFile(p); err != nil || string(data) != "keep me" {
			t.Errorf("%s, outside the cache, was touched: %q %v", p, data, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(repo, "snapshots", c)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("snapshot not removed: %v", err)
	}
}

// Leftovers are collected only in the base repos the daemon manages: an
// adapter repo, or a repo the state does not know (a push target whose
// lorasync.json a reconcile is reading, its blob not linked yet), keeps
// even a blob that nothing links.
func TestCollectCachesLeavesOtherReposLeftovers(t *testing.T) {
	b := newGCBed(t)
	var blobs []string
	for _, folder := range []string{"models--acme--math", "models--acme--math-target"} {
		p := filepath.Join(b.root, folder, "blobs", strings.Repeat("ab", 20))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("in flight"), 0o644); err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, p)
	}
	cfg := &config.Config{Tracks: []config.Track{{Name: "t", Base: config.RepoRef{Repo: "org/base"},
		Adapters: []config.AdapterRef{{Repo: "acme/math"}}}}}
	snap := &state.Snapshot{Tracks: []state.TrackState{{Track: "t", BaseRepo: "org/base", BaselineCommit: b.commits[1],
		Versions: []state.Version{{Repo: "org/base", Commit: b.commits[2]}}}}}
	if _, err := CollectCaches(context.Background(), CacheCollectOptions{Config: cfg, State: snap, HubDir: b.root,
		Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	for _, p := range blobs {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("a blob outside the managed base repos went: %v", err)
		}
	}
	if got := b.checkConsistent(t, "after"); got[0] || !got[1] || !got[2] {
		t.Errorf("org/base after the collection: %v", got)
	}
}

// A download killed before its first file was linked leaves an empty
// snapshot directory, its listing and a partial blob. When no job needs
// the commit any more, the collection removes them like any snapshot: an
// empty directory was not taken for a snapshot, so its listing kept the
// partial download (up to a whole weights file) for good.
func TestCollectCachesRemovesAnEmptySnapshot(t *testing.T) {
	b := newGCBed(t)
	repo := filepath.Join(b.root, "models--org--base")
	snapDir := filepath.Join(repo, "snapshots", b.commits[0])
	weights, err := os.Readlink(filepath.Join(snapDir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	etag := filepath.Base(weights)
	if err := os.RemoveAll(snapDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(snapDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"v1"} {
		if err := os.Remove(filepath.Join(repo, "refs", ref)); err != nil {
			t.Fatal(err)
		}
	}
	blob := filepath.Join(repo, "blobs", etag)
	partial := blob + ".0badf00d.incomplete"
	if err := os.Rename(blob, partial); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Tracks: []config.Track{{Name: "t", Base: config.RepoRef{Repo: "org/base"}}}}
	snap := &state.Snapshot{Tracks: []state.TrackState{{Track: "t", BaseRepo: "org/base", BaselineCommit: b.commits[1],
		Versions: []state.Version{{Repo: "org/base", Commit: b.commits[2]}}}}}
	if _, err := CollectCaches(context.Background(), CacheCollectOptions{Config: cfg, State: snap, HubDir: b.root,
		Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{snapDir, partial, filepath.Join(repo, "trees", b.commits[0]+".json")} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s is still there: %v", p, err)
		}
	}
	if got := b.checkConsistent(t, "after"); got[0] || !got[1] || !got[2] {
		t.Errorf("after the collection: %v", got)
	}
	st, _ := HubCacheUsage(b.root)
	if r := st.Repos[0]; r.UnlinkedBytes != 0 || r.Leftovers != 0 || len(r.Snapshots) != 2 {
		t.Errorf("after the collection: %+v", r)
	}
}

// removeKilledAfter removes the bed's first snapshot in a collection that
// dies right after step.
func (b *gcBed) removeKilledAfter(t *testing.T, step string) {
	t.Helper()
	gcStep = func(s string) error {
		if s == step {
			return errKilledHere
		}
		return nil
	}
	defer func() { gcStep = func(string) error { return nil } }()
	if _, err := removeSnapshots(context.Background(), b.root, "org/base", b.commits[:1]); !errors.Is(err, errKilledHere) {
		t.Fatalf("not interrupted: %v", err)
	}
}

// TestScanToleratesFilesGoingAway: `lorasync cache status` may scan while
// the daemon collects, so parts that vanish between a listing and their
// reading (a snapshot renamed to the trash, a ref removed, a whole folder)
// are simply absent, not an error.
func TestScanToleratesFilesGoingAway(t *testing.T) {
	root := t.TempDir()
	rf := &repoFolder{repo: "org/base", dir: filepath.Join(root, folderOf("org/base")),
		blobs: map[string]int64{}, partial: map[string][]string{}, links: map[string][]string{},
		files: map[string]int{}, refs: map[string][]string{}, listed: map[string][]string{}}
	if err := rf.scanSnapshot(strings.Repeat("a", 40)); err != nil {
		t.Errorf("scanning a snapshot removed since the listing: %v", err)
	}
	if des, err := readRealDir(filepath.Join(rf.dir, "snapshots")); err != nil || des != nil {
		t.Errorf("listing a removed dir: %v, %v", des, err)
	}
	if err := gone(fmt.Errorf("wrapped: %w", fs.ErrPermission)); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("gone dropped a permission error: %v", err)
	}
}
