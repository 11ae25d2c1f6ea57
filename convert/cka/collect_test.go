package cka

import (
	"bytes"
	"context"
	"image/png"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/forward"
	"github.com/lorasync/lorasync/convert/lorasuite"
	"github.com/lorasync/lorasync/convert/tokenizer"
)

// chainModel is a fake forward pass with residual-style layers:
// h_0 = E[id], h_{l+1} = h_l + 0.8 tanh(h_l W_l), so neighbouring layers are
// similar and distant ones less so, as in real transformers. A view model
// reports, as its layer i, Q_i h_{pick[i]} scaled by 3: orthogonal maps and
// scaling leave CKA unchanged, so its layers are a known subsequence of the
// chain's.
type chainModel struct {
	emb  *mat.Dense   // vocab x d
	ws   []*mat.Dense // d x d per layer
	pick []int        // nil: report every layer; else layer i is chain layer pick[i]
	qs   []*mat.Dense // orthogonal d x d per reported layer (views only)
}

func newChain(rng *rand.Rand, vocab, d, layers int) *chainModel {
	c := &chainModel{emb: randMat(rng, vocab, d)}
	for l := 0; l < layers; l++ {
		w := randMat(rng, d, d)
		w.Scale(1/math.Sqrt(float64(d)), w)
		c.ws = append(c.ws, w)
	}
	return c
}

func (c *chainModel) view(rng *rand.Rand, pick []int) *chainModel {
	v := *c
	v.pick = pick
	_, d := c.emb.Dims()
	v.qs = nil
	for range pick {
		v.qs = append(v.qs, randOrthogonal(rng, d))
	}
	return &v
}

func (c *chainModel) layers() int {
	if c.pick != nil {
		return len(c.pick)
	}
	return len(c.ws)
}

func (c *chainModel) Walk(ctx context.Context, seqs [][]int, opts forward.Options, visit forward.Visit) error {
	_, d := c.emb.Dims()
	hs := make([]*mat.Dense, len(seqs))
	for k, ids := range seqs {
		h := mat.NewDense(len(ids), d, nil)
		for i, id := range ids {
			h.SetRow(i, c.emb.RawRowView(id))
		}
		hs[k] = h
	}
	states := make([][]*mat.Dense, len(c.ws)) // chain layer -> per sequence
	for l, w := range c.ws {
		for k, h := range hs {
			var t mat.Dense
			t.Mul(h, w)
			t.Apply(func(_, _ int, v float64) float64 { return 0.8 * math.Tanh(v) }, &t)
			var next mat.Dense
			next.Add(h, &t)
			hs[k] = &next
		}
		states[l] = append([]*mat.Dense(nil), hs...)
	}
	for i := 0; i < c.layers(); i++ {
		src, q := i, (*mat.Dense)(nil)
		if c.pick != nil {
			src, q = c.pick[i], c.qs[i]
		}
		out := make([][]float32, len(seqs))
		for k, h := range states[src] {
			x := h
			if q != nil {
				var xq mat.Dense
				xq.Mul(h, q)
				xq.Scale(3, &xq)
				x = &xq
			}
			raw := make([]float32, 0, len(seqs[k])*d)
			for r := 0; r < len(seqs[k]); r++ {
				for _, v := range x.RawRowView(r) {
					raw = append(raw, float32(v))
				}
			}
			if opts.MeanPool {
				raw = forward.MeanPool(raw, d)
			}
			out[k] = raw
		}
		if err := visit(forward.LayerName(i), out); err != nil {
			return err
		}
	}
	return nil
}

func randSeqs(rng *rand.Rand, n, vocab, minLen, maxLen int) [][]int {
	seqs := make([][]int, n)
	for k := range seqs {
		s := make([]int, minLen+rng.IntN(maxLen-minLen+1))
		for i := range s {
			s[i] = rng.IntN(vocab)
		}
		seqs[k] = s
	}
	return seqs
}

