package daemon

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lorasync/lorasync/daemon/state"
)

// Hand-worked plans for one adapter and one new base commit c1.
func TestPlanTrackAdapterRevisions(t *testing.T) {
	a := Adapter{ID: "hub:acme/a@main", Repo: "acme/a", Revision: "main"}
	ts := func(rev string) state.TrackState {
		s := state.TrackState{Track: "t", BaseRepo: "org/base", BaseRevision: "main", BaselineCommit: "c0",
			Versions: []state.Version{{Repo: "org/base", Commit: "c1"}}}
		if rev != "" {
			s.Adapters = map[string]state.AdapterHead{a.ID: {Rev: rev}}
		}
		return s
	}
	job := func(rev, pinned string, s state.Status) state.Job {
		return state.Job{Key: state.JobKey{Track: "t", Adapter: a.ID, AdapterRev: rev, BaseRepo: "org/base", BaseCommit: "c1"}, Status: s, AdapterCommit: pinned}
	}
	cases := []struct {
		name    string
		rev     string // the adapter's current revision ("" unknown)
		jobs    []state.Job
		created string // AdapterRev of the created job, "-" for none
		changed map[string]state.Status
	}{
		{"first job, revision known", "r1", nil, "r1", nil},
		{"first job, revision unknown: pinned when it runs", "", nil, "", nil},
		{"unknown revision, any job counts", "", []state.Job{job("r1", "r1", state.Done)}, "-", nil},
		{"same revision done", "r1", []state.Job{job("r1", "r1", state.Done)}, "-", nil},
		{"legacy key pinned to the same commit", "r1", []state.Job{job("", "r1", state.Done)}, "-", nil},
		{"legacy key not pinned yet", "r2", []state.Job{job("", "", state.Pending)}, "-", nil},
		{"legacy key parked before pinning: needs a human", "r2", []state.Job{job("", "", state.Parked)}, "-", nil},
		{"new revision after done", "r2", []state.Job{job("r1", "r1", state.Done)}, "r2", nil},
		{"new revision after parked", "r2", []state.Job{job("r1", "r1", state.Parked)}, "r2", map[string]state.Status{}},
		{"new revision supersedes a waiting one", "r2", []state.Job{job("r1", "r1", state.Failed)}, "r2", map[string]state.Status{"r1": state.Superseded}},
		{"legacy pinned waiting job superseded", "r2", []state.Job{job("", "r1", state.Pending)}, "r2", map[string]state.Status{"": state.Superseded}},
		{"running job left to the pre-push check", "r2", []state.Job{job("r1", "r1", state.Running)}, "r2", nil},
		{"back to a superseded revision: planned again", "r1",
			[]state.Job{job("r1", "r1", state.Superseded), job("r2", "r2", state.Done)}, "-", map[string]state.Status{"r1": state.Pending}},
		{"back to a revision done before another: planned again", "r1",
			[]state.Job{job("r1", "r1", state.Done), job("r2", "r2", state.Done)}, "-", map[string]state.Status{"r1": state.Pending}},
		{"the revision done last: nothing", "r2",
			[]state.Job{job("r1", "r1", state.Done), job("r2", "r2", state.Done)}, "-", nil},
		{"back to a revision whose job waits: nothing", "r1",
			[]state.Job{job("r1", "r1", state.Failed), job("r2", "r2", state.Done)}, "-", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for i := range c.jobs { // finished in list order
				c.jobs[i].Finished = t0.Add(time.Duration(i) * time.Minute)
			}
			p := planTrack(ts(c.rev), []Adapter{a}, true, c.jobs, targetPerBase, t0)
			switch {
			case c.created == "-" && len(p.Created) != 0:
				t.Errorf("created %+v, want none", p.Created)
			case c.created != "-" && (len(p.Created) != 1 || p.Created[0].Key.AdapterRev != c.created || p.Created[0].OldBaseCommit != "c0"):
				t.Errorf("created %+v, want one job for revision %q", p.Created, c.created)
			}
			if len(p.Changed) != len(c.changed) {
				t.Fatalf("changed %+v, want %v", p.Changed, c.changed)
			}
			for _, j := range p.Changed {
				if want := c.changed[j.Key.AdapterRev]; j.Status != want {
					t.Errorf("job %s became %s, want %s", j.Key, j.Status, want)
				}
			}
		})
	}
}

