package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

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
