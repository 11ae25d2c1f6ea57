package safetensors

import (
	"os"

	"golang.org/x/sys/unix"
)

var pageSize = int64(os.Getpagesize())

// dropPages applies madvise(MADV_DONTNEED) to the pages of m covering bytes
// [start, end), widened to page boundaries (m itself starts on a page). On a
// read-only shared file mapping this unmaps the pages from the process; the
// page cache keeps them and the next access faults them back in.
func dropPages(m []byte, start, end int64) error {
	start -= start % pageSize
	if r := end % pageSize; r != 0 {
		end = min(end+pageSize-r, int64(len(m)))
	}
	return unix.Madvise(m[start:end], unix.MADV_DONTNEED)
}
