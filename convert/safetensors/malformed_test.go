package safetensors

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rawFile frames a header string and data buffer as a safetensors file image.
func rawFile(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(b, header...), data...)
}

// writeRaw stores b as name in a fresh temp dir and returns its path.
func writeRaw(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOpenMalformed(t *testing.T) {
	hugeLen := binary.LittleEndian.AppendUint64(nil, 1<<40)
	lenPastEnd := binary.LittleEndian.AppendUint64(nil, 100)
	lenPastEnd = append(lenPastEnd, `{"a":{}}`...)
	good := rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8))

	cases := []struct {
		name   string
		file   []byte
		tensor string // tensor the error must name, if any
		want   string // substring of the error
	}{
		{"empty file", nil, "", "shorter than the 8-byte"},
		{"short file", []byte{1, 2, 3}, "", "shorter than the 8-byte"},
		{"absurd header size", append(hugeLen, make([]byte, 16)...), "", "exceeds"},
		{"header past end", lenPastEnd, "", "runs past the end"},
		{"truncated data", good[:len(good)-3], "a", "run past"},
		{"not json", rawFile(`{nope}   `, nil), "", "header JSON"},
		{"not an object", rawFile(`[1,2]`, nil), "", "does not start"},
		{"invalid utf8", rawFile("{\"\xff\":1}", nil), "", "UTF-8"},
		{"trailing garbage", rawFile(`{} {}`, nil), "", "after the header"},
		{"unknown dtype", rawFile(`{"a":{"dtype":"F17","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), "a", `unknown dtype "F17"`},
		{"lowercase dtype", rawFile(`{"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), "a", "unknown dtype"},
		{"missing shape", rawFile(`{"a":{"dtype":"F32","data_offsets":[0,4]}}`, make([]byte, 4)), "a", `missing field "shape"`},
		{"negative dim", rawFile(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, make([]byte, 4)), "a", "negative"},
		{"fractional dim", rawFile(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, make([]byte, 4)), "a", "not a 64-bit integer"},
		{"dim too large", rawFile(`{"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}}`, make([]byte, 4)), "a", "not a 64-bit integer"},
		{"shape overflow", rawFile(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`, make([]byte, 4)), "a", "overflows"},
		{"size mismatch", rawFile(`{"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,4]}}`, make([]byte, 4)), "a", "is 6 bytes but"},
		{"three offsets", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, make([]byte, 4)), "a", "3 values"},
		{"reversed offsets", rawFile(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`, make([]byte, 4)), "a", "reversed"},
		{"offsets past end", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 4)), "a", "run past"},
		{"overlap", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), "", "overlaps"},
		{"gap", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), "", "gap of 4 bytes"},
		{"trailing data", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 8)), "", "4 trailing bytes"},
		{"duplicate tensor", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), "a", "duplicate tensor"},
		{"duplicate field", rawFile(`{"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), "a", `duplicate field "dtype"`},
		{"duplicate metadata", rawFile(`{"__metadata__":{},"__metadata__":{}}`, nil), "", "duplicate"},
		{"non-string metadata", rawFile(`{"__metadata__":{"k":1}}`, nil), "", "values must be strings"},
		{"duplicate metadata key", rawFile(`{"__metadata__":{"k":"1","k":"2"}}`, nil), "", `duplicate key "k"`},
		{"tensor not an object", rawFile(`{"a":[1]}`, nil), "a", "tensor entry"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeRaw(t, "bad.safetensors", c.file)
			f, err := Open(path)
			if err == nil {
				f.Close()
				t.Fatal("Open succeeded")
			}
			msg := err.Error()
			if !errors.Is(err, ErrFormat) {
				t.Errorf("error %q does not wrap ErrFormat", msg)
			}
			if !strings.Contains(msg, path) {
				t.Errorf("error %q does not name the file", msg)
			}
			if c.tensor != "" && !strings.Contains(msg, `tensor "`+c.tensor+`"`) {
				t.Errorf("error %q does not name tensor %q", msg, c.tensor)
			}
			if !strings.Contains(msg, c.want) {
				t.Errorf("error %q does not contain %q", msg, c.want)
			}
		})
	}
}

// Recognised but non-float dtypes open fine, read as bytes, and refuse Float32
// with ErrDType naming the tensor.
func TestNonFloatDType(t *testing.T) {
	path := writeRaw(t, "u8.safetensors", rawFile(`{"mask":{"dtype":"BOOL","shape":[2,2],"data_offsets":[0,4]}}`, []byte{1, 0, 0, 1}))
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if b, err := f.Bytes("mask"); err != nil || string(b) != "\x01\x00\x00\x01" {
		t.Errorf("Bytes = %v, %v", b, err)
	}
	if _, err := f.Float32("mask"); !errors.Is(err, ErrDType) || !strings.Contains(err.Error(), `"mask"`) {
		t.Errorf("Float32(BOOL) err = %v, want ErrDType naming the tensor", err)
	}
}

// Edge cases that are valid: no tensors, a scalar, a zero-size tensor sharing an
// offset, unknown extra fields, null metadata.
func TestOpenEdgeCases(t *testing.T) {
	cases := []struct {
		name   string
		file   []byte
		tensor string
		want   []float32
	}{
		{"empty", rawFile(`{}`, nil), "", nil},
		{"null metadata", rawFile(`{"__metadata__":null}`, nil), "", nil},
		{"scalar", rawFile(`{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}`, []byte{0, 0, 0x80, 0x3f}), "s", []float32{1}},
		{"zero-size", rawFile(`{"z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"s":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, []byte{0, 0, 0x80, 0x3f}), "z", []float32{}},
		{"extra field", rawFile(`{"s":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":{"y":[1,{}]}}}`, []byte{0, 0, 0x80, 0x3f}), "s", []float32{1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Open(writeRaw(t, "ok.safetensors", c.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if c.tensor == "" {
				return
			}
			got, err := f.Float32(c.tensor)
			if err != nil || len(got) != len(c.want) || (len(got) > 0 && got[0] != c.want[0]) {
				t.Errorf("Float32 = %v, %v; want %v", got, err, c.want)
			}
		})
	}
}
