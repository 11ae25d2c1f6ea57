package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// FileName is the database file inside the state directory.
const FileName = "state.db"

// schemaVersion is stored in the meta bucket; a database written by a newer
// lorasync is refused rather than misread.
//
//   - 1: job keys "track\x00adapter\x00repo@commit".
//   - 2: job keys may end in "\x00adapter-revision" (JobKey.AdapterRev), and
//     jobs may be orphaned. A schema 1 key is a valid schema 2 key without a
//     revision, so upgrading only rewrites the version: every job keeps its
//     key, status and history. lorasync before schema 2 refuses the upgraded
//     file (it would misread the new keys).
const schemaVersion = 2

// oldestReadable is the oldest schema this lorasync reads (and Open
// upgrades).
const oldestReadable = 1

var (
	bucketMeta   = []byte("meta")
	bucketTracks = []byte("tracks")
	bucketJobs   = []byte("jobs")
	keySchema    = []byte("schema")
)

// ErrNoState is returned by OpenReadOnly when the database does not exist
// yet (the daemon never ran with this state_dir).
var ErrNoState = errors.New("state: no database yet")

// ErrLocked is returned when the other process held the database for longer
// than Options.LockTimeout.
var ErrLocked = errors.New("state: database is locked by another process")

// Options tune a Store.
type Options struct {
	// LockTimeout bounds the wait for the file lock on each transaction.
	// Zero means 5 s.
	LockTimeout time.Duration
}

// Store is the state database. It is safe for concurrent use; transactions
// from one process are serialised, and the file is open only during a
// transaction (see the package doc).
type Store struct {
	path     string
	readOnly bool
	empty    bool // Empty: no file at all
	timeout  time.Duration
	mu       sync.Mutex
}

// Empty returns a read-only Store with nothing in it and no file behind
// it: the state of a daemon that never ran, for dry runs before the first
// real one (so that they write nothing, anywhere).
func Empty() *Store { return &Store{readOnly: true, empty: true} }

// Open opens (creating if needed) the database in dir for reading and
// writing, checks its schema and upgrades an older one (see schemaVersion).
func Open(dir string, opts Options) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	s := &Store{path: filepath.Join(dir, FileName), timeout: opts.timeout()}
	err := s.Update(func(tx *Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketTracks, bucketJobs} {
			if _, err := tx.tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); v != nil {
			if err := checkSchema(v, s.path); err != nil {
				return err
			}
		}
		return meta.Put(keySchema, []byte(strconv.Itoa(schemaVersion)))
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// OpenReadOnly opens an existing database for View only. It never creates
// or modifies the file, and can run while a daemon uses the same file.
func OpenReadOnly(dir string, opts Options) (*Store, error) {
	s := &Store{path: filepath.Join(dir, FileName), readOnly: true, timeout: opts.timeout()}
	if _, err := os.Stat(s.path); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s (has the daemon run with this state_dir?)", ErrNoState, s.path)
	} else if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	err := s.View(func(tx *Tx) error {
		meta := tx.tx.Bucket(bucketMeta)
		if meta == nil {
			return fmt.Errorf("state %s: not initialised", s.path)
		}
		return checkSchema(meta.Get(keySchema), s.path)
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// checkSchema accepts the schemas this lorasync reads: oldestReadable up to
// schemaVersion.
func checkSchema(v []byte, path string) error {
	n, err := strconv.Atoi(string(v))
	if err != nil || n < oldestReadable || n > schemaVersion {
		return fmt.Errorf("state %s: schema version %q, this lorasync understands %d to %d", path, v, oldestReadable, schemaVersion)
	}
	return nil
}

func (o Options) timeout() time.Duration {
	if o.LockTimeout <= 0 {
		return 5 * time.Second
	}
	return o.LockTimeout
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

func (s *Store) open() (*bolt.DB, error) {
	db, err := bolt.Open(s.path, 0o600, &bolt.Options{Timeout: s.timeout, ReadOnly: s.readOnly})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (waited %s)", ErrLocked, s.path, s.timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("state: open %s: %w", s.path, err)
	}
	return db, nil
}

// Update runs fn in one read-write transaction: all of fn's changes commit
// together, or none do if fn returns an error.
func (s *Store) Update(fn func(*Tx) error) error {
	if s.readOnly {
		return fmt.Errorf("state %s: opened read-only", s.path)
	}
	return s.withDB(func(db *bolt.DB) error {
		return db.Update(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx}) })
	})
}

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(*Tx) error) error {
	if s.empty {
		return fn(&Tx{})
	}
	return s.withDB(func(db *bolt.DB) error {
		return db.View(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx}) })
	})
}