// TestRecoversKnownSubsequence builds a shallow model whose layers are
// orthogonally rotated copies of chosen layers of a deep one, and checks
// that CKA plus lorasuite.DPLayerMap finds exactly those layers, in both
// directions and with both kinds of samples.
func TestRecoversKnownSubsequence(t *testing.T) {
	rng := rand.New(rand.NewPCG(2026, 5))
	deep := newChain(rng, 60, 24, 10)
	pick := []int{1, 4, 5, 8}
	shallow := deep.view(rng, pick)
	seqs := randSeqs(rng, 40, 60, 3, 9)
	for _, pool := range []Pooling{PoolTokens, PoolMean} {
		// new shallower: each new layer i takes old layer pick[i].
		sim, n, err := SimilarityOfSeqs(context.Background(), deep, deep.layers(), seqs, shallow, shallow.layers(), seqs, pool, 150)
		if err != nil {
			t.Fatal(err)
		}
		if pool == PoolTokens && n != 150 || pool == PoolMean && n != 40 {
			t.Errorf("pool %d: %d samples", pool, n)
		}
		for i, p := range pick {
			if v := sim.At(p, i); math.Abs(v-1) > 1e-6 {
				t.Errorf("pool %d: CKA(deep %d, shallow %d) = %.9f, want 1 (same layer up to rotation and scale)", pool, p, i, v)
			}
		}
		got, _, err := lorasuite.DPLayerMap(sim)
		if err != nil {
			t.Fatal(err)
		}
		var want []lorasuite.LayerPair
		for i, p := range pick {
			want = append(want, lorasuite.LayerPair{Old: p, New: i})
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("pool %d: deep -> shallow map %v, want %v", pool, got, want)
		}
		// old shallower: old layer i goes to new layer pick[i].
		sim2, _, err := SimilarityOfSeqs(context.Background(), shallow, shallow.layers(), seqs, deep, deep.layers(), seqs, pool, 150)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err = lorasuite.DPLayerMap(sim2)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			want[i] = lorasuite.LayerPair{Old: i, New: pick[i]}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("pool %d: shallow -> deep map %v, want %v", pool, got, want)
		}
	}
}

func TestRepresentationsShapes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	m := newChain(rng, 20, 6, 3)
	seqs := [][]int{{1, 2, 3}, {4}, {5, 6}}
	mean, err := Representations(context.Background(), m, seqs, 3, PoolMean, 0)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := Representations(context.Background(), m, seqs, 3, PoolTokens, 100)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := Representations(context.Background(), m, seqs, 3, PoolTokens, 3)
	if err != nil {
		t.Fatal(err)
	}
	for l := 0; l < 3; l++ {
		if r, c := mean[l].Dims(); r != 3 || c != 6 {
			t.Errorf("mean layer %d: %d x %d", l, r, c)
		}
		if r, _ := tok[l].Dims(); r != 6 {
			t.Errorf("tokens layer %d: %d rows, want 6", l, r)
		}
		// Sequence 0's mean is the mean of token rows 0..2.
		for j := 0; j < 6; j++ {
			avg := (tok[l].At(0, j) + tok[l].At(1, j) + tok[l].At(2, j)) / 3
			if math.Abs(mean[l].At(0, j)-avg) > 1e-6 {
				t.Fatalf("layer %d: pooled row differs from the mean of token rows", l)
			}
		}
		// 3 of 6 positions evenly spaced: 0, 2, 4 (seq 0 pos 0, seq 0 pos 2, seq 2 pos 0).
		for r, src := range []int{0, 2, 4} {
			if !reflect.DeepEqual(sub[l].RawRowView(r), tok[l].RawRowView(src)) {
				t.Errorf("layer %d: subsampled row %d is not token row %d", l, r, src)
			}
		}
	}
	if got := spread(10, 4); !reflect.DeepEqual(got, []int{0, 2, 5, 7}) {
		t.Errorf("spread(10, 4) = %v", got)
	}
	if _, err := Representations(context.Background(), m, seqs, 4, PoolMean, 0); err == nil {
		t.Error("asking for more layers than the model has was accepted")
	}
}

