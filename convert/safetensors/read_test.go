package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const fixtureDir = "../../../shared/fixtures/tiny-llama"

// fixturePath locates the shared tiny-llama fixture, preferring the absolute
// location and falling back to the relative one.
func fixturePath(t *testing.T, name string) string {
	t.Helper()
	for _, dir := range []string{"/work/shared/fixtures/tiny-llama", fixtureDir} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("fixture %s not found", name)
	return ""
}

// rawHeader is an independent parse of a safetensors file with encoding/json, used
// to cross-check the token-walking parser on well-formed files.
type rawEntry struct {
	DType   string  `json:"dtype"`
	Shape   []int   `json:"shape"`
	Offsets []int64 `json:"data_offsets"`
}

func rawParse(t *testing.T, path string) (map[string]rawEntry, []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &m); err != nil {
		t.Fatal(err)
	}
	out := map[string]rawEntry{}
	for k, v := range m {
		if k == metadataKey {
			continue
		}
		var e rawEntry
		if err := json.Unmarshal(v, &e); err != nil {
			t.Fatal(err)
		}
		out[k] = e
	}
	return out, b[8+n:]
}

func TestOpenFixtureModel(t *testing.T) {
	path := fixturePath(t, "model.safetensors")
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	raw, data := rawParse(t, path)

	// 3 global tensors + 9 per layer x 2 layers, as config.json describes.
	if got := len(f.Names()); got != 21 {
		t.Fatalf("%d tensors, want 21", got)
	}
	if !slices.IsSorted(f.Names()) {
		t.Error("Names not sorted")
	}
	want := map[string][]int{
		"model.embed_tokens.weight":              {512, 64},
		"lm_head.weight":                         {512, 64},
		"model.norm.weight":                      {64},
		"model.layers.1.self_attn.k_proj.weight": {32, 64}, // 2 KV heads x head_dim 16
		"model.layers.0.mlp.down_proj.weight":    {64, 176},
	}
	for name, shape := range want {
		in, ok := f.Info(name)
		if !ok || !slices.Equal(in.Shape, shape) || in.DType != BF16 || in.File != path {
			t.Errorf("Info(%s) = %+v, %v; want BF16 %v", name, in, ok, shape)
		}
	}
	for _, name := range f.Names() {
		in, _ := f.Info(name)
		e := raw[name]
		if string(in.DType) != e.DType || !slices.Equal(in.Shape, e.Shape) || in.Begin != e.Offsets[0] || in.End != e.Offsets[1] {
			t.Errorf("%s: parsed %+v, encoding/json says %+v", name, in, e)
		}
		// Independent bf16 decode: two little-endian bytes are the top half of a float32.
		got, err := f.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		span := data[e.Offsets[0]:e.Offsets[1]]
		if len(got) != len(span)/2 {
			t.Fatalf("%s: %d values for %d bytes", name, len(got), len(span))
		}
		for i := range got {
			w := math.Float32frombits(uint32(span[2*i])<<16 | uint32(span[2*i+1])<<24)
			if math.Float32bits(got[i]) != math.Float32bits(w) {
				t.Fatalf("%s[%d] = %v, independent decode %v", name, i, got[i], w)
			}
		}
	}
	// Sanity on values: a randomly initialised layer norm weight is all ones.
	norm, _ := f.Float32("model.norm.weight")
	for i, v := range norm {
		if v != 1 {
			t.Fatalf("model.norm.weight[%d] = %v, want 1 (fresh RMSNorm init)", i, v)
		}
	}
}

