package safetensors

import (
	"errors"
	"slices"
	"testing"
)

// FuzzParseHeader feeds arbitrary file images to the parser. It must never
// panic; every error must wrap ErrFormat; and an accepted header must describe
// tensors that tile the data buffer exactly with spans matching their shapes, so
// that Bytes and Float32 can slice without further checks. Seeds live in
// testdata/fuzz/FuzzParseHeader: hand-picked valid and malformed files.
func FuzzParseHeader(f *testing.F) {
	f.Add(rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parse("fuzz.safetensors", b)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			return
		}
		dataLen := int64(len(b)) - h.data
		if h.data < 8 || dataLen < 0 {
			t.Fatalf("data offset %d outside a %d-byte file", h.data, len(b))
		}
		if !slices.IsSorted(h.names) || len(h.names) != len(h.infos) {
			t.Fatalf("names %v inconsistent with %d infos", h.names, len(h.infos))
		}
		var total int64
		for _, name := range h.names {
			in := h.infos[name]
			if in.Begin < 0 || in.Begin > in.End || in.End > dataLen {
				t.Fatalf("%s: offsets [%d, %d] outside %d", name, in.Begin, in.End, dataLen)
			}
			if int64(in.NumElements()*in.DType.Size()) != in.End-in.Begin {
				t.Fatalf("%s: shape %v x %s != span %d", name, in.Shape, in.DType, in.End-in.Begin)
			}
			total += in.End - in.Begin
		}
		if total != dataLen {
			t.Fatalf("tensors cover %d of %d bytes", total, dataLen)
		}
	})
}