// withDB opens the database, runs fn and closes it again: the file is held
// only for one transaction at a time, so other processes (status) can open
// it in between.
func (s *Store) withDB(fn func(*bolt.DB) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	db, err := s.open()
	if err != nil {
		return err
	}
	err = fn(db)
	if cerr := db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("state: close %s: %w", s.path, cerr)
	}
	return err
}

// Tx is one transaction. It must not be used after Update/View returns.
// The Tx of an Empty store reads as empty.
type Tx struct{ tx *bolt.Tx }

// Track returns a track's state; ok is false when the track was never polled.
func (t *Tx) Track(name string) (ts TrackState, ok bool, err error) {
	if t.tx == nil {
		return TrackState{Track: name}, false, nil
	}
	v := t.tx.Bucket(bucketTracks).Get([]byte(name))
	if v == nil {
		return TrackState{Track: name}, false, nil
	}
	if err := json.Unmarshal(v, &ts); err != nil {
		return ts, false, fmt.Errorf("state: track %q: %w", name, err)
	}
	return ts, true, nil
}

// PutTrack stores a track's state.
func (t *Tx) PutTrack(ts TrackState) error {
	if ts.Track == "" {
		return errors.New("state: PutTrack without a track name")
	}
	return putJSON(t.tx.Bucket(bucketTracks), []byte(ts.Track), ts)
}

// Tracks returns every track's state, sorted by name.
func (t *Tx) Tracks() ([]TrackState, error) {
	var out []TrackState
	if t.tx == nil {
		return nil, nil
	}
	err := t.tx.Bucket(bucketTracks).ForEach(func(k, v []byte) error {
		var ts TrackState
		if err := json.Unmarshal(v, &ts); err != nil {
			return fmt.Errorf("state: track %q: %w", k, err)
		}
		out = append(out, ts)
		return nil
	})
	return out, err
}

// Job returns the job with key k; ok is false when there is none.
func (t *Tx) Job(k JobKey) (j Job, ok bool, err error) {
	if t.tx == nil {
		return Job{}, false, nil
	}
	v := t.tx.Bucket(bucketJobs).Get(k.bytes())
	if v == nil {
		return Job{}, false, nil
	}
	if err := json.Unmarshal(v, &j); err != nil {
		return j, false, fmt.Errorf("state: job %s: %w", k, err)
	}
	return j, true, nil
}

// PutJob stores j under j.Key.
func (t *Tx) PutJob(j Job) error {
	if j.Key.Track == "" || j.Key.Adapter == "" || j.Key.BaseRepo == "" || j.Key.BaseCommit == "" {
		return fmt.Errorf("state: PutJob with incomplete key %+v", j.Key)
	}
	return putJSON(t.tx.Bucket(bucketJobs), j.Key.bytes(), j)
}

// Jobs returns the jobs of one track ("" for all), in key order.
func (t *Tx) Jobs(track string) ([]Job, error) {
	var out []Job
	if t.tx == nil {
		return nil, nil
	}
	c := t.tx.Bucket(bucketJobs).Cursor()
	prefix := []byte{}
	if track != "" {
		prefix = trackPrefix(track)
	}
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var j Job
		if err := json.Unmarshal(v, &j); err != nil {
			key, _ := parseJobKey(k)
			return nil, fmt.Errorf("state: job %s: %w", key, err)
		}
		out = append(out, j)
	}
	return out, nil
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("state: encode %q: %w", k, err)
	}
	return b.Put(k, data)
}

// Counts returns the number of jobs in each status.
func Counts(jobs []Job) map[Status]int {
	m := make(map[Status]int, len(Statuses))
	for _, s := range Statuses {
		m[s] = 0
	}
	for _, j := range jobs {
		m[j.Status]++
	}
	return m
}