func TestOpenFixtureActivations(t *testing.T) {
	f, err := Open(fixturePath(t, "expected_activations.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for name, shape := range map[string][]int{
		"embeddings": {1, 16, 64}, "layers.0": {1, 16, 64}, "layers.1": {1, 16, 64},
		"final_norm": {1, 16, 64}, "logits": {1, 16, 512}, "input_ids": {1, 16},
	} {
		in, ok := f.Info(name)
		wantDT := F32
		if name == "input_ids" {
			wantDT = I32
		}
		if !ok || !slices.Equal(in.Shape, shape) || in.DType != wantDT {
			t.Errorf("Info(%s) = %+v, want %s %v", name, in, wantDT, shape)
		}
	}
	// input_ids must equal the list in the meta file, an independent source.
	metaBytes, err := os.ReadFile(fixturePath(t, "expected_activations.meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		InputIDs []float32 `json:"input_ids"`
	}
	if err := json.Unmarshal(metaBytes, &meta); err != nil {
		t.Fatal(err)
	}
	ids, err := f.Float32("input_ids")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, meta.InputIDs) {
		t.Errorf("input_ids = %v, meta says %v", ids, meta.InputIDs)
	}
	// final_norm = RMSNorm(layers.1) with unit weight and eps 1e-5 (config.json):
	// recomputing it from another tensor of the file checks the F32 decode.
	// Tolerance 1e-5 relative: both sides are float32 computations of the same
	// formula, differing only in summation order.
	x, _ := f.Float32Rows("layers.1", 0, 1) // batch row 0: 16 x 64
	fn, _ := f.Float32Rows("final_norm", 0, 1)
	for r := 0; r < 16; r++ {
		row := x[r*64 : (r+1)*64]
		var ss float64
		for _, v := range row {
			ss += float64(v) * float64(v)
		}
		inv := 1 / math.Sqrt(ss/64+1e-5)
		for c, v := range row {
			want := float64(v) * inv
			if got := float64(fn[r*64+c]); math.Abs(got-want) > 1e-5*math.Max(1, math.Abs(want)) {
				t.Fatalf("final_norm[%d,%d] = %v, RMSNorm(layers.1) = %v", r, c, got, want)
			}
		}
	}
}

// Float32Rows must equal the matching slice of Float32 for every range.
func TestFloat32RowsMatchesSlice(t *testing.T) {
	f, err := Open(fixturePath(t, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const name = "model.embed_tokens.weight" // 512 x 64
	all, _ := f.Float32(name)
	for _, r := range [][2]int{{0, 0}, {0, 1}, {0, 512}, {100, 228}, {511, 512}, {7, 8}} {
		got, err := f.Float32Rows(name, r[0], r[1])
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, all[r[0]*64:r[1]*64]) {
			t.Errorf("rows %v differ from slice", r)
		}
	}
	for _, r := range [][2]int{{-1, 2}, {3, 2}, {0, 513}} {
		if _, err := f.Float32Rows(name, r[0], r[1]); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("rows %v: err = %v, want range error naming the tensor", r, err)
		}
	}
	if _, err := f.Float32Rows("nope", 0, 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing tensor: err = %v, want ErrNotFound", err)
	}
}

func TestFloat32IntoMatchesFloat32(t *testing.T) {
	f, err := Open(fixturePath(t, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const name = "model.embed_tokens.weight" // 512 x 64, bf16
	want, _ := f.Float32(name)
	dst := make([]float32, len(want))
	for i := range dst {
		dst[i] = float32(math.NaN()) // every element must be overwritten
	}
	if err := f.Float32Into(dst, name); err != nil || !slices.Equal(dst, want) {
		t.Errorf("Float32Into: err %v, equal %v", err, slices.Equal(dst, want))
	}
	for _, n := range []int{0, len(want) - 1, len(want) + 1} {
		if err := f.Float32Into(make([]float32, n), name); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("buffer of %d: err = %v, want a size error naming the tensor", n, err)
		}
	}
	if err := f.Float32Into(dst, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing tensor: err = %v, want ErrNotFound", err)
	}
}

func TestBytesIsZeroCopyView(t *testing.T) {
	path := fixturePath(t, "model.safetensors")
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.Bytes("model.norm.weight")
	if err != nil {
		t.Fatal(err)
	}
	_, data := rawParse(t, path)
	in, _ := f.Info("model.norm.weight")
	if !slices.Equal(b, data[in.Begin:in.End]) || cap(b) != len(b) {
		t.Errorf("Bytes differs from file span or has spare capacity")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Bytes("model.norm.weight"); err == nil {
		t.Error("Bytes after Close succeeded")
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
