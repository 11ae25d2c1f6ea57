package lorasuite

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/linalg"
)

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
		Layers: []LayerAnalysis{{Old: 1, New: 0}},
	}
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
