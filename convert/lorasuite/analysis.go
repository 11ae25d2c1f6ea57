package lorasuite

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/linalg"
)

// Options tune Analyze.
type Options struct {
	// HeadTransfer selects the per-head transfer blocks; "" means HeadLstsq.
	HeadTransfer HeadTransfer
	// Progress, if set, is called after each layer pair with (done, total).
	Progress func(done, total int)
	// Float64 runs the big per-layer products (W_o W_x and M = W_o W_x W_n^T)
	// in float64. By default they run in float32 (Sgemm, ~2x faster, half
	// the memory traffic): the base weights are float32 views of bf16
	// tensors, whose 2^-9 relative precision is ~1000x coarser than the
	// ~1e-6 relative error of a float32 product over d = 4096 terms. The
	// h x h blocks, Gram blocks and solves are float64 either way.
	Float64 bool
}

// PairAnalysis is everything the migration needs that depends only on the
// old and new base models (steps 1-4 minus the adapter). Compute it once per
// (old, new) pair with Analyze, persist it (all fields are exported plain
// data: gob-encodable, *mat.Dense implements encoding.BinaryMarshaler), and
// Project any number of adapters through it.
//
// Size: W_x (d_o x d_n float64) plus, per layer pair, four roles x H_n blocks
// of h_o x h_n float64 and an H_o x H_n similarity matrix: 128 MB + 32 x 17 MB
// = ~0.67 GB for Llama-2-7B -> Llama-3-8B.
type PairAnalysis struct {
	// Old and New are the two models' attention dimensions.
	Old, New Dims
	// Transfer is W_x (step 1).
	Transfer *Transfer
	// HeadTransfer is the method the T blocks were computed with.
	HeadTransfer HeadTransfer
	// LayerMap is the layer pairs (step 2), strictly increasing on both sides.
	LayerMap []LayerPair
	// Layers[i] analyses LayerMap[i].
	Layers []LayerAnalysis
}

// layerFor returns the analysis whose old layer is old, or nil.
func (pa *PairAnalysis) layerFor(old int) *LayerAnalysis {
	for i := range pa.Layers {
		if pa.Layers[i].Old == old {
			return &pa.Layers[i]
		}
	}
	return nil
}

// Validate checks that pa is internally consistent: dimensions, the transfer
// matrix's shape, the layer map, and every per-layer record's lengths and
// block shapes. Project and ProjectMLP call it, so that a corrupt or stale
// cached analysis gives an error instead of a panic. Cost O(layers x heads).
func (pa *PairAnalysis) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("lorasuite: invalid pair analysis: "+format, args...)
	}
	if err := pa.Old.Validate(); err != nil {
		return bad("old model: %w", err)
	}
	if err := pa.New.Validate(); err != nil {
		return bad("new model: %w", err)
	}
	tr := pa.Transfer
	switch {
	case tr == nil:
		return bad("no transfer matrix")
	case tr.DOld != pa.Old.Hidden || tr.DNew != pa.New.Hidden:
		return bad("transfer matrix is %d x %d, hidden sizes %d -> %d", tr.DOld, tr.DNew, pa.Old.Hidden, pa.New.Hidden)
	case tr.Identity && tr.DOld != tr.DNew:
		return bad("identity transfer between hidden sizes %d and %d", tr.DOld, tr.DNew)
	case !tr.Identity && tr.W == nil:
		return bad("transfer matrix missing")
	}
	if !tr.Identity {
		if r, c := tr.W.Dims(); r != tr.DOld || c != tr.DNew {
			return bad("transfer matrix W is %d x %d, want %d x %d", r, c, tr.DOld, tr.DNew)
		}
	}
	if err := validateLayerMap(pa.LayerMap, pa.Old.Layers, pa.New.Layers); err != nil {
		return bad("%w", err)
	}
	if len(pa.Layers) != len(pa.LayerMap) {
		return bad("%d layer records for %d layer pairs", len(pa.Layers), len(pa.LayerMap))
	}
	ho, hn, hOld, hNew := pa.Old.HeadDim, pa.New.HeadDim, pa.Old.Heads, pa.New.Heads
	for i := range pa.Layers {
		la := &pa.Layers[i]
		if la.Old != pa.LayerMap[i].Old || la.New != pa.LayerMap[i].New {
			return bad("layer record %d is %d -> %d, layer map says %d -> %d", i, la.Old, la.New, pa.LayerMap[i].Old, pa.LayerMap[i].New)
		}
		if len(la.HeadMap) != hNew {
			return bad("layer %d: head map has %d entries, want %d", la.Old, len(la.HeadMap), hNew)
		}
		if la.Similarity == nil {
			return bad("layer %d: no head similarity matrix", la.Old)
		}
		if r, c := la.Similarity.Dims(); r != hOld || c != hNew {
			return bad("layer %d: head similarity is %d x %d, want %d x %d", la.Old, r, c, hOld, hNew)
		}
		for b, a := range la.HeadMap {
			if a < -1 || a >= hOld {
				return bad("layer %d: head map entry %d = %d out of range", la.Old, b, a)
			}
		}
		for _, r := range []struct {
			name       string
			rb         *RoleBlocks
			srcs       int
			rows, cols int
		}{
			{"q_proj", &la.Q, hOld, hn, ho},
			{"k_proj", &la.K, pa.Old.KVHeads, hn, ho},
			{"v_proj", &la.V, pa.Old.KVHeads, hn, ho},
			{"o_proj", &la.O, hOld, ho, hn},
		} {
			rb := r.rb
			if len(rb.Src) != hNew || len(rb.T) != hNew || len(rb.Residual) != hNew || len(rb.Gain) != hNew {
				return bad("layer %d %s: per-head records are not all of length %d", la.Old, r.name, hNew)
			}
			for b, src := range rb.Src {
				t := rb.T[b]
				switch {
				case src < -1 || src >= r.srcs:
					return bad("layer %d %s head %d: source %d out of range", la.Old, r.name, b, src)
				case src == -1 && !t.Empty():
					return bad("layer %d %s head %d: block without a source", la.Old, r.name, b)
				case src >= 0 && (t.Rows != r.rows || t.Cols != r.cols || len(t.Data) != r.rows*r.cols):
					return bad("layer %d %s head %d: block is %d x %d with %d values, want %d x %d", la.Old, r.name, b, t.Rows, t.Cols, len(t.Data), r.rows, r.cols)
				}
			}
		}
	}
	return nil
}

