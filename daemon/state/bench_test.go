package state

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkUpdate measures one job write including the per-transaction
// open, flock, mmap, fsync and close that let `lorasync status` read while
// the daemon runs. The daemon makes a handful of writes per job, so this
// bounds the bookkeeping cost of a migration that takes seconds to hours.
func BenchmarkUpdate(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		j := Job{Key: JobKey{Track: "t", Adapter: fmt.Sprintf("hub:a/b%d@main", i%100), BaseRepo: "o/m", BaseCommit: "c"}, Status: Pending, Created: time.Unix(int64(i), 0)}
		if err := s.Update(func(tx *Tx) error { return tx.PutJob(j) }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSnapshot1000 is `lorasync status` on a database of 1000 jobs.
func BenchmarkSnapshot1000(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	s.Update(func(tx *Tx) error {
		for i := range 1000 {
			tx.PutJob(Job{Key: JobKey{Track: "t", Adapter: fmt.Sprintf("hub:a/b%d@main", i), BaseRepo: "o/m", BaseCommit: "c"}, Status: Done})
		}
		return nil
	})
	for b.Loop() {
		if _, err := s.Snapshot(); err != nil {
			b.Fatal(err)
		}
	}
}
