package lorasuite

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/linalg"
)

// refactorTol: the product is rebuilt through a QR and an r x r SVD, backward
// stable at ~1e-15; 1e-12 relative allows for the factor norms.
const refactorTol = 1e-12

func TestRefactor(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	for _, sz := range [][3]int{{20, 4, 15}, {8, 8, 8}, {3, 5, 9}, {9, 5, 3}, {30, 1, 2}} {
		out, r, in := sz[0], sz[1], sz[2]
		b, a := randMat(rng, out, r), randMat(rng, r, in)
		if sz == [3]int{8, 8, 8} {
			// Rank-deficient input: a zero column in b.
			for i := 0; i < out; i++ {
				b.Set(i, 2, 0)
			}
		}
		nb, na, err := Refactor(b, a)
		if err != nil {
			t.Fatal(err)
		}
		if br, bc := nb.Dims(); br != out || bc != r {
			t.Fatalf("%v: b' is %dx%d", sz, br, bc)
		}
		if ar, ac := na.Dims(); ar != r || ac != in {
			t.Fatalf("%v: a' is %dx%d", sz, ar, ac)
		}
		if e := relErr(mul(nb, na), mul(b, a)); e > refactorTol {
			t.Errorf("%v: b'a' differs from ba by %g", sz, e)
		}
		// Balanced: b'^T b' = a' a'^T = diag(singular values).
		btb, aat := mul(nb.T(), nb), mul(na, na.T())
		if e := relErr(btb, aat); e > 1e-10 {
			t.Errorf("%v: factors not balanced: ||b'^T b' - a' a'^T|| rel %g", sz, e)
		}
		for i := 0; i < r; i++ {
			for j := 0; j < r; j++ {
				if i != j && abs(btb.At(i, j)) > 1e-10*mat.Norm(btb, 2) {
					t.Fatalf("%v: b'^T b' not diagonal at %d,%d", sz, i, j)
				}
			}
		}
	}
}

// Planted MLP: the new layer is the old one carried through P (x_n = x_o P):
// up/gate W_n = W_o P, down W_n = P^T W_o. With B_o in range(W_o) (up/gate)
// and A_o in the row space of W_o (down), the reference formulas are exact:
// dW_n = dW_o P and P^T dW_o respectively.
func TestProjectMLPPlanted(t *testing.T) {
	rng := rand.New(rand.NewPCG(51, 52))
	const do, dn, inter, r = 6, 9, 15, 2
	p := randOrthoRows(rng, do, dn)
	pa := &PairAnalysis{
		Old: Dims{Hidden: do, Layers: 2, Heads: 1, KVHeads: 1, HeadDim: 2}, New: Dims{Hidden: dn, Layers: 2, Heads: 1, KVHeads: 1, HeadDim: 2},
		Transfer: NewTransfer(p), LayerMap: []LayerPair{{1, 0}},
	}
	pa.Layers = []LayerAnalysis{unmatchedLayer(pa, 1, 0)}
	for _, role := range []Role{RoleUp, RoleGate, RoleDown} {
		for _, im := range []InputMap{InputWx, InputPinv} {
			var wo, wn, bo, ao *mat.Dense
			if role == RoleDown {
				wo = randMat(rng, do, inter)
				wn = mul(p.T(), wo)
				bo, ao = randMat(rng, do, r), mul(randMat(rng, r, do), wo)
			} else {
				wo = randMat(rng, inter, do)
				wn = mul(wo, p)
				bo, ao = mul(wo, randMat(rng, do, r)), randMat(rng, r, do)
			}
			m := Module{Layer: 1, Role: role, R: r, A: linalg.Float32(ao), B: linalg.Float32(bo)}
			dw := mul(linalg.Dense64(m.B, bo.RawMatrix().Rows, r), linalg.Dense64(m.A, r, ao.RawMatrix().Cols))
			var want *mat.Dense
			if role == RoleDown {
				want = mul(p.T(), dw)
			} else {
				want = mul(dw, p)
			}
			nm, err := ProjectMLP(context.Background(), pa, m, linalg.Float32(wo), inter, linalg.Float32(wn), inter, ProjectOptions{InputMap: im})
			if err != nil {
				t.Fatal(err)
			}
			if nm.Layer != 0 || nm.R != r {
				t.Fatalf("%s: layer %d rank %d, want 0 and %d", role, nm.Layer, nm.R, r)
			}
			got := mul(linalg.Dense64(nm.B, want.RawMatrix().Rows, r), linalg.Dense64(nm.A, r, want.RawMatrix().Cols))
			if e := relErr(got, want); e > plantedTol {
				t.Errorf("%s/%s: migrated MLP delta off the planted truth by %g", role, im, e)
			}
		}
	}
	// A layer outside the map gives nil, nil; bad sizes give errors naming the role.
	if nm, err := ProjectMLP(context.Background(), pa, Module{Layer: 0, Role: RoleUp, R: 1}, nil, 1, nil, 1, ProjectOptions{}); nm != nil || err != nil {
		t.Fatalf("unmapped layer: %v %v", nm, err)
	}
	_, err := ProjectMLP(context.Background(), pa, Module{Layer: 1, Role: RoleUp, R: 1}, make([]float32, 3), inter, nil, inter, ProjectOptions{})
	if err == nil || !strings.Contains(err.Error(), "up_proj") {
		t.Fatalf("bad base weights: err = %v", err)
	}
}