// Analyze computes the pair analysis: for each pair of layerMap it reads the
// old layer from oldSrc and the new one from newSrc (in increasing order, one
// of each held at a time), forms the factored products M_Q, M_K, M_V, M_O
// with the Gram blocks, the head similarity, the Hungarian head assignment
// and the per-head transfer blocks. tr must be d_o x d_n.
//
// Cost per layer pair: 2 (2 H_o h_o + 2 G_o h_o) d_o d_n flops for the
// products with W_x (a copy when W_x = I) plus 2 h_o h_n (2 H_o H_n + 2 G_o G_n)
// d_n for the M blocks: ~0.9 TFLOP for Llama-2-7B -> Llama-3-8B, run as
// float32 GEMMs (~5 s per layer at OpenBLAS's ~180 GFLOP/s on 2 idle cores;
// 8-20 s measured on a shared, loaded machine). Memory besides the result:
// W_x (float64 + a float32 copy) and ~0.6 GB of scratch buffers reused from
// layer to layer at d = 4096; the caller's two float32 layers come on top.
// Go's GC may let the heap grow to twice the live set: a process that must
// stay under a budget should set GOMEMLIMIT (debug.SetMemoryLimit); a 4-layer
// Llama-size run peaks at 1.4 GB RSS with a 1400 MiB limit, 2.2 GB without.
func Analyze(ctx context.Context, oldDims, newDims Dims, tr *Transfer, layerMap []LayerPair,
	oldSrc, newSrc LayerSource, opts Options) (*PairAnalysis, error) {
	if err := oldDims.Validate(); err != nil {
		return nil, fmt.Errorf("old model: %w", err)
	}
	if err := newDims.Validate(); err != nil {
		return nil, fmt.Errorf("new model: %w", err)
	}
	if tr == nil || tr.DOld != oldDims.Hidden || tr.DNew != newDims.Hidden {
		return nil, fmt.Errorf("lorasuite: transfer matrix shape does not match hidden sizes %d -> %d", oldDims.Hidden, newDims.Hidden)
	}
	if err := validateLayerMap(layerMap, oldDims.Layers, newDims.Layers); err != nil {
		return nil, err
	}
	method := opts.HeadTransfer
	if method == "" {
		method = HeadLstsq
	}
	if method != HeadLstsq && method != HeadGram {
		return nil, fmt.Errorf("lorasuite: unknown head transfer %q (want %q or %q)", method, HeadLstsq, HeadGram)
	}
	pa := &PairAnalysis{
		Old: oldDims, New: newDims, Transfer: tr, HeadTransfer: method,
		LayerMap: append([]LayerPair(nil), layerMap...),
		Layers:   make([]LayerAnalysis, 0, len(layerMap)),
	}
	sc := &scratch{}
	for i, lp := range layerMap {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ow, err := oldSrc.Layer(ctx, lp.Old)
		if err != nil {
			return nil, fmt.Errorf("lorasuite: reading old layer %d: %w", lp.Old, err)
		}
		if err := checkWeights(ow, oldDims, "old", lp.Old); err != nil {
			return nil, err
		}
		nw, err := newSrc.Layer(ctx, lp.New)
		if err != nil {
			return nil, fmt.Errorf("lorasuite: reading new layer %d: %w", lp.New, err)
		}
		if err := checkWeights(nw, newDims, "new", lp.New); err != nil {
			return nil, err
		}
		la, err := analyzeLayer(ctx, ow, nw, oldDims, newDims, tr, method, opts, sc)
		if err != nil {
			return nil, fmt.Errorf("lorasuite: layer pair %d -> %d: %w", lp.Old, lp.New, err)
		}
		la.Old, la.New = lp.Old, lp.New
		pa.Layers = append(pa.Layers, *la)
		if opts.Progress != nil {
			opts.Progress(i+1, len(layerMap))
		}
	}
	return pa, nil
}

