package lorasuite

import (
	"context"
	"fmt"
	"math"
)

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
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("lorasuite: %s layer %d %s[%d, %d] is %v", side, layer, c.name, i/c.cols, i%c.cols, v)
			}
		}
	}
	return nil
}