// Snapshot is everything in the database, for `lorasync status`.
type Snapshot struct {
	Tracks []TrackState   `json:"tracks"`
	Jobs   []Job          `json:"jobs"`
	Counts map[Status]int `json:"counts"`
	Path   string         `json:"path"`
}

// Snapshot reads the whole database in one transaction.
func (s *Store) Snapshot() (*Snapshot, error) {
	snap := &Snapshot{Path: s.path}
	err := s.View(func(tx *Tx) error {
		var err error
		if snap.Tracks, err = tx.Tracks(); err != nil {
			return err
		}
		snap.Jobs, err = tx.Jobs("")
		return err
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(snap.Jobs, func(a, b int) bool { return snap.Jobs[a].Created.Before(snap.Jobs[b].Created) })
	snap.Counts = Counts(snap.Jobs)
	return snap, nil
}

// RecoverInterrupted puts jobs left running by a previous process back to
// pending and returns them. A graceful stop records its interrupted jobs as
// pending itself, so a job still running here died with its process (killed,
// out of memory, a crash): that counts as an attempt, and a job that reaches
// maxAttempts is parked instead, so one that kills the process is not resumed,
// and kills it again, at every start forever. Call it once at startup, before
// any worker runs.
func (s *Store) RecoverInterrupted(now time.Time, maxAttempts int) ([]Job, error) {
	var out []Job
	err := s.Update(func(tx *Tx) error {
		jobs, err := tx.Jobs("")
		if err != nil {
			return err
		}
		for _, j := range jobs {
			if j.Status != Running {
				continue
			}
			j.Attempts++
			j.Updated = now
			if j.Attempts >= maxAttempts {
				j.Status, j.Finished = Parked, now
				j.LastError = fmt.Sprintf("the process died during this job %d times (out of memory? see the journal); parked", j.Attempts)
			} else {
				j.Status = Pending
				j.LastError = "interrupted (the process died during this job); resumed"
			}
			if err := tx.PutJob(j); err != nil {
				return err
			}
			out = append(out, j)
		}
		return nil
	})
	return out, err
}

// Requeue puts parked and failed jobs that match back to pending with a
// fresh attempt budget, for an operator who fixed the cause (a token, a
// broken adapter). It is safe while a daemon runs: the daemon reads jobs
// from the database at every dispatch.
func (s *Store) Requeue(match func(Job) bool, now time.Time) ([]Job, error) {
	var out []Job
	err := s.Update(func(tx *Tx) error {
		jobs, err := tx.Jobs("")
		if err != nil {
			return err
		}
		for _, j := range jobs {
			if (j.Status != Parked && j.Status != Failed) || !match(j) {
				continue
			}
			if j.LastError != "" {
				j.LastError = "requeued; previous error: " + j.LastError
			}
			j.Status, j.Attempts, j.NextAttempt, j.Finished, j.Updated = Pending, 0, time.Time{}, time.Time{}, now
			if err := tx.PutJob(j); err != nil {
				return err
			}
			out = append(out, j)
		}
		return nil
	})
	return out, err
}

// OwnerFile is the lock file that makes one process the owner of a state
// directory.
const OwnerFile = "owner.lock"

// ErrOwned is returned by AcquireOwner when another process owns the
// state directory.
var ErrOwned = errors.New("state directory is in use by another lorasync process")

// Owner is the exclusive right to run jobs from a state directory. Only
// one daemon or `lorasync run` may hold it: a second one would put the
// first one's running jobs back to pending (RecoverInterrupted) and run
// them twice. Readers (`lorasync status`) need no ownership.
type Owner struct{ f *os.File }

// AcquireOwner takes the owner lock of dir without waiting. The lock is a
// flock, so it is released when the process dies, however it dies.
func AcquireOwner(dir string) (*Owner, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	p := filepath.Join(dir, OwnerFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(p)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s (pid %s)", ErrOwned, dir, strings.TrimSpace(string(pid)))
		}
		return nil, fmt.Errorf("state: lock %s: %w", p, err)
	}
	// Record our pid for the error message above; best effort.
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &Owner{f: f}, nil
}

// Release gives the lock up.
func (o *Owner) Release() error {
	if o == nil || o.f == nil {
		return nil
	}
	err := o.f.Close() // closing the descriptor releases the flock
	o.f = nil
	return err
}
