package state

import (
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// writeV1 writes a schema 1 database by hand, as lorasync before adapter
// revisions left it: one job per status under the old key layout.
func writeV1(t *testing.T, dir string, schema string, jobs map[string]string) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketTracks, bucketJobs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketMeta).Put(keySchema, []byte(schema)); err != nil {
			return err
		}
		for k, v := range jobs {
			if err := tx.Bucket(bucketJobs).Put([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A schema 1 database opens read-only as it is (status before the upgraded
// daemon ran), and Open upgrades it in place: every job keeps its key,
// status, attempts and output; the keys carry no adapter revision.
func TestSchema1Upgrade(t *testing.T) {
	dir := t.TempDir()
	v1 := map[string]string{
		"t\x00hub:acme/a@main\x00org/base@c1":  `{"key":{"Track":"t","Adapter":"hub:acme/a@main","BaseRepo":"org/base","BaseCommit":"c1"},"status":"done","attempts":1,"adapter_commit":"a1","output_commit":"out1"}`,
		"t\x00hub:acme/b@main\x00org/base@c1":  `{"key":{"Track":"t","Adapter":"hub:acme/b@main","BaseRepo":"org/base","BaseCommit":"c1"},"status":"parked","attempts":3,"last_error":"broken"}`,
		"t\x00path:/srv/ad/x\x00org/base@c1":   `{"key":{"Track":"t","Adapter":"path:/srv/ad/x","BaseRepo":"org/base","BaseCommit":"c1"},"status":"failed","attempts":1}`,
		"u\x00hub:acme/a@main\x00org/other@c2": `{"key":{"Track":"u","Adapter":"hub:acme/a@main","BaseRepo":"org/other","BaseCommit":"c2"},"status":"pending"}`,
	}
	writeV1(t, dir, "1", v1)

	ro, err := OpenReadOnly(dir, Options{})
	if err != nil {
		t.Fatalf("read-only open of a schema 1 database: %v", err)
	}
	snap, err := ro.Snapshot()
	if err != nil || len(snap.Jobs) != 4 {
		t.Fatalf("schema 1 snapshot: %d jobs, %v", len(snap.Jobs), err)
	}

	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.View(func(tx *Tx) error {
		if v := string(tx.tx.Bucket(bucketMeta).Get(keySchema)); v != "2" {
			t.Errorf("schema after Open = %q, want 2", v)
		}
		want := map[string]Status{"hub:acme/a@main": Done, "hub:acme/b@main": Parked, "path:/srv/ad/x": Failed}
		jobs, err := tx.Jobs("t")
		if err != nil {
			return err
		}
		for _, j := range jobs {
			if j.Key.AdapterRev != "" || j.Status != want[j.Key.Adapter] {
				t.Errorf("upgraded job %+v", j)
			}
			// Looked up by the key the daemon builds (no revision): found.
			if got, ok, err := tx.Job(j.Key); err != nil || !ok || got.Status != j.Status {
				t.Errorf("Job(%s) = %+v, %v, %v", j.Key, got, ok, err)
			}
		}
		if len(jobs) != 3 {
			t.Errorf("track t: %d jobs, want 3", len(jobs))
		}
		done, _, _ := tx.Job(JobKey{Track: "t", Adapter: "hub:acme/a@main", BaseRepo: "org/base", BaseCommit: "c1"})
		if done.AdapterRevision() != "a1" || done.OutputCommit != "out1" || done.Attempts != 1 {
			t.Errorf("done job lost its history: %+v", done)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A job with a revision lives beside the one without.
	k := JobKey{Track: "t", Adapter: "hub:acme/a@main", AdapterRev: "a2", BaseRepo: "org/base", BaseCommit: "c1"}
	if err := s.Update(func(tx *Tx) error { return tx.PutJob(Job{Key: k, Status: Pending}) }); err != nil {
		t.Fatal(err)
	}
	s.View(func(tx *Tx) error {
		jobs, _ := tx.Jobs("t")
		if len(jobs) != 4 {
			t.Errorf("after adding a revision's job: %d jobs, want 4", len(jobs))
		}
		return nil
	})
}

func TestNewerSchemaRefused(t *testing.T) {
	for _, v := range []string{"3", "0", "x"} {
		dir := t.TempDir()
		writeV1(t, dir, v, nil)
		if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "schema version") {
			t.Errorf("Open with schema %q: %v", v, err)
		}
		if _, err := OpenReadOnly(dir, Options{}); err == nil {
			t.Errorf("OpenReadOnly with schema %q: no error", v)
		}
	}
}

func TestParseJobKeyWithRevision(t *testing.T) {
	for _, k := range []JobKey{
		{Track: "t", Adapter: "hub:a/b@main", AdapterRev: "0123456789abcdef0123456789abcdef01234567", BaseRepo: "org/m", BaseCommit: "abc"},
		{Track: "t", Adapter: "path:/x/y", AdapterRev: "sha256:00ff", BaseRepo: "org/m", BaseCommit: "abc"},
		{Track: "t", Adapter: "path:/x/y", BaseRepo: "org/m", BaseCommit: "abc"},
	} {
		got, err := parseJobKey(k.bytes())
		if err != nil || got != k {
			t.Errorf("parseJobKey(%q) = %+v, %v", k.bytes(), got, err)
		}
	}
	for _, bad := range []string{"t\x00a\x00r@c\x00", "t\x00a\x00r@c\x00x\x00y", "t\x00a\x00rc"} {
		if _, err := parseJobKey([]byte(bad)); err == nil {
			t.Errorf("parseJobKey(%q): no error", bad)
		}
	}
	k := JobKey{Track: "t", Adapter: "path:/x", AdapterRev: "sha256:00112233445566778899", BaseRepo: "org/m", BaseCommit: "0123456789abcdef"}
	if got, want := k.String(), "t: path:/x (sha256:001122334455) -> org/m@0123456789ab"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}

// Orphaned remembers the status and error; Adopt restores them.
func TestOrphanAndAdopt(t *testing.T) {
	j := Job{Key: key(1), Status: Failed, Attempts: 2, LastError: "503", NextAttempt: t0}
	j.Orphaned("adapter removed", t0)
	if j.Status != Orphaned || j.LastError != "adapter removed" || j.Runnable(t0.Add(1e12)) || j.Waiting() {
		t.Fatalf("orphaned: %+v", j)
	}
	j.Adopt(t0)
	if j.Status != Failed || j.LastError != "503" || j.Orphan != nil || j.Attempts != 2 || !j.Runnable(t0) {
		t.Fatalf("adopted: %+v", j)
	}
}
