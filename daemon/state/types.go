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
//	                            repo, or a newer revision of the adapter,
//	                            arrived first; its job migrates instead)
//	pending, failed <-> orphaned (its track or adapter is no longer
//	                            configured; back when it is again)
//
// A job found running at startup was interrupted and goes back to pending.
type Status string

const (
	Pending Status = "pending"
	Running Status = "running"
	Done    Status = "done"
	Failed  Status = "failed"
	Parked  Status = "parked"
	// Superseded jobs were overtaken by a newer job for the same target: a
	// newer commit of the same base repo, a newer revision of the adapter,
	// or a newer base repo whose migration goes to the same branch. Pushing
	// them would overwrite a newer migration with an older one.
	Superseded Status = "superseded"
	// Orphaned jobs were waiting when their track was removed from the
	// config or their adapter from the track. They never run; Job.Orphan
	// holds what they return to when the adapter is registered again.
	Orphaned Status = "orphaned"
)

// Statuses lists every status, in lifecycle order (for metrics and status).
var Statuses = []Status{Pending, Running, Failed, Parked, Done, Superseded, Orphaned}

// Terminal reports whether a job in this status will not run again by itself.
func (s Status) Terminal() bool { return s == Done || s == Parked || s == Superseded }

// JobKey identifies one migration: one revision of one adapter of one track
// to one new base version. The same key is never migrated twice.
type JobKey struct {
	Track string
	// Adapter is the adapter's stable id: "hub:owner/name@revision" or
	// "path:/abs/dir". It names the source, whatever its content.
	Adapter string
	// AdapterRev is the source revision the job migrates: a Hub commit, or
	// "sha256:..." of a local directory's files (see Job.AdapterCommit). It is
	// empty in keys written before schema 2 and when the revision could not
	// be resolved at planning; such a job pins the revision at its first
	// attempt.
	AdapterRev string `json:",omitempty"`
	BaseRepo   string
	BaseCommit string
}

// bytes is the database key: "track\x00adapter\x00repo@commit", then
// "\x00rev" when AdapterRev is set. Keys without a revision are byte for
// byte those of schema 1, so an upgraded database needs no rewriting.
func (k JobKey) bytes() []byte {
	b := k.Track + "\x00" + k.Adapter + "\x00" + k.BaseRepo + "@" + k.BaseCommit
	if k.AdapterRev != "" {
		b += "\x00" + k.AdapterRev
	}
	return []byte(b)
}

func trackPrefix(track string) []byte { return []byte(track + "\x00") }

func parseJobKey(b []byte) (JobKey, error) {
	parts := strings.Split(string(b), "\x00")
	if len(parts) != 3 && len(parts) != 4 {
		return JobKey{}, fmt.Errorf("state: malformed job key %q", b)
	}
	repo, commit, ok := strings.Cut(parts[2], "@")
	if !ok {
		return JobKey{}, fmt.Errorf("state: malformed job key %q", b)
	}
	k := JobKey{Track: parts[0], Adapter: parts[1], BaseRepo: repo, BaseCommit: commit}
	if len(parts) == 4 {
		if parts[3] == "" {
			return JobKey{}, fmt.Errorf("state: malformed job key %q", b)
		}
		k.AdapterRev = parts[3]
	}
	return k, nil
}

// String is a short human form: "track: adapter -> repo@abcdef123456", with
// the adapter's revision after the adapter when the key has one
// ("track: adapter (0123456789ab) -> repo@abcdef123456").
func (k JobKey) String() string {
	adapter := k.Adapter
	if k.AdapterRev != "" {
		adapter += " (" + shortRev(k.AdapterRev) + ")"
	}
	return fmt.Sprintf("%s: %s -> %s@%s", k.Track, adapter, k.BaseRepo, shortRev(k.BaseCommit))
}

// shortRev abbreviates a commit or a "sha256:" identity to 12 hex digits.
func shortRev(rev string) string {
	prefix, hex, ok := strings.Cut(rev, ":")
	if !ok {
		prefix, hex = "", rev
	} else {
		prefix += ":"
	}
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return prefix + hex
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
	// or, for local adapters, "sha256:" of its files. Key.AdapterRev when the
	// key has one; otherwise fixed at the first attempt (Hub) or hashed at
	// every attempt (local).
	AdapterCommit string `json:"adapter_commit,omitempty"`
	// AdapterContent is "sha256:" of the adapter files the converter read
	// (adapter_config.json, adapter_model.safetensors): a later revision
	// with the same content has nothing new to migrate.
	AdapterContent string `json:"adapter_content,omitempty"`

	OutputRepo     string `json:"output_repo,omitempty"`
	OutputRevision string `json:"output_revision,omitempty"`
	OutputCommit   string `json:"output_commit,omitempty"`
	PullRequest    string `json:"pull_request,omitempty"`
	// Reconciled is set when the output was found on the Hub (pushed by an
	// earlier attempt that crashed before recording) instead of pushed now.
	Reconciled bool `json:"reconciled,omitempty"`
	// Summary is the converter's one-line report.
	Summary string `json:"summary,omitempty"`

	// Orphan is set while the job is orphaned: what it was before.
	Orphan *Orphan `json:"orphan,omitempty"`

	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
}

// Orphan is what an orphaned job returns to when its track and adapter are
// configured again.
type Orphan struct {
	Status    Status `json:"status"`
	LastError string `json:"last_error,omitempty"`
}

// Runnable reports whether the job may start at now.
func (j *Job) Runnable(now time.Time) bool {
	return j.Status == Pending || (j.Status == Failed && !now.Before(j.NextAttempt))
}

// Waiting reports whether the job waits to run (pending, or failed and due
// for a retry later).
func (j *Job) Waiting() bool { return j.Status == Pending || j.Status == Failed }

// AdapterRevision is the adapter revision the job migrates: Key.AdapterRev,
// or for keys without one the revision pinned at the first attempt ("" before
// it).
func (j *Job) AdapterRevision() string {
	if j.Key.AdapterRev != "" {
		return j.Key.AdapterRev
	}
	return j.AdapterCommit
}

// Orphaned sets a waiting job aside (status Orphaned), remembering its
// status and error for Adopt; why becomes its LastError.
func (j *Job) Orphaned(why string, now time.Time) {
	j.Orphan = &Orphan{Status: j.Status, LastError: j.LastError}
	j.Status, j.LastError, j.Updated = Orphaned, why, now
}

// Adopt brings an orphaned job back to the status it had.
func (j *Job) Adopt(now time.Time) {
	if j.Orphan == nil { // written by hand: the safe default
		j.Orphan = &Orphan{Status: Pending}
	}
	j.Status, j.LastError, j.Orphan, j.Updated = j.Orphan.Status, j.Orphan.LastError, nil, now
}

// RepoHead is the last seen head of one watched repo.
type RepoHead struct {
	Commit string    `json:"commit"`
	Seen   time.Time `json:"seen"`
}

// AdapterHead is the last resolved revision of one adapter's source: a Hub
// commit, or "sha256:..." of a local directory's files.
type AdapterHead struct {
	Rev  string    `json:"rev"`
	Seen time.Time `json:"seen"`
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
	// Adapters maps each registered adapter's id to the latest revision of
	// its source the planner resolved (absent: not resolved yet).
	Adapters map[string]AdapterHead `json:"adapters,omitempty"`
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
