package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// This file reads and trims the huggingface_hub cache layout that
// hub.Client downloads into:
//
//	<root>/models--owner--name/blobs/<etag>             file contents
//	<root>/models--owner--name/snapshots/<commit>/<path> relative symlinks to ../../blobs/<etag>
//	<root>/models--owner--name/refs/<revision>          a commit
//	<root>/models--owner--name/trees/<commit>.json      the commit's file listing
//	<root>/models--owner--name/.no_exist/<commit>/...   files known absent
//	<root>/.locks/models--owner--name/<etag>.lock       per-blob flock (shared with Python)
//
// removeSnapshots (gc_remove.go) trims it. Nothing here follows a symbolic
// link: links are read, never traversed.

var (
	commitHexRE = regexp.MustCompile(`^[0-9a-f]{40}$`)
	etagHexRE   = regexp.MustCompile(`^(?:[0-9a-f]{40}|[0-9a-f]{64})$`)
)

// gcTrashDir is where snapshots go while they are removed, inside the repo
// folder (huggingface_hub ignores it; the next collection empties it).
const gcTrashDir = ".lorasync-gc"

// SnapshotUsage is one cached snapshot of a repo.
type SnapshotUsage struct {
	Repo   string `json:"repo"`
	Commit string `json:"commit"`
	// Files counts the snapshot's files; Bytes their sizes (each blob once).
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
	// UniqueBytes are the blobs no other snapshot of the repo links: what
	// removing this one frees.
	UniqueBytes int64 `json:"unique_bytes"`
	// Refs are the revisions (refs/ files) naming this commit.
	Refs []string `json:"refs,omitempty"`
	// Needed says why the daemon keeps the snapshot ("" when it may go);
	// set by CacheStatus when it knows the config and the state.
	Needed string `json:"needed,omitempty"`
}

// HubRepoUsage is one repo folder of the cache.
type HubRepoUsage struct {
	Repo      string          `json:"repo"`
	Snapshots []SnapshotUsage `json:"snapshots"`
	// BlobBytes are all the repo's blobs; UnlinkedBytes those no snapshot
	// links (partial downloads included); StaleBytes snapshots left in the
	// trash by an interrupted collection.
	BlobBytes     int64 `json:"blob_bytes"`
	UnlinkedBytes int64 `json:"unlinked_bytes"`
	StaleBytes    int64 `json:"stale_bytes"`
	// Leftovers count what an interrupted collection (or download) left:
	// snapshots in the trash, listings (trees/<commit>.json,
	// .no_exist/<commit>) of snapshots no longer there, which would keep
	// naming their blobs, and blobs and partial downloads that no snapshot
	// links or lists. The next collection removes them (a blob or partial
	// whose download lock is held stays).
	Leftovers int `json:"leftovers,omitempty"`
}

// HubCacheStats is what a hub cache root holds, by model repo.
type HubCacheStats struct {
	Dir   string         `json:"dir"`
	Repos []HubRepoUsage `json:"repos"`
}

// repoFolder is one scanned models--owner--name folder.
type repoFolder struct {
	repo, dir string
	blobs     map[string]int64    // etag -> size
	partial   map[string][]string // etag -> its .incomplete files
	links     map[string][]string // commit -> etags its snapshot links
	files     map[string]int      // commit -> files in its snapshot
	refs      map[string][]string // commit -> refs naming it
	listed    map[string][]string // commit -> etags of trees/<commit>.json
	trash     []string
	// strays are commits with a listing (trees/, .no_exist/) but neither a
	// snapshot directory nor a ref: an interrupted collection's leftovers
	// (or a download that died before it made the directory; the listing
	// is fetched again).
	strays []string
}

// repoFromFolder maps "models--owner--name" to "owner/name".
func repoFromFolder(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "models--")
	if !ok || rest == "" {
		return "", false
	}
	return strings.Replace(rest, "--", "/", 1), true
}

// folderOf maps "owner/name" to its folder name.
func folderOf(repo string) string { return "models--" + strings.ReplaceAll(repo, "/", "--") }

