package safetensors

import "fmt"

// Releaser is implemented by readers whose tensors live in a memory mapping
// (*File and *Set). Reading a tensor faults its pages into the process's
// resident set, and the kernel leaves them there until the file is unmapped:
// converting every weight of a 16 GB checkpoint once leaves 16 GB counted
// against the process (RssFile), although none of it is needed any more.
// Release drops those pages from the process again.
//
// Releasing never changes what a reader returns: the mapping is read-only
// and backed by the file, so a later Bytes, Float32 or Float32Rows (or a
// Bytes view taken earlier) re-faults the same bytes from the page cache, at
// the cost of a minor fault per page (or a disk read if the kernel has
// evicted them meanwhile). It is an optimisation hint, never a correctness
// requirement, and a no-op where the platform has no madvise(MADV_DONTNEED)
// (everything but Linux).
//
// The released span is the tensor's bytes widened to whole pages, so a page
// shared with a neighbouring tensor is released too; that neighbour simply
// re-faults it when next read.
type Releaser interface {
	// Release drops the pages of the tensor called name.
	Release(name string) error
	// ReleaseRows drops the pages of rows lo..hi-1 (along the first
	// dimension) of the tensor called name, for readers that stream a large
	// matrix in row chunks.
	ReleaseRows(name string, lo, hi int) error
}

var (
	_ Releaser = (*File)(nil)
	_ Releaser = (*Set)(nil)
)

// Release drops the pages of tensor name from the process's resident set
// when r is a Releaser, and does nothing otherwise (see Releaser).
func Release(r Reader, name string) error {
	if rel, ok := r.(Releaser); ok {
		return rel.Release(name)
	}
	return nil
}

// ReleaseRows drops rows lo..hi-1 of tensor name when r is a Releaser, and
// does nothing otherwise (see Releaser).
func ReleaseRows(r Reader, name string, lo, hi int) error {
	if rel, ok := r.(Releaser); ok {
		return rel.ReleaseRows(name, lo, hi)
	}
	return nil
}

// Release drops the pages of tensor name from the resident set (see Releaser).
func (f *File) Release(name string) error {
	in, err := f.lookup(name)
	if err != nil {
		return err
	}
	return f.release(in, f.h.data+in.Begin, f.h.data+in.End)
}

// ReleaseRows drops the pages of rows lo..hi-1 of tensor name (see Releaser).
func (f *File) ReleaseRows(name string, lo, hi int) error {
	in, err := f.lookup(name)
	if err != nil {
		return err
	}
	if lo < 0 || hi < lo || hi > rowCount(in) {
		return fmt.Errorf("safetensors: %s: tensor %q: rows [%d, %d) out of range for shape %v", f.path, name, lo, hi, in.Shape)
	}
	row := int64(rowLen(in) * in.DType.Size())
	start := f.h.data + in.Begin + int64(lo)*row
	return f.release(in, start, start+int64(hi-lo)*row)
}

// release drops the mapping's pages covering bytes [start, end).
func (f *File) release(in Info, start, end int64) error {
	if start >= end {
		return nil
	}
	if err := dropPages(f.m, start, end); err != nil {
		return fmt.Errorf("safetensors: %s: tensor %q: releasing pages: %w", f.path, in.Name, err)
	}
	return nil
}

// Release drops the pages of tensor name from the resident set (see Releaser).
func (s *Set) Release(name string) error {
	f, err := s.file(name)
	if err != nil {
		return err
	}
	return f.Release(name)
}

// ReleaseRows drops the pages of rows lo..hi-1 of tensor name (see Releaser).
func (s *Set) ReleaseRows(name string, lo, hi int) error {
	f, err := s.file(name)
	if err != nil {
		return err
	}
	return f.ReleaseRows(name, lo, hi)
}
