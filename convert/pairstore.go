package convert

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"unsafe"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/lorasuite"
	"github.com/lorasync/lorasync/convert/safetensors"
)

// pairExt names a pair cache file: <CacheDir>/pairs/<key>.pair.safetensors.
const pairExt = ".pair.safetensors"

// Tensors of a pair cache file besides the T blocks.
const (
	pairMetaTensor     = "pair"       // U8: the gob of Pair with the bulk float64 data detached
	pairTransferTensor = "transfer.w" // F64 [d_o, d_n]: W_x (absent for the identity)
)

// blockTensor names T block b of role in layer record i (an F64 tensor of
// shape [Rows, Cols]; empty blocks have none).
func blockTensor(i int, role lorasuite.Role, b int) string {
	return "layers." + strconv.Itoa(i) + "." + string(role) + "." + strconv.Itoa(b)
}

// bulkEntry is one T block of an analysis as a cache tensor: its name, its
// shape and the slice it is read from or written into.
type bulkEntry struct {
	name  string
	shape []int
	data  *[]float64
}

// pairBulk lists the T blocks that the cache file keeps as tensors rather
// than in the gob: every non-empty one (537 MB at Llama-2-7B -> Llama-3-8B
// shapes; W_x, the other 134 MB, is handled beside them).
func pairBulk(pa *lorasuite.PairAnalysis) []bulkEntry {
	var out []bulkEntry
	for i := range pa.Layers {
		la := &pa.Layers[i]
		for _, rb := range []struct {
			role lorasuite.Role
			rb   *lorasuite.RoleBlocks
		}{{lorasuite.RoleQ, &la.Q}, {lorasuite.RoleK, &la.K}, {lorasuite.RoleV, &la.V}, {lorasuite.RoleO, &la.O}} {
			for b := range rb.rb.T {
				if blk := &rb.rb.T[b]; !blk.Empty() {
					out = append(out, bulkEntry{blockTensor(i, rb.role, b), []int{blk.Rows, blk.Cols}, &blk.Data})
				}
			}
		}
	}
	return out
}

// encodePair turns p into the tensors of its cache file: the gob of p
// without its bulk arrays (metadata, head maps, similarities, residuals:
// well under a megabyte) plus one F64 tensor per bulk array. The arrays are
// detached from p only while the gob is encoded. On a little-endian machine
// the tensors' bytes alias p's arrays (no copy of the ~0.67 GB).
func encodePair(p *Pair) ([]safetensors.Tensor, error) {
	pa := p.Analysis
	bulk := pairBulk(pa)
	saved := make([][]float64, len(bulk))
	for k, e := range bulk {
		saved[k], *e.data = *e.data, nil
	}
	var w *mat.Dense
	w, pa.Transfer.W = pa.Transfer.W, nil
	var meta bytes.Buffer
	err := gob.NewEncoder(&meta).Encode(p)
	for k, e := range bulk {
		*e.data = saved[k]
	}
	pa.Transfer.W = w
	if err != nil {
		return nil, err
	}
	ts := []safetensors.Tensor{{Name: pairMetaTensor, DType: safetensors.U8, Shape: []int{meta.Len()}, Data: meta.Bytes()}}
	if w != nil {
		raw := w.RawMatrix()
		if raw.Stride != raw.Cols {
			raw = mat.DenseCopyOf(w).RawMatrix()
		}
		ts = append(ts, safetensors.Tensor{Name: pairTransferTensor, DType: safetensors.F64, Shape: []int{raw.Rows, raw.Cols}, Data: float64Bytes(raw.Data[:raw.Rows*raw.Cols])})
	}
	for _, e := range bulk {
		ts = append(ts, safetensors.Tensor{Name: e.name, DType: safetensors.F64, Shape: e.shape, Data: float64Bytes(*e.data)})
	}
	return ts, nil
}

// loadPair reads a pair cache file written by savePair: the gob first, then
// every bulk array it lacks, copied out of the mapping (a memmove per tensor,
// ~0.2 s for 0.67 GB from the page cache, where decoding the same data from
// a gob took 2 s). The analysis is validated, so a damaged file is an error.
func loadPair(path string) (*Pair, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("convert: pair cache %s: %s", path, fmt.Sprintf(format, args...))
	}
	meta, err := f.Bytes(pairMetaTensor)
	if err != nil {
		return nil, fmt.Errorf("convert: pair cache %s: %w", path, err)
	}
	var p Pair
	if err := gob.NewDecoder(bytes.NewReader(meta)).Decode(&p); err != nil {
		return nil, fmt.Errorf("convert: pair cache %s: %w", path, err)
	}
	if p.Format != pairFormat || p.Analysis == nil || p.Analysis.Transfer == nil {
		return nil, bad("format %d, want %d", p.Format, pairFormat)
	}
	read := func(name string, shape []int) ([]float64, error) {
		in, ok := f.Info(name)
		if !ok {
			return nil, bad("no tensor %q", name)
		}
		if in.DType != safetensors.F64 || !equalInts(in.Shape, shape) {
			return nil, bad("tensor %q is %s %v, want F64 %v", name, in.DType, in.Shape, shape)
		}
		b, err := f.Bytes(name)
		if err != nil {
			return nil, err
		}
		out := make([]float64, len(b)/8)
		copyFloat64(out, b)
		return out, nil
	}
	tensors := 1
	if tr := p.Analysis.Transfer; !tr.Identity {
		data, err := read(pairTransferTensor, []int{tr.DOld, tr.DNew})
		if err != nil {
			return nil, err
		}
		tr.W = mat.NewDense(tr.DOld, tr.DNew, data)
		tensors++
	}
	for _, e := range pairBulk(p.Analysis) {
		if *e.data, err = read(e.name, e.shape); err != nil {
			return nil, err
		}
		tensors++
	}
	if n := len(f.Names()); n != tensors {
		return nil, bad("%d tensors, the analysis accounts for %d", n, tensors)
	}
	if err := p.Analysis.Validate(); err != nil {
		return nil, fmt.Errorf("convert: pair cache %s: %w", path, err)
	}
	return &p, nil
}

// savePair writes p atomically (safetensors.WriteFile: temp file, fsync,
// rename, fsync dir).
func savePair(path string, p *Pair) error {
	ts, err := encodePair(p)
	if err != nil {
		return fmt.Errorf("convert: pair cache %s: %w", path, err)
	}
	meta := map[string]string{"format": "lorasync-pair/" + strconv.Itoa(pairFormat), "pair_key": p.Key}
	if err := safetensors.WriteFile(path, ts, meta); err != nil {
		return fmt.Errorf("convert: pair cache: %w", err)
	}
	return nil
}

// pairPath is the cache file of the pair with key under cacheDir.
func pairPath(cacheDir, key string) string {
	return filepath.Join(cacheDir, "pairs", key+pairExt)
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// littleEndian says whether float64 memory is already the file's byte order.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// float64Bytes returns v as little-endian bytes: a view of v's memory on a
// little-endian machine, an encoded copy otherwise.
func float64Bytes(v []float64) []byte {
	if len(v) == 0 {
		return []byte{}
	}
	if littleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 8*len(v))
	}
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
	}
	return b
}

// copyFloat64 decodes the little-endian float64s of src into dst
// (len(src) = 8 len(dst)).
func copyFloat64(dst []float64, src []byte) {
	if littleEndian {
		copy(float64Bytes(dst), src)
		return
	}
	for i := range dst {
		dst[i] = math.Float64frombits(binary.LittleEndian.Uint64(src[8*i:]))
	}
}
