package forward

import (
	"github.com/lorasync/lorasync/convert/arch"
)

// layerWeights is one decoder layer converted to float32. Matrices are
// out x in row-major (arch.Config.Shape); biases and norms are vectors.
type layerWeights struct {
	inNorm, postNorm []float32 // Hidden
	qNorm, kNorm     []float32 // HeadDim, qwen3 only
	w, b             map[arch.Role][]float32
}

// loadLayer converts layer l's tensors.
func (m *Model) loadLayer(l int) (*layerWeights, error) {
	c := m.cfg
	lw := &layerWeights{w: map[arch.Role][]float32{}, b: map[arch.Role][]float32{}}
	var err error
	if lw.inNorm, err = m.tensor(c.InputNorm(l)); err != nil {
		return nil, err
	}
	if lw.postNorm, err = m.tensor(c.PostAttnNorm(l)); err != nil {
		return nil, err
	}
	if name := c.QNorm(l); name != "" {
		if lw.qNorm, err = m.tensor(name); err != nil {
			return nil, err
		}
	}
	if name := c.KNorm(l); name != "" {
		if lw.kNorm, err = m.tensor(name); err != nil {
			return nil, err
		}
	}
	for _, r := range arch.Roles {
		if lw.w[r], err = m.tensor(c.Weight(l, r)); err != nil {
			return nil, err
		}
		if name := c.Bias(l, r); name != "" {
			if lw.b[r], err = m.tensor(name); err != nil {
				return nil, err
			}
		}
	}
	return lw, nil
}

// layer runs one decoder layer on a batch of sequences, hs[k] being
// sequence k's hidden state (s_k x Hidden), and returns the new states
// (Hugging Face LlamaDecoderLayer / Qwen3DecoderLayer):
//
//	x = RMSNorm(h); q,k,v = x Wq^T (+b), x Wk^T (+b), x Wv^T (+b)
//	qwen3: q, k = RMSNorm_head(q), RMSNorm_head(k); then RoPE on q and k
//	h = h + attention(q, k, v) Wo^T
//	x = RMSNorm(h); h = h + (silu(x Wg^T) * (x Wu^T)) Wd^T
//
// The projections run on all rows of the batch at once (one tall GEMM per
// weight, which BLAS runs far more efficiently than one per sequence); RoPE
// positions and attention stay per sequence.
func (m *Model) layer(w *layerWeights, hs [][]float32, rope *ropeTable) [][]float32 {
	c := m.cfg
	d, hd := c.Hidden, c.HeadDim
	rs := m.residualScale()
	rows := 0
	for _, h := range hs {
		rows += len(h) / d
	}
	h := make([]float32, 0, rows*d)
	for _, x := range hs {
		h = append(h, x...)
	}

	x := rmsNorm(h, d, w.inNorm, c.RMSNormEps)
	qOut, _ := c.Shape(arch.Q)
	kvOut, _ := c.Shape(arch.K)
	q := linear(x, rows, d, w.w[arch.Q], qOut, w.b[arch.Q])
	k := linear(x, rows, d, w.w[arch.K], kvOut, w.b[arch.K])
	v := linear(x, rows, d, w.w[arch.V], kvOut, w.b[arch.V])
	if w.qNorm != nil {
		q = rmsNorm(q, hd, w.qNorm, c.RMSNormEps)
		k = rmsNorm(k, hd, w.kNorm, c.RMSNormEps)
	}
	a := make([]float32, rows*qOut)
	r0 := 0
	for _, hk := range hs {
		s := len(hk) / d
		qs, ks, vs := q[r0*qOut:(r0+s)*qOut], k[r0*kvOut:(r0+s)*kvOut], v[r0*kvOut:(r0+s)*kvOut]
		rope.apply(qs, s, c.Heads)
		rope.apply(ks, s, c.KVHeads)
		copy(a[r0*qOut:], attention(qs, ks, vs, s, c.Heads, c.KVHeads, hd, c.SlidingWindow))
		r0 += s
	}
	o := linear(a, rows, qOut, w.w[arch.O], d, w.b[arch.O])
	for i := range h {
		h[i] += rs * o[i]
	}

	x = rmsNorm(h, d, w.postNorm, c.RMSNormEps)
	gate := linear(x, rows, d, w.w[arch.Gate], c.Intermediate, w.b[arch.Gate])
	up := linear(x, rows, d, w.w[arch.Up], c.Intermediate, w.b[arch.Up])
	for i := range gate {
		gate[i] = silu(gate[i]) * up[i]
	}
	down := linear(gate, rows, c.Intermediate, w.w[arch.Down], d, w.b[arch.Down])
	out := make([][]float32, len(hs))
	r0 = 0
	for k, hk := range hs {
		n := len(hk)
		o := h[r0 : r0+n : r0+n]
		for i := range o {
			o[i] += rs * down[r0+i]
		}
		out[k] = o
		r0 += n
	}
	return out
}
