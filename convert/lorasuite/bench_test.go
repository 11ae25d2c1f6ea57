package lorasuite

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/linalg"
)

// Run with: go test -run '^$' -bench . ./convert/lorasuite (add -tags openblas).
// Realistic shapes: Llama-2-7B (d 4096, 32 heads MHA) -> Llama-3-8B (d 4096,
// 32 heads, 8 KV heads), head_dim 128. The 4096 cases only run with
// -tags openblas (pure gonum needs minutes per layer).

type benchShape struct {
	name   string
	od, nd Dims
}

func benchShapes() []benchShape {
	s := []benchShape{{"d1024",
		Dims{Hidden: 1024, Layers: 1, Heads: 8, KVHeads: 8, HeadDim: 128},
		Dims{Hidden: 1024, Layers: 1, Heads: 8, KVHeads: 2, HeadDim: 128}}}
	if linalg.Backend() == "openblas" {
		// Benchmark (a) of convert/bench: many small per-head solves per
		// layer relative to the GEMMs, so it shows their threading cost.
		s = append(s, benchShape{"qwen1.5-1.8b->qwen2.5-3b",
			Dims{Hidden: 2048, Layers: 1, Heads: 16, KVHeads: 16, HeadDim: 128},
			Dims{Hidden: 2048, Layers: 1, Heads: 16, KVHeads: 2, HeadDim: 128}})
		s = append(s, benchShape{"llama2-7b->llama3-8b",
			Dims{Hidden: 4096, Layers: 1, Heads: 32, KVHeads: 32, HeadDim: 128},
			Dims{Hidden: 4096, Layers: 1, Heads: 32, KVHeads: 8, HeadDim: 128}})
	}
	return s
}

func randWeights(rng *rand.Rand, d Dims) *LayerWeights {
	f := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		return x
	}
	qh, kh := d.Heads*d.HeadDim, d.KVHeads*d.HeadDim
	return &LayerWeights{Q: f(qh * d.Hidden), K: f(kh * d.Hidden), V: f(kh * d.Hidden), O: f(d.Hidden * qh)}
}

// BenchmarkAnalyzeLayer times one layer pair of Analyze with a general
// (least-squares) W_x: the per-layer cost of the pair analysis.
func BenchmarkAnalyzeLayer(b *testing.B) {
	for _, s := range benchShapes() {
		rng := rand.New(rand.NewPCG(1, 1))
		old := &memSource{layers: []*LayerWeights{randWeights(rng, s.od)}}
		nw := &memSource{layers: []*LayerWeights{randWeights(rng, s.nd)}}
		tr := NewTransfer(randMat(rng, s.od.Hidden, s.nd.Hidden))
		b.Run(fmt.Sprintf("%s/%s", linalg.Backend(), s.name), func(b *testing.B) {
			for b.Loop() {
				if _, err := Analyze(context.Background(), s.od, s.nd, tr, []LayerPair{{0, 0}}, old, nw, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAnalyzeLayers4 runs Analyze over 4 layer pairs (the same weights
// served for every layer) to show the steady-state memory of a streamed run:
// run it under /usr/bin/time -v for the peak RSS.
func BenchmarkAnalyzeLayers4(b *testing.B) {
	for _, s := range benchShapes() {
		rng := rand.New(rand.NewPCG(1, 1))
		ow, nwt := randWeights(rng, s.od), randWeights(rng, s.nd)
		old := &memSource{layers: []*LayerWeights{ow, ow, ow, ow}}
		nw := &memSource{layers: []*LayerWeights{nwt, nwt, nwt, nwt}}
		od, nd := s.od, s.nd
		od.Layers, nd.Layers = 4, 4
		tr := NewTransfer(randMat(rng, s.od.Hidden, s.nd.Hidden))
		lm, _ := LinearLayerMap(4, 4)
		b.Run(fmt.Sprintf("%s/%s", linalg.Backend(), s.name), func(b *testing.B) {
			for b.Loop() {
				if _, err := Analyze(context.Background(), od, nd, tr, lm, old, nw, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// syntheticAnalysis builds a PairAnalysis with random blocks for L layers
// without running Analyze (Project's cost does not depend on the values).
func syntheticAnalysis(rng *rand.Rand, od, nd Dims, layers int) *PairAnalysis {
	od.Layers, nd.Layers = layers, layers
	pa := &PairAnalysis{Old: od, New: nd, Transfer: NewTransfer(randMat(rng, od.Hidden, nd.Hidden)), HeadTransfer: HeadLstsq}
	for l := 0; l < layers; l++ {
		pa.LayerMap = append(pa.LayerMap, LayerPair{l, l})
		la := LayerAnalysis{Old: l, New: l, HeadMap: make([]int, nd.Heads), Similarity: mat.NewDense(od.Heads, nd.Heads, nil)}
		mk := func(kv bool, rows, cols int) RoleBlocks {
			rb := RoleBlocks{Src: make([]int, nd.Heads), T: make([]Block, nd.Heads),
				Residual: make([]float64, nd.Heads), Gain: make([]float64, nd.Heads)}
			for b := range rb.Src {
				rb.Src[b] = b % od.Heads
				if kv {
					rb.Src[b] = od.kvOf(b % od.Heads)
				}
				rb.T[b] = blockOf(randMat(rng, rows, cols))
			}
			return rb
		}
		for b := range la.HeadMap {
			la.HeadMap[b] = b % od.Heads
		}
		la.Q = mk(false, nd.HeadDim, od.HeadDim)
		la.K = mk(true, nd.HeadDim, od.HeadDim)
		la.V = mk(true, nd.HeadDim, od.HeadDim)
		la.O = mk(false, od.HeadDim, nd.HeadDim)
		pa.Layers = append(pa.Layers, la)
	}
	return pa
}

// BenchmarkProject times migrating an r=16 q/k/v/o adapter on 32 layers
// given the pair analysis (the per-adapter cost).
func BenchmarkProject(b *testing.B) {
	for _, s := range benchShapes() {
		rng := rand.New(rand.NewPCG(2, 2))
		pa := syntheticAnalysis(rng, s.od, s.nd, 32)
		var mods []Module
		for l := 0; l < 32; l++ {
			for _, role := range []Role{RoleQ, RoleK, RoleV, RoleO} {
				mods = append(mods, randModule(rng, pa.Old, l, role, 16))
			}
		}
		for _, im := range []InputMap{InputWx, InputPinv} {
			b.Run(fmt.Sprintf("%s/%s/%s", linalg.Backend(), s.name, im), func(b *testing.B) {
				for b.Loop() {
					if _, err := Project(context.Background(), pa, mods, ProjectOptions{InputMap: im}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkFitTransferChunk times accumulating one chunk of shared embedding
// rows into the float64 Grams (the per-row cost of step 1; Llama-2 -> Llama-3
// has ~25k-30k byte-matched shared tokens at d = 4096).
func BenchmarkFitTransferChunk(b *testing.B) {
	d := 1024
	if linalg.Backend() == "openblas" {
		d = 4096
	}
	const rows = 1024
	rng := rand.New(rand.NewPCG(3, 3))
	old, nw := make([]float32, rows*d), make([]float32, rows*d)
	for i := range old {
		old[i], nw[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
	}
	for _, kind := range []string{"lstsq", "identity"} {
		acc := NewTransferAccumulator(d, d)
		if kind == "identity" {
			acc = NewIdentityAccumulator(d)
		}
		b.Run(fmt.Sprintf("%s/%s/d%d/rows%d", linalg.Backend(), kind, d, rows), func(b *testing.B) {
			for b.Loop() {
				if err := acc.Add(old, nw); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
