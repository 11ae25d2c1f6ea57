package forward

import (
	"fmt"
	"math"
	"runtime"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// linear computes y = x W^T (+ b): x is s x in, w is out x in (the PyTorch
// layout), b is nil or out long, and the result is s x out, all row-major.
func linear(x []float32, s, in int, w []float32, out int, b []float32) []float32 {
	return linearInto(make([]float32, s*out), x, s, in, w, out, b)
}

// linearInto is linear writing into y (s x out, overwritten) and returning it.
func linearInto(y, x []float32, s, in int, w []float32, out int, b []float32) []float32 {
	if len(x) != s*in || len(w) != out*in || (b != nil && len(b) != out) || len(y) != s*out {
		panic(fmt.Sprintf("forward: linear shape mismatch: x %d (want %dx%d), w %d (want %dx%d), b %d, y %d", len(x), s, in, len(w), out, in, len(b), len(y)))
	}
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
	return rmsNormInto(make([]float32, len(x)), x, dim, w, eps)
}

// rmsNormInto is rmsNorm writing into y (len(x), overwritten; y may be x),
// rows split over the available cores.
func rmsNormInto(y, x []float32, dim int, w []float32, eps float64) []float32 {
	if len(w) != dim || len(x)%dim != 0 || len(y) != len(x) {
		panic(fmt.Sprintf("forward: rmsNorm shape mismatch: x %d, dim %d, weight %d, y %d", len(x), dim, len(w), len(y)))
	}
	parallelFor(len(x)/dim, minParallelElems/max(dim, 1), func(lo, hi int) {
		for r := lo; r < hi; r++ {
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
	})
	return y
}

// silu is x * sigmoid(x) = x / (1 + e^-x), with exp32 (within a few float32
// ulps of the exact value, like PyTorch's vectorised expf). For x below
// about -88, e^-x is +Inf and the result the limit -0; above, e^-x
// underflows to 0 and the result is x.
func silu(x float32) float32 {
	return x / (1 + exp32(-x))
}

// siluMul sets gate[i] = silu(gate[i]) * up[i] (SwiGLU's elementwise part),
// split over the available cores.
func siluMul(gate, up []float32) {
	if len(gate) != len(up) {
		panic(fmt.Sprintf("forward: siluMul length mismatch: gate %d, up %d", len(gate), len(up)))
	}
	parallelFor(len(gate), minParallelElems, func(lo, hi int) {
		siluMulChunk(gate[lo:hi], up[lo:hi:hi])
	})
}

// exp32 is e^x in float32 arithmetic, within 2 ulp of the correctly rounded
// value over the whole float32 range (checked against math.Exp by
// TestExp32): Cody-Waite reduction x = n ln2 + r with |r| <= ln2/2 (ln2 split
// in two so n ln2 is exact), the degree-6 minimax polynomial of e^r (the
// classic Cephes expf coefficients), and the scaling by 2^n built in the
// exponent bits. It is several times faster than float64 math.Exp, which
// matters because SwiGLU evaluates it once per token per intermediate
// feature (about 10^9 times per CKA calibration of a 3B model).
func exp32(x float32) float32 {
	switch {
	case x != x: // NaN
		return x
	case x > expHi:
		return float32(math.Inf(1))
	case x < expLo:
		return 0
	}
	// n = round(x / ln2), in [-126, 128]
	n := float32(math.Floor(float64(x*log2e + 0.5)))
	r := x - n*ln2Hi
	r -= n * ln2Lo
	p := float32(1.9875691500e-4)
	p = p*r + 1.3981999507e-3
	p = p*r + 8.3334519073e-3
	p = p*r + 4.1665795894e-2
	p = p*r + 1.6666665459e-1
	p = p*r + 5.0000001201e-1
	y := p*r*r + r + 1
	// 2^n may be 2^128 (x just below expHi) or need a subnormal (x near
	// expLo): scale in two steps so both stay representable.
	k := int32(n)
	h := k / 2
	return y * math.Float32frombits(uint32(h+127)<<23) * math.Float32frombits(uint32(k-h+127)<<23)
}

const (
	log2e = 1.44269504088896341
	ln2Hi = 0.693359375          // ln2 to 9 bits, so n*ln2Hi is exact for |n| <= 2^15
	ln2Lo = -2.12194440e-4       // ln2 - ln2Hi
	expHi = 88.72283905206835    // ln(MaxFloat32)
	expLo = -103.972077083991796 // ln(smallest subnormal)
)

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
// The result is written into out (s x heads*hd), which is returned.
func attention(out, q, k, v []float32, s, heads, kvHeads, hd, window int) []float32 {
	if heads%kvHeads != 0 || len(q) != s*heads*hd || len(k) != s*kvHeads*hd || len(v) != len(k) || len(out) != len(q) {
		panic(fmt.Sprintf("forward: attention shape mismatch: heads %d, kv heads %d, head_dim %d, s %d, out %d", heads, kvHeads, hd, s, len(out)))
	}
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
				e := exp32(row[j] - m)
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

// minParallelElems is the least work (in float32 elements touched) worth a
// goroutine: below it the fixture-sized models stay on one goroutine.
const minParallelElems = 1 << 16

// parallelFor splits [0, n) into up to GOMAXPROCS contiguous chunks of at
// least minChunk items and runs fn on each concurrently, returning when all
// are done. fn must only write to its own chunk.
func parallelFor(n, minChunk int, fn func(lo, hi int)) {
	parts := min(runtime.GOMAXPROCS(0), n/max(minChunk, 1))
	if parts <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	for p := range parts {
		lo, hi := p*n/parts, (p+1)*n/parts
		wg.Go(func() { fn(lo, hi) })
	}
	wg.Wait()
}
