package lorasuite

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/linalg"
)

// Run with: go test -run '^$' -bench MLP -benchtime 1x ./convert/lorasuite
// (add -tags openblas for the Llama-2-7B -> Llama-3-8B shapes: d 4096,
// intermediate 11008 -> 14336, r 16; pure gonum runs a 4x smaller model).

type mlpBenchShape struct {
	name           string
	d, iOld, iNew  int
	rank           int
	oldW, newW     []float32
	pa             *PairAnalysis
	pinv           *mat.Dense
	modUp, modDown Module
}

func mlpBenchShapes() []*mlpBenchShape {
	s := &mlpBenchShape{name: "d1024", d: 1024, iOld: 2752, iNew: 3584, rank: 16}
	if linalg.Backend() == "openblas" {
		s = &mlpBenchShape{name: "llama2-7b->llama3-8b", d: 4096, iOld: 11008, iNew: 14336, rank: 16}
	}
	rng := rand.New(rand.NewPCG(7, 7))
	f := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		return x
	}
	// One buffer per side serves as up (I x d) and as down (d x I).
	s.oldW, s.newW = f(s.iOld*s.d), f(s.iNew*s.d)
	dims := Dims{Hidden: s.d, Layers: 1, Heads: 32, KVHeads: 8, HeadDim: s.d / 32}
	s.pa = &PairAnalysis{Old: dims, New: dims, Transfer: NewTransfer(randMat(rng, s.d, s.d)), LayerMap: []LayerPair{{0, 0}}}
	s.pa.Layers = []LayerAnalysis{unmatchedLayer(s.pa, 0, 0)}
	s.modUp = Module{Layer: 0, Role: RoleUp, R: s.rank, A: f(s.rank * s.d), B: f(s.iOld * s.rank)}
	s.modDown = Module{Layer: 0, Role: RoleDown, R: s.rank, A: f(s.rank * s.iOld), B: f(s.d * s.rank)}
	// pinv(W_x) is a per-pair cost (cached with the pair): prepare it.
	var err error
	if s.pinv, err = NewTransferPinv(s.pa.Transfer); err != nil {
		panic(err)
	}
	return []*mlpBenchShape{s}
}

// BenchmarkTransferPinv times NewTransferPinv, a per-pair cost.
func BenchmarkTransferPinv(b *testing.B) {
	s := mlpBenchShapes()[0]
	b.Run(fmt.Sprintf("%s/%s", linalg.Backend(), s.name), func(b *testing.B) {
		for b.Loop() {
			if _, err := NewTransferPinv(NewTransfer(s.pa.Transfer.W)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMLP times one MLP module (up_proj, down_proj):
//   - operator: NewMLPOperator, the pair-only part (Gram + Cholesky of W_o),
//     paid once per pair, layer and role;
//   - project: MLPOperator.Project with a prepared operator and pinv(W_x)
//     (what convert's cache hands out), the per-adapter cost: thin products
//     with both base weights and d x d GEMMs with r columns;
//   - project-solve: the same without the explicit pinv(W_x) (Cholesky
//     solves with r right-hand sides instead);
//   - uncached: ProjectMLP, i.e. both (what every adapter paid before);
//   - direct: the previous per-call implementation (float64 copies of both
//     weights, a Gram and Cholesky per call), for reference.
func BenchmarkMLP(b *testing.B) {
	ctx := context.Background()
	for _, s := range mlpBenchShapes() {
		for _, m := range []Module{s.modUp, s.modDown} {
			op, err := NewMLPOperator(ctx, s.pa, m.Role, 0, s.oldW, s.iOld)
			if err != nil {
				b.Fatal(err)
			}
			name := fmt.Sprintf("%s/%s/%s", linalg.Backend(), s.name, m.Role)
			b.Run(name+"/operator", func(b *testing.B) {
				for b.Loop() {
					if _, err := NewMLPOperator(ctx, s.pa, m.Role, 0, s.oldW, s.iOld); err != nil {
						b.Fatal(err)
					}
				}
			})
			withP := *op
			withP.PinvWx = s.pinv
			b.Run(name+"/project", func(b *testing.B) {
				for b.Loop() {
					if _, err := withP.Project(ctx, s.pa, m, s.oldW, s.newW, s.iNew, ProjectOptions{}); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(name+"/project-solve", func(b *testing.B) {
				for b.Loop() {
					if _, err := op.Project(ctx, s.pa, m, s.oldW, s.newW, s.iNew, ProjectOptions{}); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(name+"/uncached", func(b *testing.B) {
				for b.Loop() {
					if _, err := ProjectMLP(ctx, s.pa, m, s.oldW, s.iOld, s.newW, s.iNew, ProjectOptions{}); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(name+"/direct", func(b *testing.B) {
				for b.Loop() {
					wo, wn := linalg.Dense64(s.oldW, s.iOld, s.d), linalg.Dense64(s.newW, s.iNew, s.d)
					if m.Role == RoleDown {
						wo, wn = linalg.Dense64(s.oldW, s.d, s.iOld), linalg.Dense64(s.newW, s.d, s.iNew)
					}
					if _, err := projectMLPDirect(s.pa, m, wo, wn, InputWx); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
