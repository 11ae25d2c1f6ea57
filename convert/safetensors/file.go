package safetensors

import (
	"fmt"
	"maps"
	"os"
	"runtime/debug"

	"github.com/edsrzf/mmap-go"
)

// Reader is a read-only view of named tensors, satisfied by *File and *Set.
// Methods other than Close are safe for concurrent use; none may be called after
// Close.
type Reader interface {
	// Names lists the tensor names in sorted order.
	Names() []string
	// Info describes the tensor called name.
	Info(name string) (Info, bool)
	// Bytes returns the tensor's raw little-endian bytes as a view into the
	// read-only mapping: do not modify it, and do not use it after Close.
	Bytes(name string) ([]byte, error)
	// Float32 returns a converted copy of the whole tensor (row-major).
	Float32(name string) ([]float32, error)
	// Float32Rows returns rows lo..hi-1 (along the first dimension) of the tensor
	// as a converted copy: (hi-lo) x (product of the other dimensions), row-major.
	// For an out x in weight matrix it is rows lo..hi-1 of the matrix.
	Float32Rows(name string, lo, hi int) ([]float32, error)
	// Float32Into converts the whole tensor into dst, which must hold exactly
	// its number of elements: the allocation-free form of Float32, for
	// callers that reuse one buffer for tensors of the same size.
	Float32Into(dst []float32, name string) error
	// Metadata returns a copy of the "__metadata__" map (nil when absent).
	Metadata() map[string]string
	// Close releases the mapping(s).
	Close() error
}

var (
	_ Reader = (*File)(nil)
	_ Reader = (*Set)(nil)
)

// File is one memory-mapped safetensors file.
type File struct {
	path string
	f    *os.File
	m    mmap.MMap
	h    *header
}

// Open maps the safetensors file at path read-only and validates its header.
func Open(path string) (_ *File, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, formatErr(path, "", "not a regular file")
	}
	if st.Size() < 8 {
		// mmap of an empty file fails; report the real problem instead.
		return nil, formatErr(path, "", "file is %d bytes, shorter than the 8-byte header length", st.Size())
	}
	m, err := mmap.Map(f, mmap.RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: mmap: %w", path, err)
	}
	h, err := parse(path, m)
	if err != nil {
		m.Unmap()
		return nil, err
	}
	return &File{path: path, f: f, m: m, h: h}, nil
}

// Path is the file's path as given to Open.
func (f *File) Path() string { return f.path }

// Names lists the tensor names in sorted order.
func (f *File) Names() []string { return append([]string(nil), f.h.names...) }

// Info describes the tensor called name.
func (f *File) Info(name string) (Info, bool) {
	in, ok := f.h.infos[name]
	if ok {
		in.Shape = append([]int(nil), in.Shape...)
	}
	return in, ok
}

// Metadata returns a copy of the "__metadata__" map (nil when absent).
func (f *File) Metadata() map[string]string { return maps.Clone(f.h.meta) }

// Bytes returns the tensor's raw bytes as a view into the mapping.
func (f *File) Bytes(name string) ([]byte, error) {
	in, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	return f.m[f.h.data+in.Begin : f.h.data+in.End : f.h.data+in.End], nil
}

// Float32 returns a float32 copy of the tensor, converted from F32, F16, BF16,
// F64, I32 or I64.
func (f *File) Float32(name string) ([]float32, error) {
	in, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	return f.rows(in, 0, rowCount(in))
}

// Float32Into converts the tensor into dst (see Reader).
func (f *File) Float32Into(dst []float32, name string) error {
	in, err := f.lookup(name)
	if err != nil {
		return err
	}
	if n := in.NumElements(); len(dst) != n {
		return fmt.Errorf("safetensors: %s: tensor %q: %d elements into a buffer of %d", f.path, name, n, len(dst))
	}
	return f.rowsInto(dst, in, 0, rowCount(in))
}

// Float32Rows returns rows lo..hi-1 (along the first dimension) as float32:
// (hi-lo) x cols, where cols is the product of the remaining dimensions.
func (f *File) Float32Rows(name string, lo, hi int) ([]float32, error) {
	in, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	if len(in.Shape) == 0 {
		return nil, fmt.Errorf("safetensors: %s: tensor %q: Float32Rows of a scalar", f.path, name)
	}
	if lo < 0 || hi < lo || hi > in.Shape[0] {
		return nil, fmt.Errorf("safetensors: %s: tensor %q: rows [%d, %d) out of range for shape %v", f.path, name, lo, hi, in.Shape)
	}
	return f.rows(in, lo, hi)
}

// rows converts rows lo..hi-1 of in; a scalar counts as one row.
func (f *File) rows(in Info, lo, hi int) ([]float32, error) {
	dst := make([]float32, (hi-lo)*rowLen(in))
	if err := f.rowsInto(dst, in, lo, hi); err != nil {
		return nil, err
	}
	return dst, nil
}

// rowsInto converts rows lo..hi-1 of in into dst, (hi-lo) x rowLen(in) long.
func (f *File) rowsInto(dst []float32, in Info, lo, hi int) (err error) {
	cols := rowLen(in)
	size := in.DType.Size()
	start := f.h.data + in.Begin + int64(lo*cols*size)
	src := f.m[start : start+int64((hi-lo)*cols*size)]
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer catchFault(&err, f.path, in.Name)
	if err := decodeFloat32(dst, src, in.DType); err != nil {
		return fmt.Errorf("safetensors: %s: tensor %q: %w", f.path, in.Name, err)
	}
	return nil
}

// catchFault, deferred by a reader of the mapping, turns a memory fault
// there into an ErrChanged error naming the file and tensor. Pages of a
// mapping past the end of its file fault with SIGBUS, which would otherwise
// kill the process: a checkpoint truncated or rewritten in place while a
// conversion reads it must end that conversion with an error, not the
// daemon. Faults become panics only on goroutines that ask for it, so the
// reader's goroutine is switched to that mode until it returns.
func catchFault(err *error, path, tensor string) {
	r := recover()
	if r == nil {
		return
	}
	if fault, ok := r.(interface{ Addr() uintptr }); ok {
		*err = fmt.Errorf("safetensors: %s: tensor %q: %w (reading its mapping faulted: %v)", path, tensor, ErrChanged, fault)
		return
	}
	panic(r)
}

// rowCount is the length of the first dimension (1 for a scalar).
func rowCount(in Info) int {
	if len(in.Shape) == 0 {
		return 1
	}
	return in.Shape[0]
}

// rowLen is the number of elements in one row along the first dimension.
func rowLen(in Info) int {
	n := 1
	for i := 1; i < len(in.Shape); i++ {
		n *= in.Shape[i]
	}
	return n
}

func (f *File) lookup(name string) (Info, error) {
	if f.m == nil {
		return Info{}, fmt.Errorf("safetensors: %s: use after Close", f.path)
	}
	in, ok := f.h.infos[name]
	if !ok {
		return Info{}, fmt.Errorf("safetensors: %s: no tensor %q: %w", f.path, name, ErrNotFound)
	}
	return in, nil
}

// Close unmaps and closes the file. Views returned by Bytes become invalid.
func (f *File) Close() error {
	if f.m == nil {
		return nil
	}
	err := f.m.Unmap()
	f.m = nil
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("safetensors: %s: close: %w", f.path, err)
	}
	return nil
}
