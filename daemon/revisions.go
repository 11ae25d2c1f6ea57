package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/daemon/state"
)

// An adapter's revision names the content of its source: the commit its Hub
// revision points to, or "sha256:..." of a local directory's files. The
// planner resolves it at every poll (and, for local adapters, at every
// re-plan) and makes it part of each new job's key, so a new commit on an
// adapter's branch, or new weights in its directory, is migrated again, and
// the same content never is.

// adapterRevs resolves the current revision of each adapter and returns them
// by adapter id, with the adapters it could not resolve (which keep the
// revision recorded before, if any). A Hub adapter pinned to a commit needs
// no request; one on a branch costs a Head request, made only when withHub
// is set (a poll, which talks to the Hub anyway; re-plans after a reload or a
// drop-in change do not). Local adapters are read from disk through memo.
func (d *Daemon) adapterRevs(ctx context.Context, adapters []Adapter, withHub bool) (map[string]string, []error) {
	revs := map[string]string{}
	var errs []error
	for _, a := range adapters {
		var rev string
		var err error
		switch {
		case a.Local():
			rev, err = d.localRevs.rev(a.Path)
		case config.IsCommit(a.Revision):
			rev = a.Revision
		case withHub:
			rev, err = d.hub.Head(ctx, a.Repo, a.Revision)
		default:
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("adapter %s: %w", a.ID, err))
			continue
		}
		revs[a.ID] = rev
	}
	return revs, errs
}

// recordAdapterRevs sets ts.Adapters to the registered adapters' revisions:
// the ones just resolved, else the ones recorded before. Adapters no longer
// registered are dropped. It reports whether anything changed.
func recordAdapterRevs(ts *state.TrackState, adapters []Adapter, revs map[string]string, now time.Time) bool {
	next := make(map[string]state.AdapterHead, len(adapters))
	for _, a := range adapters {
		if rev, ok := revs[a.ID]; ok {
			next[a.ID] = state.AdapterHead{Rev: rev, Seen: now}
		} else if h, ok := ts.Adapters[a.ID]; ok {
			next[a.ID] = h
		}
	}
	changed := len(next) != len(ts.Adapters)
	for id, h := range next {
		if ts.Adapters[id].Rev != h.Rev {
			changed = true
		}
	}
	ts.Adapters = next
	return changed
}

// revMemo remembers the content identity of local adapter directories
// together with the stat of every file it hashed (name, size, modification
// time, inode), and reuses it while all of those are unchanged: polls and
// re-plans stat a directory instead of reading its weights each time. (A
// file rewritten in place keeping its size, mtime and inode would go
// unnoticed, as it does for make and rsync; the job itself hashes again
// before it migrates, see runJob.)
type revMemo struct {
	mu sync.Mutex
	m  map[string]dirRev
}

type dirRev struct {
	stamp []fileStamp
	rev   string
}

type fileStamp struct {
	rel   string
	size  int64
	mtime int64
	inode uint64
}

func newRevMemo() *revMemo { return &revMemo{m: map[string]dirRev{}} }

// rev returns hashDir(dir), from the memo when dir's files are unchanged.
func (m *revMemo) rev(dir string) (string, error) {
	before, err := stampDir(dir)
	if err != nil {
		return "", err
	}
	m.mu.Lock()
	got, ok := m.m[dir]
	m.mu.Unlock()
	if ok && slices.Equal(got.stamp, before) {
		return got.rev, nil
	}
	rev, err := hashDir(dir)
	if err != nil {
		return "", err
	}
	// Remembered only if nothing changed while hashing.
	if after, err := stampDir(dir); err == nil && slices.Equal(after, before) {
		m.mu.Lock()
		m.m[dir] = dirRev{stamp: before, rev: rev}
		m.mu.Unlock()
	}
	return rev, nil
}

// stampDir stats the files hashDir reads, in its order.
func stampDir(dir string) ([]fileStamp, error) {
	files, err := listAdapterDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]fileStamp, 0, len(files))
	for _, rel := range files {
		fi, err := os.Stat(filepath.Join(dir, rel))
		if err != nil {
			return nil, fmt.Errorf("adapter %s: %w", dir, err)
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = uint64(st.Ino)
		}
		out = append(out, fileStamp{rel: rel, size: fi.Size(), mtime: fi.ModTime().UnixNano(), inode: ino})
	}
	return out, nil
}