// isRealDir reports whether p is a directory itself (not a link to one).
func isRealDir(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// HubCacheUsage scans a hub cache root (hub.Options.CacheDir). A missing
// root is an empty cache.
func HubCacheUsage(root string) (*HubCacheStats, error) {
	st := &HubCacheStats{Dir: root}
	des, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hub cache %s: %w", root, err)
	}
	for _, de := range des {
		repo, ok := repoFromFolder(de.Name())
		if !ok || !de.IsDir() {
			continue
		}
		rf, err := scanRepoFolder(root, repo)
		if err != nil {
			return nil, err
		}
		st.Repos = append(st.Repos, rf.usage())
	}
	return st, nil
}

// scanRepoFolder reads repo's folder under root.
func scanRepoFolder(root, repo string) (*repoFolder, error) {
	rf := &repoFolder{repo: repo, dir: filepath.Join(root, folderOf(repo)),
		blobs: map[string]int64{}, partial: map[string][]string{}, links: map[string][]string{},
		files: map[string]int{}, refs: map[string][]string{}, listed: map[string][]string{}}
	fail := func(err error) (*repoFolder, error) { return nil, fmt.Errorf("hub cache %s: %w", rf.dir, err) }
	if !isRealDir(rf.dir) {
		return rf, nil
	}
	blobs := filepath.Join(rf.dir, "blobs")
	des, err := readRealDir(blobs)
	if err != nil {
		return fail(err)
	}
	for _, de := range des {
		name := de.Name()
		if etagHexRE.MatchString(name) && de.Type().IsRegular() {
			fi, err := de.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since the listing
			}
			if err != nil {
				return fail(err)
			}
			rf.blobs[name] = fi.Size()
		} else if etag, _, ok := strings.Cut(name, "."); ok && etagHexRE.MatchString(etag) && strings.HasSuffix(name, ".incomplete") {
			rf.partial[etag] = append(rf.partial[etag], filepath.Join(blobs, name))
		}
	}
	snaps := filepath.Join(rf.dir, "snapshots")
	des, err = readRealDir(snaps)
	if err != nil {
		return fail(err)
	}
	for _, de := range des {
		if !commitHexRE.MatchString(de.Name()) || !de.IsDir() {
			continue
		}
		rf.files[de.Name()] = 0 // a snapshot even when empty (a download killed before its first link)
		if err := rf.scanSnapshot(de.Name()); err != nil {
			return fail(err)
		}
	}
	if err := rf.scanRefs(); err != nil {
		return fail(err)
	}
	trees, err := readRealDir(filepath.Join(rf.dir, "trees"))
	if err != nil {
		return fail(err)
	}
	for _, de := range trees {
		if c, ok := strings.CutSuffix(de.Name(), ".json"); ok && commitHexRE.MatchString(c) && de.Type().IsRegular() {
			rf.listed[c] = listedEtags(filepath.Join(rf.dir, "trees", de.Name()))
		}
	}
	trash, err := readRealDir(filepath.Join(rf.dir, gcTrashDir))
	if err != nil {
		return fail(err)
	}
	for _, de := range trash {
		rf.trash = append(rf.trash, filepath.Join(rf.dir, gcTrashDir, de.Name()))
	}
	noExist, err := readRealDir(filepath.Join(rf.dir, ".no_exist"))
	if err != nil {
		return fail(err)
	}
	listed := map[string]bool{}
	for c := range rf.listed {
		listed[c] = true
	}
	for _, de := range noExist {
		if commitHexRE.MatchString(de.Name()) {
			listed[de.Name()] = true
		}
	}
	for c := range listed {
		if _, err := os.Lstat(filepath.Join(snaps, c)); errors.Is(err, fs.ErrNotExist) && len(rf.refs[c]) == 0 {
			rf.strays = append(rf.strays, c)
		}
	}
	slices.Sort(rf.strays)
	return rf, nil
}