// analyzeLayer runs steps 3 and 4 (base side) for one layer pair.
func analyzeLayer(ctx context.Context, ow, nw *LayerWeights, od, nd Dims, tr *Transfer, method HeadTransfer, opts Options, sc *scratch) (*LayerAnalysis, error) {
	ho, hn := od.HeadDim, nd.HeadDim
	// One role at a time, so that only one float64 old weight and its
	// product with W_x are alive besides the M blocks.
	f64 := opts.Float64
	// ctx is checked between the products (each a few seconds at d = 4096).
	q := products(ow.Q, od.Heads*ho, nw.Q, nd.Heads*hn, tr, ho, hn, f64, sc, 0)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	k := products(ow.K, od.KVHeads*ho, nw.K, nd.KVHeads*hn, tr, ho, hn, f64, sc, 1)
	v := products(ow.V, od.KVHeads*ho, nw.V, nd.KVHeads*hn, tr, ho, hn, f64, sc, 2)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// o_proj: work with O^T (heads x hidden) so that heads are row blocks:
	// P_O = O_o^T W_x and M_O = P_O O_n = O_o^T W_x O_n.
	sc.tOld = transpose32(sc.tOld, ow.O, od.Hidden, od.Heads*ho)
	sc.tNew = transpose32(sc.tNew, nw.O, nd.Hidden, nd.Heads*hn)
	o := products(sc.tOld, od.Heads*ho, sc.tNew, nd.Heads*hn, tr, ho, hn, f64, sc, 3)

	la := &LayerAnalysis{Similarity: headSimilarity(q, k, v, o, od, nd)}
	rowToCol, _, err := Assign(la.Similarity)
	if err != nil {
		return nil, err
	}
	la.HeadMap = make([]int, nd.Heads)
	for b := range la.HeadMap {
		la.HeadMap[b] = -1
	}
	for a, b := range rowToCol {
		if b < 0 {
			la.DroppedOld = append(la.DroppedOld, a)
			continue
		}
		la.HeadMap[b] = a
	}
	// The four roles' per-head solves are independent: one goroutine each.
	// They are thousands of small h x h calls (a Cholesky solve, a product
	// and a singular-value decomposition per head), which OpenBLAS would
	// each spread over its thread pool, four callers spinning against each
	// other; single-threaded BLAS for this phase lets the goroutines be the
	// parallelism (the big GEMMs above are done).
	release := linalg.SerialBLAS()
	defer release()
	roles := []struct {
		name  string
		dst   *RoleBlocks
		p     *roleProducts
		kv    bool
		byCol bool
	}{
		{"q_proj", &la.Q, q, false, false},
		{"k_proj", &la.K, k, true, false},
		{"v_proj", &la.V, v, true, false},
		{"o_proj", &la.O, o, false, true},
	}
	errs := make([]error, len(roles))
	var wg sync.WaitGroup
	for i, r := range roles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rb := RoleBlocks{
				Src: make([]int, nd.Heads), T: make([]Block, nd.Heads),
				Residual: make([]float64, nd.Heads), Gain: make([]float64, nd.Heads),
			}
			for b, a := range la.HeadMap {
				rb.Src[b], rb.Residual[b], rb.Gain[b] = -1, -1, -1
				if a < 0 {
					continue
				}
				src, dstBlock := a, b
				if r.kv {
					src, dstBlock = od.kvOf(a), nd.kvOf(b)
				}
				t, res, err := headTransfer(r.p, src, dstBlock, method, r.byCol)
				if err == nil {
					rb.Gain[b], err = spectralNorm(t)
				}
				if err != nil {
					errs[i] = fmt.Errorf("%s old head %d -> new head %d: %w", r.name, a, b, err)
					return
				}
				rb.Src[b], rb.T[b], rb.Residual[b] = src, blockOf(t), res
			}
			*r.dst = rb
		}()
	}
	wg.Wait()
	release()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return la, nil
}