func TestProjectErrorsAndSkips(t *testing.T) {
	pl := buildPlanted(t, 7, plantedOld, plantedNew, false, false)
	pa := pl.analyze(t, HeadLstsq)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(9, 9))
	q := randModule(rng, pl.od, 0, RoleQ, 2)
	bad := q
	bad.A = bad.A[:len(bad.A)-1]
	if _, err := Project(ctx, pa, []Module{bad}, ProjectOptions{}); err == nil || !strings.Contains(err.Error(), "layer 0 q_proj: lora_A has") {
		t.Errorf("short lora_A: err = %v", err)
	}
	nan := randModule(rng, pl.od, 0, RoleV, 2)
	nan.B[1] = float32(math.NaN())
	if _, err := Project(ctx, pa, []Module{nan}, ProjectOptions{}); err == nil || !strings.Contains(err.Error(), "non-finite") {
		t.Errorf("NaN lora_B: err = %v", err)
	}
	if _, err := Project(ctx, pa, []Module{{Layer: 0, Role: RoleUp, R: 1}}, ProjectOptions{}); err == nil || !strings.Contains(err.Error(), "ProjectMLP") {
		t.Errorf("MLP module: err = %v", err)
	}
	if _, err := Project(ctx, pa, []Module{q}, ProjectOptions{InputMap: "x"}); err == nil {
		t.Error("unknown input map: want an error")
	}
	// A layer outside the map is skipped and reported, the rest migrate.
	pa.Layers, pa.LayerMap = pa.Layers[:1], pa.LayerMap[:1]
	res, err := Project(ctx, pa, []Module{q, randModule(rng, pl.od, 1, RoleO, 2)}, ProjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Modules) != 1 || len(res.Skipped) != 1 || res.Skipped[0].Layer != 1 || res.Skipped[0].Role != RoleO {
		t.Fatalf("projection %+v, want one module and o_proj of layer 1 skipped", res)
	}
}

// unmatchedLayer returns a valid layer record in which no head is matched.
func unmatchedLayer(pa *PairAnalysis, old, new int) LayerAnalysis {
	hn := pa.New.Heads
	neg := func() []int {
		x := make([]int, hn)
		for i := range x {
			x[i] = -1
		}
		return x
	}
	rb := func() RoleBlocks {
		return RoleBlocks{Src: neg(), T: make([]Block, hn), Residual: make([]float64, hn), Gain: make([]float64, hn)}
	}
	return LayerAnalysis{Old: old, New: new, HeadMap: neg(), Similarity: mat.NewDense(pa.Old.Heads, hn, nil),
		Q: rb(), K: rb(), V: rb(), O: rb()}
}

// A corrupt (e.g. stale cached) analysis is an error, never a panic.
func TestProjectRejectsCorruptAnalysis(t *testing.T) {
	pl := buildPlanted(t, 10, plantedOld, plantedNew, false, false)
	rng := rand.New(rand.NewPCG(10, 10))
	mods := []Module{randModule(rng, pl.od, 0, RoleQ, 2)}
	for _, tc := range []struct {
		name    string
		corrupt func(pa *PairAnalysis)
		msg     string
	}{
		{"short block", func(pa *PairAnalysis) { pa.Layers[0].Q.T[1].Data = pa.Layers[0].Q.T[1].Data[:3] }, "q_proj head 1: block is"},
		{"source range", func(pa *PairAnalysis) { pa.Layers[1].K.Src[0] = 9 }, "k_proj head 0: source 9 out of range"},
		{"head map", func(pa *PairAnalysis) { pa.Layers[0].HeadMap = nil }, "head map has 0 entries"},
		{"transfer", func(pa *PairAnalysis) { pa.Transfer = IdentityTransfer(3) }, "transfer matrix is 3 x 3"},
		{"layer order", func(pa *PairAnalysis) { pa.Layers[0].New = 1 }, "layer record 0 is 0 -> 1"},
	} {
		pa := pl.analyze(t, HeadLstsq)
		tc.corrupt(pa)
		_, err := Project(context.Background(), pa, mods, ProjectOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: err = %v, want one containing %q", tc.name, err, tc.msg)
		}
	}
}
