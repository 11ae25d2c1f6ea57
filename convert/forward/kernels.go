package forward

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// linear computes y = x W^T (+ b): x is s x in, w is out x in (the PyTorch
// layout), b is nil or out long, and the result is s x out, all row-major.
func linear(x []float32, s, in int, w []float32, out int, b []float32) []float32 {
	if len(x) != s*in || len(w) != out*in || (b != nil && len(b) != out) {
		panic(fmt.Sprintf("forward: linear shape mismatch: x %d (want %dx%d), w %d (want %dx%d), b %d", len(x), s, in, len(w), out, in, len(b)))
	}
	y := make([]float32, s*out)
	if s == 0 || out == 0 {
		return y
	}
	if b != nil {
		for i := 0; i < s; i++ {
			copy(y[i*out:(i+1)*out], b)
		}
	}
	beta := float32(0)
	if b != nil {
		beta = 1
	}
	blas32.Gemm(blas.NoTrans, blas.Trans, 1,
		blas32.General{Rows: s, Cols: in, Stride: in, Data: x},
		blas32.General{Rows: out, Cols: in, Stride: in, Data: w},
		beta, blas32.General{Rows: s, Cols: out, Stride: out, Data: y})
	return y
}

// rmsNorm normalises each row of x (rows x dim) as Hugging Face's LlamaRMSNorm
// does in float32: x * rsqrt(mean(x^2) + eps) * weight. The mean of squares
// is accumulated in float64, which is at least as accurate as PyTorch's
// float32 reduction. The result is a new slice.
func rmsNorm(x []float32, dim int, w []float32, eps float64) []float32 {
	if len(w) != dim || len(x)%dim != 0 {
		panic(fmt.Sprintf("forward: rmsNorm shape mismatch: x %d, dim %d, weight %d", len(x), dim, len(w)))
	}
	y := make([]float32, len(x))
	for r := 0; r < len(x)/dim; r++ {
		row := x[r*dim : (r+1)*dim]
		var ss float64
		for _, v := range row {
			ss += float64(v) * float64(v)
		}
		inv := float32(1 / math.Sqrt(ss/float64(dim)+eps))
		out := y[r*dim : (r+1)*dim]
		for i, v := range row {
			out[i] = w[i] * (v * inv)
		}
	}
	return y
}

// silu is x * sigmoid(x).
func silu(x float32) float32 {
	return x / (1 + float32(math.Exp(float64(-x))))
}

// ropeTable holds cos and sin for positions 0..n-1, each n x headDim with the
// two halves repeated (Hugging Face's emb = cat(freqs, freqs)).
type ropeTable struct {
	headDim  int
	cos, sin []float32
}

// newRopeTable computes the rotary tables from the per-pair inverse
// frequencies (headDim/2 of them).
func newRopeTable(invFreq []float64, n int) *ropeTable {
	half := len(invFreq)
	t := &ropeTable{headDim: 2 * half, cos: make([]float32, n*2*half), sin: make([]float32, n*2*half)}
	for p := 0; p < n; p++ {
		for i, f := range invFreq {
			// Hugging Face forms the angle in float32 (inv_freq @ positions);
			// rounding it first keeps large positions bit-compatible.
			a := float64(float32(float64(p) * float64(float32(f))))
			c, s := float32(math.Cos(a)), float32(math.Sin(a))
			t.cos[p*2*half+i], t.cos[p*2*half+half+i] = c, c
			t.sin[p*2*half+i], t.sin[p*2*half+half+i] = s, s
		}
	}
	return t
}

// apply rotates every head of x (s x heads*headDim) in place with the
// rotate_half convention: for i < h/2, (x_i, x_{i+h/2}) becomes
// (x_i cos - x_{i+h/2} sin, x_{i+h/2} cos + x_i sin).
func (t *ropeTable) apply(x []float32, s, heads int) {
	h, half := t.headDim, t.headDim/2
	if len(x) != s*heads*h || len(t.cos) < s*h {
		panic(fmt.Sprintf("forward: rope shape mismatch: x %d, s %d, heads %d, head_dim %d, table %d", len(x), s, heads, h, len(t.cos)/h))
	}
	for p := 0; p < s; p++ {
		cs, sn := t.cos[p*h:(p+1)*h], t.sin[p*h:(p+1)*h]
		for hd := 0; hd < heads; hd++ {
			v := x[(p*heads+hd)*h : (p*heads+hd+1)*h]
			for i := 0; i < half; i++ {
				a, b := v[i], v[i+half]
				v[i] = a*cs[i] - b*sn[i]
				v[i+half] = b*cs[i+half] + a*sn[i+half]
			}
		}
	}
}

// attention computes causal scaled dot-product attention with grouped KV
// heads: q is s x heads*hd, k and v are s x kvHeads*hd, and query head j reads
// KV head j / (heads/kvHeads) (Hugging Face's repeat_kv). Position i attends
// to positions j <= i, and with window > 0 only to i - j < window (Mistral's
// sliding window). Scores and softmax are float32 with a float64 running sum.
// The result is s x heads*hd.
func attention(q, k, v []float32, s, heads, kvHeads, hd, window int) []float32 {
	if heads%kvHeads != 0 || len(q) != s*heads*hd || len(k) != s*kvHeads*hd || len(v) != len(k) {
		panic(fmt.Sprintf("forward: attention shape mismatch: heads %d, kv heads %d, head_dim %d, s %d", heads, kvHeads, hd, s))
	}
	out := make([]float32, s*heads*hd)
	if s == 0 {
		return out
	}
	group := heads / kvHeads
	scale := float32(1 / math.Sqrt(float64(hd)))
	scores := make([]float32, s*s)
	qs, ks := heads*hd, kvHeads*hd
	for h := 0; h < heads; h++ {
		g := h / group
		// scores = q_h k_g^T (s x s), using strided views of the packed heads.
		blas32.Gemm(blas.NoTrans, blas.Trans, scale,
			blas32.General{Rows: s, Cols: hd, Stride: qs, Data: q[h*hd:]},
			blas32.General{Rows: s, Cols: hd, Stride: ks, Data: k[g*hd:]},
			0, blas32.General{Rows: s, Cols: s, Stride: s, Data: scores})
		for i := 0; i < s; i++ {
			row := scores[i*s : (i+1)*s]
			lo := 0
			if window > 0 {
				lo = max(0, i-window+1)
			}
			m := row[lo]
			for j := lo + 1; j <= i; j++ {
				m = max(m, row[j])
			}
			var sum float64
			for j := lo; j <= i; j++ {
				e := float32(math.Exp(float64(row[j] - m)))
				row[j] = e
				sum += float64(e)
			}
			inv := float32(1 / sum)
			for j := lo; j <= i; j++ {
				row[j] *= inv
			}
			clear(row[:lo])  // outside the sliding window
			clear(row[i+1:]) // causal mask
		}
		// out_h = P v_g (s x hd), written into the packed output.
		blas32.Gemm(blas.NoTrans, blas.NoTrans, 1,
			blas32.General{Rows: s, Cols: s, Stride: s, Data: scores},
			blas32.General{Rows: s, Cols: hd, Stride: ks, Data: v[g*hd:]},
			0, blas32.General{Rows: s, Cols: hd, Stride: qs, Data: out[h*hd:]})
	}
	return out
}