// spectralNorm returns ||t||_2, the largest singular value.
func spectralNorm(t *mat.Dense) (float64, error) {
	s, err := linalg.SingularValues(t)
	if err != nil {
		return 0, err
	}
	if len(s) == 0 {
		return 0, nil
	}
	return s[0], nil
}

// Dims describes the attention shape of one base model.
type Dims struct {
	// Hidden is d, the residual-stream width.
	Hidden int
	// Layers is the number of decoder layers.
	Layers int
	// Heads is H, the number of attention (query) heads.
	Heads int
	// KVHeads is G, the number of key/value heads (G == H without GQA); H % G == 0.
	KVHeads int
	// HeadDim is h (config.json head_dim; not always d/H).
	HeadDim int
}

// Validate reports a descriptive error for impossible dimensions.
func (d Dims) Validate() error {
	switch {
	case d.Hidden <= 0 || d.Layers <= 0 || d.Heads <= 0 || d.KVHeads <= 0 || d.HeadDim <= 0:
		return fmt.Errorf("lorasuite: dimensions must be positive: %+v", d)
	case d.Heads%d.KVHeads != 0:
		return fmt.Errorf("lorasuite: %d attention heads are not a multiple of %d KV heads", d.Heads, d.KVHeads)
	}
	return nil
}

// group returns H/G, the number of attention heads sharing one KV head.
func (d Dims) group() int { return d.Heads / d.KVHeads }

// kvOf returns the KV head that attention head j uses (repeat_interleave
// semantics: j / (H/G)).
func (d Dims) kvOf(j int) int { return j / d.group() }

// LayerWeights holds one decoder layer's attention projections as row-major
// float32 in PyTorch layout (out x in):
//
//	Q: (Heads*HeadDim) x Hidden
//	K: (KVHeads*HeadDim) x Hidden
//	V: (KVHeads*HeadDim) x Hidden
//	O: Hidden x (Heads*HeadDim)
//
// The slices are only read, and only during the call they are passed to.
type LayerWeights struct {
	Q, K, V, O []float32
}

// LayerSource yields one decoder layer's weights at a time, so that a caller
// can stream layers from mmap'ed files without holding the model. Analyze
// holds at most one old and one new layer at once; it asks for layers in
// increasing order, each at most once. Errors should name the layer/tensor.
type LayerSource interface {
	Layer(ctx context.Context, i int) (*LayerWeights, error)
}

// checkWeights validates sizes and finiteness of a layer against dims.
func checkWeights(w *LayerWeights, d Dims, side string, layer int) error {
	if w == nil {
		return fmt.Errorf("lorasuite: %s layer %d: no weights", side, layer)
	}
	qh, kh := d.Heads*d.HeadDim, d.KVHeads*d.HeadDim
	for _, c := range []struct {
		name string
		data []float32
		rows int
		cols int
	}{
		{"q_proj", w.Q, qh, d.Hidden},
		{"k_proj", w.K, kh, d.Hidden},
		{"v_proj", w.V, kh, d.Hidden},
		{"o_proj", w.O, d.Hidden, qh},
	} {
		if len(c.data) != c.rows*c.cols {
			return fmt.Errorf("lorasuite: %s layer %d %s has %d values, want %d x %d", side, layer, c.name, len(c.data), c.rows, c.cols)
		}
		for i, v := range c.data {
			if v-v != 0 { // NaN or ±Inf: one subtraction instead of two classifications
				return fmt.Errorf("lorasuite: %s layer %d %s[%d, %d] is %v", side, layer, c.name, i/c.cols, i%c.cols, v)
			}
		}
	}
	return nil
}