// Orphaning follows the registered adapters, but not when a drop-in dir
// could not be read (its adapters are missing from the list, not removed).
func TestPlanTrackOrphans(t *testing.T) {
	a := Adapter{ID: "hub:acme/a@main"}
	gone := state.Job{Key: state.JobKey{Track: "t", Adapter: "path:/srv/dropin/x", BaseRepo: "org/base", BaseCommit: "c1"}, Status: state.Failed, LastError: "503"}
	ts := state.TrackState{Track: "t"}
	p := planTrack(ts, []Adapter{a}, true, []state.Job{gone}, targetPerBase, t0)
	if len(p.Changed) != 1 || p.Changed[0].Status != state.Orphaned || p.Changed[0].Orphan.Status != state.Failed {
		t.Fatalf("complete scan: %+v", p.Changed)
	}
	if p := planTrack(ts, []Adapter{a}, false, []state.Job{gone}, targetPerBase, t0); len(p.Changed) != 0 {
		t.Errorf("incomplete scan orphaned %+v", p.Changed)
	}
	back := planTrack(ts, []Adapter{a, {ID: gone.Key.Adapter, Path: "/srv/dropin/x"}}, false, p.Changed, targetPerBase, t0)
	if len(back.Changed) != 1 || back.Changed[0].Status != state.Failed || back.Changed[0].LastError != "503" {
		t.Errorf("adopted: %+v", back.Changed)
	}
	// Other statuses are left alone: a parked job needs a human anyway, a
	// running one finishes, and finished ones are history.
	for _, s := range []state.Status{state.Parked, state.Running, state.Done, state.Superseded} {
		j := gone
		j.Status = s
		if p := planTrack(ts, []Adapter{a}, true, []state.Job{j}, targetPerBase, t0); len(p.Changed) != 0 {
			t.Errorf("%s job changed: %+v", s, p.Changed)
		}
	}
	if got := orphanUnconfigured([]state.Job{gone}, map[string]bool{"u": true}, t0); len(got) != 1 || !strings.Contains(got[0].LastError, "track t") {
		t.Errorf("removed track: %+v", got)
	}
	if got := orphanUnconfigured([]state.Job{gone}, map[string]bool{"t": true}, t0); len(got) != 0 {
		t.Errorf("configured track orphaned: %+v", got)
	}
}

// targetPerBase gives every adapter and base repo a target of its own.
func targetPerBase(a Adapter, baseRepo string) string { return a.ID + " -> " + baseRepo }