// listAdapterDir lists the files of a local adapter, relative to dir and
// sorted: regular files, and links to regular files (the converter reads
// through them: a "current" link to a training run's directory, weights
// linked from a download cache). Links to directories are not followed
// below dir itself. Hidden files and directories are skipped (editors' swap
// files, .cache).
func listAdapterDir(dir string) ([]string, error) {
	root := dir
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		root = dir + string(filepath.Separator) // walks the directory a link names
	}
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && p != root {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		regular := d.Type().IsRegular()
		if !regular && d.Type()&fs.ModeSymlink != 0 {
			fi, err := os.Stat(p)
			regular = err == nil && fi.Mode().IsRegular()
		}
		if regular {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("adapter %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, permanentf("adapter %s: no files", dir)
	}
	slices.Sort(files)
	return files, nil
}

// hashDir is the revision of a local adapter: "sha256:" over every file of
// listAdapterDir, its slash path, content and size, in path order.
func hashDir(dir string) (string, error) {
	files, err := listAdapterDir(dir)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, rel := range files {
		fmt.Fprintf(h, "%s\x00", filepath.ToSlash(rel))
		f, err := os.Open(filepath.Join(dir, rel))
		if err != nil {
			return "", fmt.Errorf("adapter %s: %w", dir, err)
		}
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("adapter %s: read %s: %w", dir, rel, err)
		}
		fmt.Fprintf(h, "\x00%d\x00", n)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// peftContent names what the converter reads of an adapter: "sha256:" over
// the names, sizes and bytes of adapter_config.json and
// adapter_model.safetensors. Two revisions with the same content migrate to
// the same result, whatever else (a model card) changed between them.
func peftContent(dir string) (string, error) {
	h := sha256.New()
	for _, name := range []string{adapterConfigFile, adapterWeightsFile} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return "", err
		}
		fi, err := f.Stat()
		if err == nil {
			fmt.Fprintf(h, "%s\x00%d\x00", name, fi.Size())
			_, err = io.Copy(h, f)
		}
		f.Close()
		if err != nil {
			return "", fmt.Errorf("%s: %w", filepath.Join(dir, name), err)
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// sameContentDone returns the job whose push the target holds for job's
// adapter and base commit (the last one done to that target) when it
// migrated the same adapter files (Job.AdapterContent) as job: then job
// has nothing to add.
func (d *Daemon) sameContentDone(job state.Job, tg target) (*state.Job, error) {
	var last *state.Job
	err := d.store.View(func(tx *state.Tx) error {
		jobs, err := tx.Jobs(job.Key.Track)
		for i, j := range jobs {
			k := j.Key
			if j.Status != state.Done || k == job.Key || k.Adapter != job.Key.Adapter || k.BaseRepo != job.Key.BaseRepo ||
				k.BaseCommit != job.Key.BaseCommit || j.OutputRepo != tg.Repo || j.OutputRevision != tg.Revision {
				continue
			}
			if last == nil || j.Finished.After(last.Finished) {
				last = &jobs[i]
			}
		}
		return err
	})
	if err != nil || last == nil || last.AdapterContent == "" || last.AdapterContent != job.AdapterContent {
		return nil, err
	}
	return last, nil
}

// unchanged records job as done by prev's push: the adapter's files are the
// ones prev migrated.
func (d *Daemon) unchanged(job, prev state.Job) state.Job {
	d.log.Info("the adapter's files are unchanged since an earlier migration to this base; nothing to push",
		"job", job.Key.String(), "same_as", prev.Key.String(), "target", prev.OutputRepo+"@"+prev.OutputRevision)
	d.metrics.Pushes.WithLabelValues("unchanged").Inc()
	job.OutputRepo, job.OutputRevision, job.OutputCommit, job.PullRequest = prev.OutputRepo, prev.OutputRevision, prev.OutputCommit, prev.PullRequest
	job.Reconciled = false
	job.Summary = fmt.Sprintf("adapter files unchanged since revision %s; its migration (%s) stands, nothing pushed", short(prev.AdapterRevision()), short(prev.OutputCommit))
	return job
}
