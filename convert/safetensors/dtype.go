package safetensors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// DType is a tensor element type, spelled as in the file header ("F32", "BF16", ...).
type DType string

// The element types this package recognises. Only F32, F16, BF16, F64, I32 and I64
// can be converted to float32; the others can be read as raw bytes.
const (
	F64    DType = "F64"
	F32    DType = "F32"
	F16    DType = "F16"
	BF16   DType = "BF16"
	I64    DType = "I64"
	I32    DType = "I32"
	I16    DType = "I16"
	I8     DType = "I8"
	U64    DType = "U64"
	U32    DType = "U32"
	U16    DType = "U16"
	U8     DType = "U8"
	Bool   DType = "BOOL"
	F8E4M3 DType = "F8_E4M3"
	F8E5M2 DType = "F8_E5M2"
)

var (
	// ErrFormat is wrapped by every error about a malformed safetensors file or
	// index, and by WriteFile for invalid tensors.
	ErrFormat = errors.New("malformed safetensors")
	// ErrDType is wrapped when a tensor's dtype is recognised but cannot be
	// converted to float32, or cannot be encoded from it.
	ErrDType = errors.New("unsupported dtype")
	// ErrNotFound is wrapped when a Reader has no tensor of the requested name.
	ErrNotFound = errors.New("tensor not found")
	// ErrChanged is wrapped when reading a mapped file faults because the
	// file shrank after it was opened (truncated or rewritten in place).
	ErrChanged = errors.New("file changed after it was opened")
)

// Size is the width of one element in bytes, or 0 for an unknown dtype.
func (d DType) Size() int {
	switch d {
	case F64, I64, U64:
		return 8
	case F32, I32, U32:
		return 4
	case F16, BF16, I16, U16:
		return 2
	case I8, U8, Bool, F8E4M3, F8E5M2:
		return 1
	}
	return 0
}

// Valid reports whether d is a dtype this package recognises.
func (d DType) Valid() bool { return d.Size() > 0 }

// Float reports whether values of dtype d can be converted to float32 by
// Reader.Float32.
func (d DType) Float() bool {
	switch d {
	case F64, F32, F16, BF16, I64, I32:
		return true
	}
	return false
}

// decodeFloat32 converts little-endian elements of dtype d in src to dst.
// len(src) must be len(dst)*d.Size(); callers guarantee it.
func decodeFloat32(dst []float32, src []byte, d DType) error {
	if len(src) != len(dst)*d.Size() {
		panic("safetensors: decode length mismatch")
	}
	switch d {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = BF16ToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = float16.Frombits(binary.LittleEndian.Uint16(src[2*i:])).Float32()
		}
	case F64:
		for i := range dst {
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(src[8*i:])))
		}
	case I32:
		for i := range dst {
			dst[i] = float32(int32(binary.LittleEndian.Uint32(src[4*i:])))
		}
	case I64:
		for i := range dst {
			dst[i] = float32(int64(binary.LittleEndian.Uint64(src[8*i:])))
		}
	default:
		return fmt.Errorf("%w %s: cannot convert to float32", ErrDType, d)
	}
	return nil
}

// BF16ToFloat32 widens a bfloat16 bit pattern to float32 (exact).
func BF16ToFloat32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// Float32ToBF16 narrows f to bfloat16 bits, rounding to nearest with ties to even.
// NaN stays NaN (its quiet bit is set so that truncating the payload cannot turn it
// into an infinity); values beyond the bfloat16 range round to ±Inf.
func Float32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7f800000 == 0x7f800000 && u&0x007fffff != 0 {
		return uint16(u>>16) | 0x0040
	}
	// Round to nearest even: add 0x7fff plus the lowest kept bit, then truncate.
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// encodeFloat32 appends src encoded as dtype d to dst.
func encodeFloat32(dst []byte, src []float32, d DType) ([]byte, error) {
	switch d {
	case F32:
		for _, v := range src {
			dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
		}
	case BF16:
		for _, v := range src {
			dst = binary.LittleEndian.AppendUint16(dst, Float32ToBF16(v))
		}
	case F16:
		for _, v := range src {
			dst = binary.LittleEndian.AppendUint16(dst, float16.Fromfloat32(v).Bits())
		}
	default:
		return dst, fmt.Errorf("%w %s: cannot encode float32 (want F32, F16 or BF16)", ErrDType, d)
	}
	return dst, nil
}
