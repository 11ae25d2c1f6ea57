package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Tensor is one tensor to write: Data holds the little-endian elements of DType
// in row-major order, len(Data) = product(Shape) x DType.Size().
type Tensor struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte
}

// FromFloat32 encodes values (row-major, product(shape) of them) as a tensor of
// dtype F32, F16 or BF16, rounding to nearest even. It panics if len(values) does
// not match shape or dtype is not one of those three: both are programmer errors.
func FromFloat32(name string, dtype DType, shape []int, values []float32) Tensor {
	n := 1
	for _, d := range shape {
		if d < 0 {
			panic(fmt.Sprintf("safetensors: FromFloat32 %q: negative dimension in shape %v", name, shape))
		}
		n *= d
	}
	if n != len(values) {
		panic(fmt.Sprintf("safetensors: FromFloat32 %q: shape %v holds %d values, got %d", name, shape, n, len(values)))
	}
	data, err := encodeFloat32(make([]byte, 0, n*max(dtype.Size(), 1)), values, dtype)
	if err != nil {
		panic(fmt.Sprintf("safetensors: FromFloat32 %q: %v", name, err))
	}
	return Tensor{Name: name, DType: dtype, Shape: slices.Clone(shape), Data: data}
}

// EncodeHeader builds the length-prefixed, space-padded header for tensors laid
// out in sorted name order, and returns it with the tensors in that order. It
// validates every tensor; errors name the tensor and wrap ErrFormat.
func EncodeHeader(tensors []Tensor, metadata map[string]string) ([]byte, []Tensor, error) {
	sorted := slices.Clone(tensors)
	slices.SortFunc(sorted, func(a, b Tensor) int { return strings.Compare(a.Name, b.Name) })
	var buf bytes.Buffer
	buf.WriteByte('{')
	if len(metadata) > 0 {
		m, err := json.Marshal(metadata) // encoding/json sorts map keys
		if err != nil {
			return nil, nil, fmt.Errorf("safetensors: metadata: %w", err)
		}
		buf.WriteString(`"` + metadataKey + `":`)
		buf.Write(m)
	}
	var off int64
	for i, t := range sorted {
		if err := checkTensor(t); err != nil {
			return nil, nil, err
		}
		if i > 0 && sorted[i-1].Name == t.Name {
			return nil, nil, fmt.Errorf("safetensors: tensor %q: duplicate name: %w", t.Name, ErrFormat)
		}
		if buf.Len() > 1 {
			buf.WriteByte(',')
		}
		name, _ := json.Marshal(t.Name)
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		sh, _ := json.Marshal(shape)
		end := off + int64(len(t.Data))
		fmt.Fprintf(&buf, `%s:{"dtype":%q,"shape":%s,"data_offsets":[%d,%d]}`, name, string(t.DType), sh, off, end)
		off = end
	}
	buf.WriteByte('}')
	// Pad with spaces to a multiple of 8 so the data buffer is 8-byte aligned,
	// as the reference library does.
	for buf.Len()%8 != 0 {
		buf.WriteByte(' ')
	}
	if buf.Len() > MaxHeaderSize {
		return nil, nil, fmt.Errorf("safetensors: header of %d bytes exceeds the %d-byte limit: %w", buf.Len(), MaxHeaderSize, ErrFormat)
	}
	out := binary.LittleEndian.AppendUint64(make([]byte, 0, 8+buf.Len()), uint64(buf.Len()))
	return append(out, buf.Bytes()...), sorted, nil
}

// checkTensor validates a tensor about to be written.
func checkTensor(t Tensor) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("safetensors: tensor %q: %s: %w", t.Name, fmt.Sprintf(format, args...), ErrFormat)
	}
	if t.Name == "" || t.Name == metadataKey {
		return bad("reserved or empty name")
	}
	if !t.DType.Valid() {
		return bad("unknown dtype %q", t.DType)
	}
	size := uint64(t.DType.Size())
	for _, d := range t.Shape {
		if d < 0 {
			return bad("negative dimension in shape %v", t.Shape)
		}
		hi, lo := bits.Mul64(size, uint64(d))
		if hi != 0 || lo > math.MaxInt64 {
			return bad("shape %v overflows", t.Shape)
		}
		size = lo
	}
	if uint64(len(t.Data)) != size {
		return bad("shape %v x %s is %d bytes, data has %d", t.Shape, t.DType, size, len(t.Data))
	}
	return nil
}

// WriteFile writes tensors and metadata to path atomically: a temp file in the
// same directory is written, its size checked, fsynced and renamed over path,
// and the directory is fsynced. On error the temp file is removed and path is
// untouched. The file mode is 0644.
func WriteFile(path string, tensors []Tensor, metadata map[string]string) (err error) {
	hdr, sorted, err := EncodeHeader(tensors, metadata)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	w := bufio.NewWriterSize(tmp, 1<<20)
	want := int64(len(hdr))
	if _, err := w.Write(hdr); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", tmp.Name(), err)
	}
	for _, t := range sorted {
		if _, err := w.Write(t.Data); err != nil {
			return fmt.Errorf("safetensors: write %s: tensor %q: %w", tmp.Name(), t.Name, err)
		}
		want += int64(len(t.Data))
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", tmp.Name(), err)
	}
	st, err := tmp.Stat()
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	if st.Size() != want {
		return fmt.Errorf("safetensors: %s: wrote %d bytes, expected %d", tmp.Name(), st.Size(), want)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("safetensors: fsync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("safetensors: close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory so that a rename into it is durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("safetensors: fsync directory %s: %w", dir, err)
	}
	return nil
}