// gone drops an error saying a file no longer exists: a scan (lorasync cache
// status) may run while the daemon collects, and a file removed under it is
// simply not there any more.
func gone(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// readRealDir lists dir; a missing dir is empty, and so is a link (never
// followed).
func readRealDir(dir string) ([]fs.DirEntry, error) {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !fi.IsDir()) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	des, err := os.ReadDir(dir)
	return des, gone(err)
}

// scanSnapshot records the blobs snapshots/<commit> links: every symlink
// whose target, resolved lexically from the link's directory, is exactly
// <repo folder>/blobs/<etag>. Other links are not the cache's and are
// ignored.
func (rf *repoFolder) scanSnapshot(commit string) error {
	blobs := filepath.Join(rf.dir, "blobs")
	return filepath.WalkDir(filepath.Join(rf.dir, "snapshots", commit), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return gone(err)
		}
		if d.IsDir() {
			return nil
		}
		rf.files[commit]++
		if d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		target, err := os.Readlink(p)
		if err != nil {
			return gone(err)
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		if filepath.Dir(target) == blobs && etagHexRE.MatchString(filepath.Base(target)) {
			rf.links[commit] = append(rf.links[commit], filepath.Base(target))
		}
		return nil
	})
}

// scanRefs maps commits to the refs/ files that name them.
func (rf *repoFolder) scanRefs() error {
	refs := filepath.Join(rf.dir, "refs")
	if !isRealDir(refs) {
		return nil
	}
	return filepath.WalkDir(refs, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return gone(err)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return gone(err)
		}
		rel, _ := filepath.Rel(refs, p)
		c := strings.TrimSpace(string(data))
		rf.refs[c] = append(rf.refs[c], filepath.ToSlash(rel))
		return nil
	})
}

// listedEtags reads a trees/<commit>.json listing (huggingface_hub's
// format_version 1); an unreadable one lists nothing.
func listedEtags(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var tf struct {
		Files map[string]struct {
			BlobID    string `json:"blob_id"`
			LFSSHA256 string `json:"lfs_sha256"`
		} `json:"files"`
	}
	if json.Unmarshal(data, &tf) != nil {
		return nil
	}
	var out []string
	for _, f := range tf.Files {
		if f.LFSSHA256 != "" {
			out = append(out, f.LFSSHA256)
		} else {
			out = append(out, f.BlobID)
		}
	}
	return out
}

// usage summarises the folder.
func (rf *repoFolder) usage() HubRepoUsage {
	u := HubRepoUsage{Repo: rf.repo, Leftovers: len(rf.trash) + len(rf.strays)}
	linkers := map[string]int{}
	for _, etags := range rf.links {
		for _, e := range uniq(etags) {
			linkers[e]++
		}
	}
	listed := rf.keptBlobs(nil)
	for e, n := range rf.blobs {
		u.BlobBytes += n
		if linkers[e] == 0 {
			u.UnlinkedBytes += n
		}
		if !listed[e] {
			u.Leftovers++
		}
	}
	for e, ps := range rf.partial {
		for _, p := range ps {
			if fi, err := os.Lstat(p); err == nil {
				u.UnlinkedBytes += fi.Size()
			}
		}
		if !listed[e] && rf.blobs[e] == 0 {
			u.Leftovers += len(ps)
		}
	}
	for _, p := range rf.trash {
		u.StaleBytes += lstatTreeBytes(p)
	}
	for c, n := range rf.files {
		s := SnapshotUsage{Repo: rf.repo, Commit: c, Files: n, Refs: rf.refs[c]}
		for _, e := range uniq(rf.links[c]) {
			s.Bytes += rf.blobs[e]
			if linkers[e] == 1 {
				s.UniqueBytes += rf.blobs[e]
			}
		}
		slices.Sort(s.Refs)
		u.Snapshots = append(u.Snapshots, s)
	}
	slices.SortFunc(u.Snapshots, func(a, b SnapshotUsage) int { return strings.Compare(a.Commit, b.Commit) })
	return u
}

func uniq(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

// lstatTreeBytes sums the regular files at or under p, never following links.
func lstatTreeBytes(p string) int64 {
	var n int64
	_ = filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
