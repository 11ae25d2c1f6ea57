package state

import (
	"fmt"
	"strings"
	"time"
)

// Status is a job's lifecycle state.
//
//	pending -> running -> done
//	                   -> failed (retry at NextAttempt) -> running ...
//	                   -> parked (gave up; needs a human)
//	pending, failed, running -> superseded (a newer commit of the same base
//	                            repo arrived first; its job migrates instead)
//
// A job found running at startup was interrupted and goes back to pending.
type Status string

const (
	Pending Status = "pending"
	Running Status = "running"
	Done    Status = "done"
	Failed  Status = "failed"
	Parked  Status = "parked"
	// Superseded jobs were overtaken by a newer version of the same repo;
	// pushing them would overwrite a newer migration with an older one.
	Superseded Status = "superseded"
)

// Statuses lists every status, in lifecycle order (for metrics and status).
var Statuses = []Status{Pending, Running, Failed, Parked, Done, Superseded}

// Terminal reports whether a job in this status will not run again by itself.
func (s Status) Terminal() bool { return s == Done || s == Parked || s == Superseded }

// JobKey identifies one migration: one adapter of one track to one new base
// version. The same key is never migrated twice.
type JobKey struct {
	Track string
	// Adapter is the adapter's stable id: "hub:owner/name@revision" or
	// "path:/abs/dir".
	Adapter    string
	BaseRepo   string
	BaseCommit string
}

func (k JobKey) bytes() []byte {
	return []byte(k.Track + "\x00" + k.Adapter + "\x00" + k.BaseRepo + "@" + k.BaseCommit)
}

func trackPrefix(track string) []byte { return []byte(track + "\x00") }

func parseJobKey(b []byte) (JobKey, error) {
	parts := strings.SplitN(string(b), "\x00", 3)
	if len(parts) != 3 {
		return JobKey{}, fmt.Errorf("state: malformed job key %q", b)
	}
	repo, commit, ok := strings.Cut(parts[2], "@")
	if !ok {
		return JobKey{}, fmt.Errorf("state: malformed job key %q", b)
	}
	return JobKey{Track: parts[0], Adapter: parts[1], BaseRepo: repo, BaseCommit: commit}, nil
}

// String is a short human form: "track: adapter -> repo@abcdef123456".
func (k JobKey) String() string {
	c := k.BaseCommit
	if len(c) > 12 {
		c = c[:12]
	}
	return fmt.Sprintf("%s: %s -> %s@%s", k.Track, k.Adapter, k.BaseRepo, c)
}

// Job is one migration and everything known about it.
type Job struct {
	Key    JobKey `json:"key"`
	Status Status `json:"status"`
	// Attempts counts finished attempts (failed or successful).
	Attempts  int    `json:"attempts"`
	LastError string `json:"last_error,omitempty"`
	// NextAttempt is when a failed job may run again.
	NextAttempt time.Time `json:"next_attempt,omitzero"`

	// OldBaseRepo/OldBaseCommit: the base the adapter was trained on.
	OldBaseRepo   string `json:"old_base_repo"`
	OldBaseCommit string `json:"old_base_commit"`
	// AdapterCommit is the adapter revision that was migrated: a Hub commit
	// or, for local adapters, "sha256:" of its files. Fixed at the first
	// attempt so that retries migrate the same thing.
	AdapterCommit string `json:"adapter_commit,omitempty"`

	OutputRepo     string `json:"output_repo,omitempty"`
	OutputRevision string `json:"output_revision,omitempty"`
	OutputCommit   string `json:"output_commit,omitempty"`
	PullRequest    string `json:"pull_request,omitempty"`
	// Reconciled is set when the output was found on the Hub (pushed by an
	// earlier attempt that crashed before recording) instead of pushed now.
	Reconciled bool `json:"reconciled,omitempty"`
	// Summary is the converter's one-line report.
	Summary string `json:"summary,omitempty"`

	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
}

// Runnable reports whether the job may start at now.
func (j *Job) Runnable(now time.Time) bool {
	return j.Status == Pending || (j.Status == Failed && !now.Before(j.NextAttempt))
}

// RepoHead is the last seen head of one watched repo.
type RepoHead struct {
	Commit string    `json:"commit"`
	Seen   time.Time `json:"seen"`
}

// Version is a new base version adapters migrate to.
type Version struct {
	Repo   string    `json:"repo"`
	Commit string    `json:"commit"`
	Found  time.Time `json:"found"`
	// Why says how it was found: "commit", "successor" or "discovered".
	Why string `json:"why"`
}

// TrackState is what the daemon knows about one track's base lineage.
type TrackState struct {
	Track string `json:"track"`
	// BaseRepo@BaselineCommit is what the adapters were trained on: the head
	// of base.revision when the track was first polled (or the pinned commit).
	BaseRepo       string `json:"base_repo"`
	BaseRevision   string `json:"base_revision"`
	BaselineCommit string `json:"baseline_commit"`
	// Heads maps every watched repo to its last seen head.
	Heads map[string]RepoHead `json:"heads"`
	// Versions are the new base versions found so far, oldest first.
	Versions []Version `json:"versions"`
	// Discovered holds repos matched by follow.discover (including the
	// baseline set found on the first discovery poll).
	Discovered map[string]bool `json:"discovered,omitempty"`
	// DiscoverBaselined is set after the first discovery poll.
	DiscoverBaselined bool `json:"discover_baselined,omitempty"`
	// DiscoverSpec is the follow.discover (author and pattern) the baseline
	// was taken with; another one takes a new baseline. Empty in states
	// written before it existed.
	DiscoverSpec string `json:"discover_spec,omitempty"`

	LastPoll      time.Time `json:"last_poll,omitzero"`
	LastPollOK    time.Time `json:"last_poll_ok,omitzero"`
	LastPollError string    `json:"last_poll_error,omitempty"`
}

// Latest returns, for each repo, its most recent version (in Versions
// order). New adapters migrate to these.
func (ts *TrackState) Latest() []Version {
	idx := map[string]int{}
	var out []Version
	for _, v := range ts.Versions {
		if i, ok := idx[v.Repo]; ok {
			out[i] = v
			continue
		}
		idx[v.Repo] = len(out)
		out = append(out, v)
	}
	return out
}