// Hand-worked plans for one adapter (at revision r1) and successor repos
// whose migrations may share a target: only the newest base repo of a
// target is migrated, newest by generation (the track's base first, then
// repos in the order their first version was found).
func TestPlanTrackSharedTarget(t *testing.T) {
	a := Adapter{ID: "hub:acme/a@main", Repo: "acme/a", Revision: "main"}
	shared := func(Adapter, string) string { return "acme/a-latest@main" }
	pullRequests := func(Adapter, string) string { return "" }
	v := func(repo, commit string) state.Version { return state.Version{Repo: repo, Commit: commit} }
	job := func(repo, commit string, s state.Status) state.Job {
		return state.Job{Key: state.JobKey{Track: "t", Adapter: a.ID, AdapterRev: "r1", BaseRepo: repo, BaseCommit: commit}, Status: s}
	}
	two := []state.Version{v("org/base-2", "c2"), v("org/base-3", "c3")}
	cases := []struct {
		name     string
		versions []state.Version
		targets  targetOf
		jobs     []state.Job
		created  []string                // base repos, in plan order
		changed  map[string]state.Status // by base repo@commit
		by       string                  // the superseding version named in the reason
	}{
		{"shared target: the newest base only, the other one recorded superseded", two, shared, nil, []string{"org/base-3"},
			map[string]state.Status{"org/base-2@c2": state.Superseded}, "org/base-3@c3"},
		{"a target per base: every base", two, targetPerBase, nil, []string{"org/base-2", "org/base-3"}, nil, ""},
		{"pull requests: every base", two, pullRequests, nil, []string{"org/base-2", "org/base-3"}, nil, ""},
		{"found order decides, not names", []state.Version{v("org/base-3", "c3"), v("org/base-2", "c2")}, shared, nil,
			[]string{"org/base-2"}, map[string]state.Status{"org/base-3@c3": state.Superseded}, "org/base-2@c2"},
		{"the track's own base is the oldest, whenever its commit came",
			[]state.Version{v("org/base", "c1"), v("org/base-2", "c2"), v("org/base", "c5")}, shared,
			[]state.Job{job("org/base", "c5", state.Pending)}, []string{"org/base-2"},
			map[string]state.Status{"org/base@c5": state.Superseded}, "org/base-2@c2"},
		{"a new commit of an older successor stays older",
			[]state.Version{v("org/base-2", "c2"), v("org/base-3", "c3"), v("org/base-2", "c4")}, shared,
			[]state.Job{job("org/base-2", "c2", state.Failed), job("org/base-2", "c4", state.Pending), job("org/base-3", "c3", state.Done)}, nil,
			map[string]state.Status{"org/base-2@c2": state.Superseded, "org/base-2@c4": state.Superseded}, ""},
		{"a waiting older job is superseded", two, shared,
			[]state.Job{job("org/base-2", "c2", state.Failed)}, []string{"org/base-3"},
			map[string]state.Status{"org/base-2@c2": state.Superseded}, "org/base-3@c3"},
		{"whatever became of the newer job", two, shared,
			[]state.Job{job("org/base-2", "c2", state.Pending), job("org/base-3", "c3", state.Parked)}, nil,
			map[string]state.Status{"org/base-2@c2": state.Superseded}, "org/base-3@c3"},
		{"a running older job is left to the pre-push check", two, shared,
			[]state.Job{job("org/base-2", "c2", state.Running)}, []string{"org/base-3"}, nil, ""},
		{"a done older job is history", two, shared,
			[]state.Job{job("org/base-2", "c2", state.Done)}, []string{"org/base-3"}, nil, ""},
		{"a superseded older job is not planned again", two, shared,
			[]state.Job{job("org/base-2", "c2", state.Superseded), job("org/base-3", "c3", state.Done)}, nil, nil, ""},
		{"a target per base again: the superseded job is planned again", two, targetPerBase,
			[]state.Job{job("org/base-2", "c2", state.Superseded), job("org/base-3", "c3", state.Done)}, nil,
			map[string]state.Status{"org/base-2@c2": state.Pending}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ts := state.TrackState{Track: "t", BaseRepo: "org/base", BaseRevision: "main", BaselineCommit: "c0",
				Versions: c.versions, Adapters: map[string]state.AdapterHead{a.ID: {Rev: "r1"}}}
			p := planTrack(ts, []Adapter{a}, true, c.jobs, c.targets, t0)
			var created []string
			for _, j := range p.Created {
				created = append(created, j.Key.BaseRepo)
			}
			if !slices.Equal(created, c.created) {
				t.Errorf("created jobs for %v, want %v", created, c.created)
			}
			if len(p.Changed) != len(c.changed) {
				t.Fatalf("changed %+v, want %v", p.Changed, c.changed)
			}
			for _, j := range p.Changed {
				at := j.Key.BaseRepo + "@" + j.Key.BaseCommit
				if want := c.changed[at]; j.Status != want {
					t.Errorf("job %s became %s, want %s", at, j.Status, want)
				}
				if c.by != "" && j.Status == state.Superseded &&
					(!strings.Contains(j.LastError, "superseded by "+c.by) || !strings.Contains(j.LastError, "same target acme/a-latest@main")) {
					t.Errorf("job %s: reason %q does not name %s and the target", at, j.LastError, c.by)
				}
			}
		})
	}
}