// TestSimilarityPooling runs Similarity with real tokenizer files: the same
// tokenizer gives token samples, different ones per-line means, and a model
// against itself gives ones on the diagonal.
func TestSimilarityPooling(t *testing.T) {
	bl, err := tokenizer.Load(filepath.Join("..", "tokenizer", "testdata", "bytelevel.json"))
	if err != nil {
		t.Fatal(err)
	}
	sp, err := tokenizer.Load(filepath.Join("..", "tokenizer", "testdata", "sentencepiece.json"))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	m := newChain(rng, 20, 8, 3)
	lines := []string{"the the", "A the", "the\nA the", "A", "the the the", "he A"}
	a := Side{Model: m, Layers: 3, Tokenizer: bl}
	res, err := Similarity(context.Background(), a, a, Options{Lines: lines})
	if err != nil {
		t.Fatal(err)
	}
	if res.Pool != PoolTokens || res.Lines != len(lines) {
		t.Errorf("same tokenizer: pool %d, %d lines", res.Pool, res.Lines)
	}
	for i := 0; i < 3; i++ {
		if v := res.Sim.At(i, i); math.Abs(v-1) > 1e-9 {
			t.Errorf("self-similarity of layer %d = %g", i, v)
		}
	}
	b := Side{Model: m, Layers: 3, Tokenizer: sp}
	res, err = Similarity(context.Background(), a, b, Options{Lines: lines})
	if err != nil {
		t.Fatal(err)
	}
	if res.Pool != PoolMean || res.Samples != len(lines) {
		t.Errorf("different tokenizers: pool %d, %d samples", res.Pool, res.Samples)
	}
	if _, err := Similarity(context.Background(), a, b, Options{Lines: lines, Pool: PoolTokens}); err == nil {
		t.Error("PoolTokens with different tokenisations accepted")
	}
}

func TestBuiltinCalibration(t *testing.T) {
	lines := Builtin()
	if len(lines) < 200 {
		t.Errorf("built-in calibration has %d lines, want a few hundred", len(lines))
	}
	seen := map[string]bool{}
	for _, l := range lines {
		if seen[l] {
			t.Errorf("duplicate calibration line %q", l)
		}
		seen[l] = true
	}
	if _, err := ReadLines(filepath.Join(t.TempDir(), "missing.txt")); err == nil {
		t.Error("missing calibration file accepted")
	}
}

func TestHeatmap(t *testing.T) {
	sim := mat.NewDense(2, 3, []float64{0, 0.5, 1, 1, math.NaN(), 2})
	var buf bytes.Buffer
	path := []lorasuite.LayerPair{{Old: 0, New: 0}, {Old: 1, New: 2}}
	if err := Heatmap(&buf, sim, path); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	c, x0, y0 := heatLayout(2, 3)
	if b := img.Bounds(); b.Dx() < x0+3*c || b.Dy() < y0+2*c {
		t.Fatalf("image %v too small for a %d-pixel grid of 2 x 3 at (%d, %d)", b, c, x0, y0)
	}
	at := func(i, j int) [3]uint32 { // centre of cell (i, j)
		r, g, b, _ := img.At(x0+j*c+c/2, y0+i*c+c/2).RGBA()
		return [3]uint32{r >> 8, g >> 8, b >> 8}
	}
	if got := at(0, 1); got != [3]uint32{33, 145, 140} {
		t.Errorf("0.5 drawn as %v, want viridis midpoint", got)
	}
	if got := at(1, 0); got != [3]uint32{253, 231, 37} {
		t.Errorf("1 drawn as %v, want yellow", got)
	}
	if got := at(1, 2); got != [3]uint32{253, 231, 37} {
		t.Errorf("2 (clamped) drawn as %v, want yellow", got)
	}
	if got := at(1, 1); got != [3]uint32{0, 0, 0} {
		t.Errorf("NaN drawn as %v, want black", got)
	}
	r, _, _, _ := img.At(x0+2*c, y0+c).RGBA() // top-left corner of path cell (1, 2)
	if r>>8 != 230 {
		t.Errorf("path cell (1,2) not outlined in red")
	}
	r, _, _, _ = img.At(x0+c, y0).RGBA() // corner of cell (0, 1): not on the path
	if r>>8 == 230 {
		t.Errorf("cell (0,1) outlined but not on the path")
	}
	if err := Heatmap(&buf, sim, []lorasuite.LayerPair{{Old: 2, New: 0}}); err == nil {
		t.Error("pair outside the matrix accepted")
	}
}

// The colour scale spans the matrix's own range, so typical CKA matrices
// (all values in 0.6-0.9) still show their structure.
func TestHeatmapScalesToRange(t *testing.T) {
	sim := mat.NewDense(1, 3, []float64{0.6, 0.7, 0.8})
	var buf bytes.Buffer
	if err := Heatmap(&buf, sim, nil); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	c, x0, y0 := heatLayout(1, 3)
	for j, want := range [][3]uint32{{68, 1, 84}, {33, 145, 140}, {253, 231, 37}} {
		r, g, b, _ := img.At(x0+j*c+c/2, y0+c/2).RGBA()
		if got := [3]uint32{r >> 8, g >> 8, b >> 8}; got != want {
			t.Errorf("cell %d drawn as %v, want %v", j, got, want)
		}
	}
}
