package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)

func key(i int) JobKey {
	return JobKey{Track: "qwen", Adapter: fmt.Sprintf("hub:acme/a%d@main", i), BaseRepo: "Qwen/Qwen2.5-3B", BaseCommit: "c0ffee" + fmt.Sprint(i)}
}

func TestJobRoundTripAndPrefix(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := Job{Key: key(1), Status: Failed, Attempts: 2, LastError: "hub: 503", NextAttempt: t0.Add(time.Minute), Created: t0, Updated: t0}
	other := Job{Key: JobKey{Track: "qwen2", Adapter: "path:/x", BaseRepo: "a/b", BaseCommit: "1"}, Status: Pending, Created: t0}
	if err := s.Update(func(tx *Tx) error {
		if err := tx.PutJob(want); err != nil {
			return err
		}
		return tx.PutJob(other)
	}); err != nil {
		t.Fatal(err)
	}
	err = s.View(func(tx *Tx) error {
		got, ok, err := tx.Job(key(1))
		if err != nil || !ok {
			return fmt.Errorf("Job: ok=%v err=%v", ok, err)
		}
		if got.Key != want.Key || got.Status != want.Status || got.Attempts != 2 || !got.NextAttempt.Equal(want.NextAttempt) {
			t.Errorf("round trip: got %+v, want %+v", got, want)
		}
		// "qwen" must not match "qwen2": the prefix ends with a separator.
		jobs, err := tx.Jobs("qwen")
		if err != nil {
			return err
		}
		if len(jobs) != 1 || jobs[0].Key != want.Key {
			t.Errorf("Jobs(qwen) = %+v", jobs)
		}
		all, _ := tx.Jobs("")
		if len(all) != 2 {
			t.Errorf("Jobs(\"\") = %d jobs, want 2", len(all))
		}
		_, ok, _ = tx.Job(key(2))
		if ok {
			t.Error("Job(absent) ok = true")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestParseJobKeyRoundTrip(t *testing.T) {
	k := JobKey{Track: "t", Adapter: "hub:a/b@v1", BaseRepo: "org/m", BaseCommit: "abc"}
	got, err := parseJobKey(k.bytes())
	if err != nil || got != k {
		t.Errorf("parseJobKey = %+v, %v", got, err)
	}
	if _, err := parseJobKey([]byte("no-separators")); err == nil {
		t.Error("want an error for a malformed key")
	}
}

func TestUpdateIsAtomic(t *testing.T) {
	s, _ := Open(t.TempDir(), Options{})
	boom := errors.New("boom")
	err := s.Update(func(tx *Tx) error {
		if err := tx.PutJob(Job{Key: key(1), Status: Pending}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want boom", err)
	}
	s.View(func(tx *Tx) error {
		if _, ok, _ := tx.Job(key(1)); ok {
			t.Error("a failed Update left its write behind")
		}
		return nil
	})
}

func TestReadOnlyNeverCreates(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenReadOnly(dir, Options{}); !errors.Is(err, ErrNoState) {
		t.Fatalf("OpenReadOnly(empty) = %v, want ErrNoState", err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("read-only open created the file: %v", err)
	}
	if _, err := Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	ro, err := OpenReadOnly(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ro.Update(func(*Tx) error { return nil }); err == nil {
		t.Error("Update on a read-only store succeeded")
	}
}

// A reader (lorasync status) and a writer (the daemon) share the file: the
// writer keeps writing while the reader takes snapshots, and both succeed.
// flock locks belong to the open file description, so two handles in one
// process conflict exactly like two processes do.
func TestStatusReadsWhileDaemonWrites(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := OpenReadOnly(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const writes = 100
	werr := make(chan error, 1)
	go func() {
		for i := range writes {
			if err := w.Update(func(tx *Tx) error {
				return tx.PutJob(Job{Key: key(i), Status: Pending, Created: t0.Add(time.Duration(i))})
			}); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	last, writerDone := 0, false
	for !writerDone || last < writes {
		select {
		case err := <-werr:
			if err != nil {
				t.Fatalf("writer: %v", err)
			}
			writerDone = true
		default:
		}
		snap, err := r.Snapshot()
		if err != nil {
			t.Fatalf("Snapshot while writing: %v", err)
		}
		if len(snap.Jobs) < last {
			t.Fatalf("snapshot went backwards: %d < %d jobs", len(snap.Jobs), last)
		}
		last = len(snap.Jobs)
	}
	if last != writes {
		t.Errorf("reader saw %d jobs, want %d", last, writes)
	}
}

// A process holding the file open (an old-style writer) makes our opens
// fail with ErrLocked after the timeout rather than hang.
func TestLockedTimesOut(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	holder, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = OpenReadOnly(dir, Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Errorf("OpenReadOnly under a held lock = %v, want ErrLocked", err)
	}
	holder.Close()
	if _, err := OpenReadOnly(dir, Options{LockTimeout: 50 * time.Millisecond}); err != nil {
		t.Errorf("after release: %v", err)
	}
}

func TestRecoverInterrupted(t *testing.T) {
	s, _ := Open(t.TempDir(), Options{})
	s.Update(func(tx *Tx) error {
		tx.PutJob(Job{Key: key(1), Status: Running, Attempts: 1})
		tx.PutJob(Job{Key: key(2), Status: Done, Attempts: 1})
		return tx.PutJob(Job{Key: key(3), Status: Failed, Attempts: 2})
	})
	got, err := s.RecoverInterrupted(t0, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Key != key(1) {
		t.Fatalf("recovered %+v, want only job 1", got)
	}
	snap, _ := s.Snapshot()
	want := map[Status]int{Pending: 1, Running: 0, Done: 1, Failed: 1, Parked: 0}
	for st, n := range want {
		if snap.Counts[st] != n {
			t.Errorf("count[%s] = %d, want %d", st, snap.Counts[st], n)
		}
	}
	for _, j := range snap.Jobs {
		if j.Key == key(1) && (j.Attempts != 2 || j.LastError == "") {
			t.Errorf("recovered job: want the dead process's attempt counted (1 -> 2) and a reason: %+v", j)
		}
	}
}

func TestTrackStateAndLatest(t *testing.T) {
	s, _ := Open(t.TempDir(), Options{})
	ts := TrackState{Track: "qwen", BaseRepo: "Q/a", BaselineCommit: "c0",
		Heads: map[string]RepoHead{"Q/a": {Commit: "c2", Seen: t0}},
		Versions: []Version{
			{Repo: "Q/a", Commit: "c1", Why: "commit"},
			{Repo: "Q/b", Commit: "d1", Why: "successor"},
			{Repo: "Q/a", Commit: "c2", Why: "commit"},
		}}
	if err := s.Update(func(tx *Tx) error { return tx.PutTrack(ts) }); err != nil {
		t.Fatal(err)
	}
	var got TrackState
	s.View(func(tx *Tx) error {
		var ok bool
		got, ok, _ = tx.Track("qwen")
		if !ok {
			t.Error("track not found")
		}
		if _, ok, _ := tx.Track("nope"); ok {
			t.Error("absent track found")
		}
		return nil
	})
	latest := got.Latest()
	if len(latest) != 2 || latest[0].Repo != "Q/a" || latest[0].Commit != "c2" || latest[1].Commit != "d1" {
		t.Errorf("Latest = %+v, want [Q/a@c2 Q/b@d1]", latest)
	}
}

func TestRunnable(t *testing.T) {
	cases := []struct {
		j    Job
		want bool
	}{
		{Job{Status: Pending}, true},
		{Job{Status: Failed, NextAttempt: t0}, true},
		{Job{Status: Failed, NextAttempt: t0.Add(time.Second)}, false},
		{Job{Status: Running}, false},
		{Job{Status: Done}, false},
		{Job{Status: Parked}, false},
	}
	for _, c := range cases {
		if got := c.j.Runnable(t0); got != c.want {
			t.Errorf("%s (next %v): Runnable = %v, want %v", c.j.Status, c.j.NextAttempt, got, c.want)
		}
	}
}

func TestOwnerIsExclusive(t *testing.T) {
	dir := t.TempDir()
	o, err := AcquireOwner(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := AcquireOwner(dir); !errors.Is(err, ErrOwned) {
		t.Fatalf("second owner: %v, want ErrOwned", err)
	}
	// Readers are not blocked by ownership.
	if _, err := Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenReadOnly(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	o.Release()
	o2, err := AcquireOwner(dir)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	o2.Release()
}

func TestRequeue(t *testing.T) {
	s, _ := Open(t.TempDir(), Options{})
	s.Update(func(tx *Tx) error {
		tx.PutJob(Job{Key: key(1), Status: Parked, Attempts: 5, LastError: "401 unauthorized", Finished: t0})
		tx.PutJob(Job{Key: key(2), Status: Failed, Attempts: 2, NextAttempt: t0.Add(time.Hour)})
		tx.PutJob(Job{Key: key(3), Status: Done, Attempts: 1})
		return tx.PutJob(Job{Key: key(4), Status: Parked, Attempts: 5})
	})
	got, err := s.Requeue(func(j Job) bool { return j.Key != key(4) }, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("requeued %d jobs, want 2 (parked 1 and failed 2)", len(got))
	}
	s.View(func(tx *Tx) error {
		for i, want := range map[int]Status{1: Pending, 2: Pending, 3: Done, 4: Parked} {
			j, _, _ := tx.Job(key(i))
			if j.Status != want {
				t.Errorf("job %d: %s, want %s", i, j.Status, want)
			}
			if want == Pending && (j.Attempts != 0 || !j.Runnable(t0)) {
				t.Errorf("job %d not runnable with a fresh budget: %+v", i, j)
			}
		}
		j, _, _ := tx.Job(key(1))
		if !strings.Contains(j.LastError, "401 unauthorized") {
			t.Errorf("the previous error was lost: %q", j.LastError)
		}
		return nil
	})
}

func TestEmptyStore(t *testing.T) {
	s := Empty()
	snap, err := s.Snapshot()
	if err != nil || len(snap.Jobs) != 0 || len(snap.Tracks) != 0 {
		t.Fatalf("Empty snapshot: %+v, %v", snap, err)
	}
	s.View(func(tx *Tx) error {
		if _, ok, err := tx.Track("x"); ok || err != nil {
			t.Errorf("Track on Empty: ok %v err %v", ok, err)
		}
		if _, ok, err := tx.Job(key(1)); ok || err != nil {
			t.Errorf("Job on Empty: ok %v err %v", ok, err)
		}
		return nil
	})
	if err := s.Update(func(*Tx) error { return nil }); err == nil {
		t.Error("Update on Empty succeeded")
	}
}

// A job the dead process was running for the last allowed attempt is parked,
// with the reason, not resumed.
func TestRecoverInterruptedParksAtMaxAttempts(t *testing.T) {
	s, _ := Open(t.TempDir(), Options{})
	s.Update(func(tx *Tx) error { return tx.PutJob(Job{Key: key(1), Status: Running, Attempts: 2}) })
	got, err := s.RecoverInterrupted(t0, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Status != Parked || got[0].Attempts != 3 || !strings.Contains(got[0].LastError, "died") || !got[0].Finished.Equal(t0) {
		t.Fatalf("recovered %+v, want job 1 parked after 3 attempts", got)
	}
}
