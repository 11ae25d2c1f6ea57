package safetensors

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// randValues returns n normal values including a few special ones.
func randValues(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	if n >= 4 {
		v[0], v[1], v[2], v[3] = 0, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN())
	}
	return v
}

// Round trip for each float dtype. Writing F32 must be exact; F16 and BF16 must
// equal the package's own encode-then-decode of each value (bitwise), which the
// dtype tests check against rounding rules.
func TestWriteReadRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	dir := t.TempDir()
	for _, dt := range []DType{F32, F16, BF16} {
		t.Run(string(dt), func(t *testing.T) {
			path := filepath.Join(dir, string(dt)+".safetensors")
			a := randValues(rng, 6*5)
			b := randValues(rng, 7)
			meta := map[string]string{"format": "pt", "note": "x<y&z"}
			err := WriteFile(path, []Tensor{
				FromFloat32("z.b", dt, []int{7}, b),
				FromFloat32("a.weight", dt, []int{6, 5}, a),
				FromFloat32("s", dt, nil, []float32{3}),
			}, meta)
			if err != nil {
				t.Fatal(err)
			}
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if !slices.Equal(f.Names(), []string{"a.weight", "s", "z.b"}) {
				t.Errorf("Names = %v", f.Names())
			}
			if m := f.Metadata(); m["format"] != "pt" || m["note"] != "x<y&z" || len(m) != 2 {
				t.Errorf("Metadata = %v", m)
			}
			for name, want := range map[string][]float32{"a.weight": a, "z.b": b, "s": {3}} {
				got, err := f.Float32(name)
				if err != nil {
					t.Fatal(err)
				}
				in, _ := f.Info(name)
				if in.DType != dt {
					t.Errorf("%s dtype %s", name, in.DType)
				}
				for i := range want {
					w := want[i]
					switch dt {
					case BF16:
						w = BF16ToFloat32(Float32ToBF16(w))
					case F16:
						w = decodeOne(F16, FromFloat32("", F16, []int{1}, []float32{w}).Data)
					}
					if math.IsNaN(float64(w)) != math.IsNaN(float64(got[i])) || (!math.IsNaN(float64(w)) && got[i] != w) {
						t.Errorf("%s[%d] = %v, want %v", name, i, got[i], w)
					}
				}
			}
		})
	}
}

func decodeOne(dt DType, b []byte) float32 {
	out := make([]float32, 1)
	if err := decodeFloat32(out, b, dt); err != nil {
		panic(err)
	}
	return out[0]
}

// The layout matches the reference library: header padded with spaces to a
// multiple of 8, tensors in name order with contiguous offsets.
func TestWriteLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.safetensors")
	err := WriteFile(path, []Tensor{
		FromFloat32("b", BF16, []int{1}, []float32{1}),
		FromFloat32("a", F32, []int{1}, []float32{1}),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	n := binary.LittleEndian.Uint64(raw)
	hdr := string(raw[8 : 8+n])
	want := `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[4,6]}}`
	if strings.TrimRight(hdr, " ") != want {
		t.Errorf("header %q, want %q", hdr, want)
	}
	if n%8 != 0 || len(hdr)-len(want) >= 8 {
		t.Errorf("header length %d not minimally padded to 8", n)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
}

// Invalid tensors are refused before anything touches the target, and no temp
// file is left behind.
func TestWriteFileRejects(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.safetensors")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	ok := FromFloat32("a", F32, []int{2}, []float32{1, 2})
	cases := map[string][]Tensor{
		"duplicate":     {ok, ok},
		"short data":    {{Name: "x", DType: F32, Shape: []int{3}, Data: make([]byte, 8)}},
		"unknown dtype": {{Name: "x", DType: "Q4", Shape: []int{1}, Data: make([]byte, 1)}},
		"negative dim":  {{Name: "x", DType: U8, Shape: []int{-1}}},
		"reserved name": {{Name: metadataKey, DType: U8, Shape: []int{1}, Data: []byte{1}}},
	}
	for name, ts := range cases {
		err := WriteFile(path, ts, nil)
		if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: err = %v, want ErrFormat naming %s", name, err, path)
		}
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Error("target modified by a failed write")
	}
	// A write into a missing directory fails without side effects.
	if err := WriteFile(filepath.Join(dir, "missing", "m.safetensors"), []Tensor{ok}, nil); err == nil {
		t.Error("write into missing dir succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("dir has %d entries, want only the target (temp file left?)", len(entries))
	}
}

// A successful write replaces an existing file.
func TestWriteFileReplaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.safetensors")
	for _, v := range []float32{1, 2} {
		if err := WriteFile(path, []Tensor{FromFloat32("a", F32, []int{1}, []float32{v})}, nil); err != nil {
			t.Fatal(err)
		}
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, _ := f.Float32("a"); got[0] != 2 {
		t.Errorf("a = %v, want 2", got)
	}
}

func TestFromFloat32Panics(t *testing.T) {
	for name, fn := range map[string]func(){
		"count": func() { FromFloat32("x", F32, []int{2, 2}, make([]float32, 3)) },
		"dtype": func() { FromFloat32("x", I32, []int{1}, make([]float32, 1)) },
	} {
		func() {
			defer func() {
				if r := recover(); r == nil || !strings.HasPrefix(r.(string), "safetensors:") {
					t.Errorf("%s: recover() = %v, want a safetensors: panic", name, r)
				}
			}()
			fn()
		}()
	}
}
