package forward

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/linalg"
)

// layerWeights is one decoder layer converted to float32. Matrices are
// out x in row-major (arch.Config.Shape); biases and norms are vectors.
type layerWeights struct {
	inNorm, postNorm []float32 // Hidden
	qNorm, kNorm     []float32 // HeadDim, qwen3 only
	w, b             map[arch.Role][]float32
}

// loadLayer converts layer l's tensors into arena (grown as needed; the
// returned weights are views of it, valid until the next loadLayer with the
// same arena), several at once: conversion from bf16 runs at memory speed on
// one core, and a 3B model's layers hold 77M parameters each.
func (m *Model) loadLayer(l int, arena *[]float32) (*layerWeights, error) {
	c := m.cfg
	type load struct {
		name string
		dst  *[]float32
	}
	lw := &layerWeights{w: map[arch.Role][]float32{}, b: map[arch.Role][]float32{}}
	w := make([][]float32, len(arch.Roles))
	b := make([][]float32, len(arch.Roles))
	loads := []load{{c.InputNorm(l), &lw.inNorm}, {c.PostAttnNorm(l), &lw.postNorm}}
	if name := c.QNorm(l); name != "" {
		loads = append(loads, load{name, &lw.qNorm})
	}
	if name := c.KNorm(l); name != "" {
		loads = append(loads, load{name, &lw.kNorm})
	}
	for i, r := range arch.Roles {
		loads = append(loads, load{c.Weight(l, r), &w[i]})
		if name := c.Bias(l, r); name != "" {
			loads = append(loads, load{name, &b[i]})
		}
	}
	total := 0
	for _, ld := range loads {
		in, ok := m.r.Info(ld.name)
		if !ok { // New checked the weights against the config
			return nil, fmt.Errorf("forward: %s: no tensor %q", c.Path, ld.name)
		}
		total += in.NumElements()
	}
	all := buf(arena, total)
	for _, ld := range loads {
		in, _ := m.r.Info(ld.name)
		n := in.NumElements()
		*ld.dst, all = all[:n:n], all[n:]
	}
	errs := make([]error, len(loads))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(loads)) {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(loads); i = int(next.Add(1)) - 1 {
				errs[i] = m.tensorInto(*loads[i].dst, loads[i].name)
			}
		})
	}
	wg.Wait()
	for _, err := range errs { // in load order, so the error reported is deterministic
		if err != nil {
			return nil, err
		}
	}
	for i, r := range arch.Roles {
		lw.w[r] = w[i]
		if b[i] != nil {
			lw.b[r] = b[i]
		}
	}
	return lw, nil
}

// scratch holds one layer call's intermediates, reused by every batch and
// layer of a Walk: they are the pass's largest allocations (the MLP's rows x
// Intermediate products are 90 MB each for 2048 rows of a 3B model), and
// allocating them afresh cost the Go runtime a zeroing pass each time.
type scratch struct{ x, q, k, v, a, o, gate, up []float32 }

// buf returns (*b)[:n], reallocating when it is too short. Callers overwrite
// all n values.
func buf(b *[]float32, n int) []float32 {
	if cap(*b) < n {
		*b = make([]float32, n)
	}
	return (*b)[:n]
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
// and attention run per sequence, the sequences spread over the cores with
// single-threaded BLAS (their 128 x 128 products are too small to share).
// The returned states are views of one new rows x Hidden buffer.
func (m *Model) layer(w *layerWeights, hs [][]float32, rope *ropeTable, sc *scratch) [][]float32 {
	c := m.cfg
	d, hd := c.Hidden, c.HeadDim
	rs := m.residualScale()
	rows := 0
	start := make([]int, len(hs)) // first row of each sequence
	for k, h := range hs {
		start[k] = rows
		rows += len(h) / d
	}
	h := make([]float32, 0, rows*d)
	for _, x := range hs {
		h = append(h, x...)
	}

	x := rmsNormInto(buf(&sc.x, rows*d), h, d, w.inNorm, c.RMSNormEps)
	qOut, _ := c.Shape(arch.Q)
	kvOut, _ := c.Shape(arch.K)
	q := linearInto(buf(&sc.q, rows*qOut), x, rows, d, w.w[arch.Q], qOut, w.b[arch.Q])
	k := linearInto(buf(&sc.k, rows*kvOut), x, rows, d, w.w[arch.K], kvOut, w.b[arch.K])
	v := linearInto(buf(&sc.v, rows*kvOut), x, rows, d, w.w[arch.V], kvOut, w.b[arch.V])
	if w.qNorm != nil {
		rmsNormInto(q, q, hd, w.qNorm, c.RMSNormEps)
		rmsNormInto(k, k, hd, w.kNorm, c.RMSNormEps)
	}
	a := buf(&sc.a, rows*qOut)
	attend := func(lo, hi int) {
		for j := lo; j < hi; j++ {
			r0, s := start[j], len(hs[j])/d
			qs, ks, vs := q[r0*qOut:(r0+s)*qOut], k[r0*kvOut:(r0+s)*kvOut], v[r0*kvOut:(r0+s)*kvOut]
			rope.apply(qs, s, c.Heads)
			rope.apply(ks, s, c.KVHeads)
			attention(a[r0*qOut:(r0+s)*qOut], qs, ks, vs, s, c.Heads, c.KVHeads, hd, c.SlidingWindow)
		}
	}
	if rows*qOut < minParallelElems || len(hs) < 2 {
		attend(0, len(hs))
	} else {
		release := linalg.SerialBLAS()
		parallelFor(len(hs), 1, attend)
		release()
	}
	o := linearInto(buf(&sc.o, rows*d), a, rows, qOut, w.w[arch.O], d, w.b[arch.O])
	for i := range h {
		h[i] += rs * o[i]
	}

	x = rmsNormInto(x, h, d, w.postNorm, c.RMSNormEps)
	gate := linearInto(buf(&sc.gate, rows*c.Intermediate), x, rows, d, w.w[arch.Gate], c.Intermediate, w.b[arch.Gate])
	up := linearInto(buf(&sc.up, rows*c.Intermediate), x, rows, d, w.w[arch.Up], c.Intermediate, w.b[arch.Up])
	siluMul(gate, up)
	down := linearInto(o, gate, rows, c.Intermediate, w.w[arch.Down], d, w.b[arch.Down])
	for i := range h {
		h[i] += rs * down[i]
	}
	out := make([][]float32, len(hs))
	for k, hk := range hs {
		r0, n := start[k]*d, len(hk)
		out[k] = h[r0 : r0+n : r0+n]
	}
	return out
}
