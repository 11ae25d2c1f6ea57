package daemon

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/daemon/state"
)

// defaultRevision is the branch watched on successor and discovered repos.
const defaultRevision = "main"

// discover computes a track's next state from its previous one by asking
// the Hub, and returns the new base versions found. It does not write
// anything: the caller records the result (or, in a dry run, prints it).
//
// Rules:
//   - The first poll records the baseline: base.revision's head (or the
//     pinned commit). The adapters were trained on it; it is not a version.
//   - follow.commits: a changed head of any known repo (the base, and every
//     successor or discovered repo once seen) is a new version.
//   - follow.successors: each listed repo that exists and is not yet known
//     is a new version, in list order. A repo that does not exist yet is
//     skipped (ErrNotFound); other errors fail the poll.
//   - follow.discover: the first discovery poll records the author's
//     matching repos as a baseline; repos appearing later are new versions.
//
// If the configured base repo or revision changed, the track starts over.
func discover(ctx context.Context, hub Hub, tr config.Track, prev state.TrackState, now time.Time) (state.TrackState, []state.Version, error) {
	ts := prev
	if ts.BaseRepo != tr.Base.Repo || ts.BaseRevision != tr.Base.Revision {
		ts = state.TrackState{Track: tr.Name, BaseRepo: tr.Base.Repo, BaseRevision: tr.Base.Revision}
	}
	ts.Track = tr.Name
	ts.Heads = cloneHeads(ts.Heads)
	ts.Versions = append([]state.Version(nil), ts.Versions...)
	ts.Discovered = cloneSet(ts.Discovered)
	var found []state.Version
	newVersion := func(repo, commit, why string) {
		v := state.Version{Repo: repo, Commit: commit, Found: now, Why: why}
		ts.Versions = append(ts.Versions, v)
		found = append(found, v)
		ts.Heads[repo] = state.RepoHead{Commit: commit, Seen: now}
	}

	if ts.BaselineCommit == "" {
		commit := tr.Base.Revision
		if !config.IsCommit(commit) {
			c, err := hub.Head(ctx, tr.Base.Repo, tr.Base.Revision)
			if err != nil {
				return prev, nil, fmt.Errorf("track %s: base %s@%s: %w", tr.Name, tr.Base.Repo, tr.Base.Revision, err)
			}
			commit = c
		}
		ts.BaselineCommit = commit
		ts.Heads[tr.Base.Repo] = state.RepoHead{Commit: commit, Seen: now}
	} else if tr.Follow.Commits {
		if err := followCommits(ctx, hub, tr, &ts, newVersion, now); err != nil {
			return prev, nil, err
		}
	}

	for _, repo := range tr.Follow.Successors {
		if _, known := ts.Heads[repo]; known {
			continue
		}
		c, err := hub.Head(ctx, repo, defaultRevision)
		if errors.Is(err, ErrNotFound) {
			continue // not released yet
		}
		if err != nil {
			return prev, nil, fmt.Errorf("track %s: successor %s: %w", tr.Name, repo, err)
		}
		newVersion(repo, c, "successor")
	}

	if d := tr.Follow.Discover; d != nil {
		if err := discoverRepos(ctx, hub, tr, &ts, newVersion, now); err != nil {
			return prev, nil, fmt.Errorf("track %s: discover %s/%s: %w", tr.Name, d.Author, d.Pattern, err)
		}
	}
	return ts, found, nil
}

// followCommits compares the head of every known repo with its last seen
// commit, in name order.
func followCommits(ctx context.Context, hub Hub, tr config.Track, ts *state.TrackState, newVersion func(repo, commit, why string), now time.Time) error {
	repos := sortedKeys(ts.Heads)
	for _, repo := range repos {
		rev := defaultRevision
		if repo == tr.Base.Repo {
			rev = tr.Base.Revision
		}
		c, err := hub.Head(ctx, repo, rev)
		if errors.Is(err, ErrNotFound) && repo != tr.Base.Repo {
			continue // a successor that was deleted or made private: keep what we have
		}
		if err != nil {
			return fmt.Errorf("track %s: %s@%s: %w", tr.Name, repo, rev, err)
		}
		if c == ts.Heads[repo].Commit {
			h := ts.Heads[repo]
			h.Seen = now
			ts.Heads[repo] = h
			continue
		}
		newVersion(repo, c, "commit")
	}
	return nil
}

func discoverRepos(ctx context.Context, hub Hub, tr config.Track, ts *state.TrackState, newVersion func(repo, commit, why string), now time.Time) error {
	d := tr.Follow.Discover
	re, err := regexp.Compile(d.Pattern)
	if err != nil {
		return err // Validate already rejected this; keep the guard cheap
	}
	// A changed author or pattern (a reload) starts a new baseline: repos
	// that exist already and only now match are not releases. A state from
	// before DiscoverSpec was recorded keeps its baseline.
	spec := d.Author + "\x00" + d.Pattern
	if ts.DiscoverBaselined && ts.DiscoverSpec != "" && ts.DiscoverSpec != spec {
		ts.DiscoverBaselined = false
	}
	ts.DiscoverSpec = spec
	ids, err := hub.ListModels(ctx, d.Author)
	if err != nil {
		return err
	}
	for _, id := range ids {
		owner, name, ok := strings.Cut(id, "/")
		if !ok || owner != d.Author || !re.MatchString(name) || ts.Discovered[id] {
			continue
		}
		if _, known := ts.Heads[id]; known {
			ts.Discovered[id] = true
			continue
		}
		if !ts.DiscoverBaselined {
			ts.Discovered[id] = true
			continue
		}
		c, err := hub.Head(ctx, id, defaultRevision)
		if errors.Is(err, ErrNotFound) {
			continue // listed but not readable (yet): try next poll
		}
		if err != nil {
			return fmt.Errorf("%s: %w", id, err)
		}
		ts.Discovered[id] = true
		newVersion(id, c, "discovered")
	}
	ts.DiscoverBaselined = true
	return nil
}

// startOffset spreads tracks over time, stably: the same track name always
// gets the same offset, in [0, min(interval, maxStartOffset)).
func startOffset(name string, interval time.Duration) time.Duration {
	span := min(interval, maxStartOffset)
	if span <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	return time.Duration(h.Sum64() % uint64(span))
}

// maxStartOffset bounds startOffset so that a fresh daemon polls within a
// minute even with an hourly schedule.
const maxStartOffset = time.Minute

// trackLoop polls one track on its schedule until ctx is cancelled. The
// first poll happens after the track's start offset; later ones at the
// schedule's next activation plus the same offset.
func (d *Daemon) trackLoop(ctx context.Context, name string, sched cron.Schedule) {
	now := d.clock.Now()
	first := sched.Next(now)
	offset := startOffset(name, sched.Next(first).Sub(first))
	next := now.Add(offset)
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.clock.After(next.Sub(d.clock.Now())):
		}
		d.pollTrack(ctx, name)
		next = sched.Next(d.clock.Now()).Add(offset)
	}
}

func cloneHeads(m map[string]state.RepoHead) map[string]state.RepoHead {
	out := make(map[string]state.RepoHead, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func cloneSet(m map[string]bool) map[string]bool {
	out := make(map[string]bool, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
