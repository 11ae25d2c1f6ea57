package cka

import (
	"context"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// gramBudget bounds the memory Matrix spends on stored Gram matrices (the old
// model's L_old normalised n x n Grams in float64). Above it Matrix falls back
// to the feature form pair by pair, which needs no n x n storage.
const gramBudget = 1 << 30

// Matrix returns the L_old x L_new linear-CKA matrix between the per-layer
// representations old[i] (n x d_old) and new[j] (n x d_new), all with the
// same n samples in the same order: entry (i, j) = CKA(old[i], new[j]).
//
// With the Gram form (n x n per layer, used while L_old n^2 float64s fit in
// 1 GiB) each layer is centred and its Gram normalised once, and every entry
// is one n^2 dot product: O((L_old + L_new) n^2 d + L_old L_new n^2) in all.
// It checks ctx between layers.
func Matrix(ctx context.Context, old, new []*mat.Dense) (*mat.Dense, error) {
	if len(old) == 0 || len(new) == 0 {
		return nil, fmt.Errorf("cka: no layers (old %d, new %d)", len(old), len(new))
	}
	n, _ := old[0].Dims()
	for _, side := range []struct {
		name string
		reps []*mat.Dense
	}{{"old", old}, {"new", new}} {
		for i, r := range side.reps {
			if rn, _ := r.Dims(); rn != n {
				return nil, fmt.Errorf("cka: %s layer %d has %d samples, old layer 0 has %d", side.name, i, rn, n)
			}
		}
	}
	if n < 2 {
		return nil, fmt.Errorf("cka: need at least 2 samples, have %d", n)
	}
	sim := mat.NewDense(len(old), len(new), nil)
	if float64(len(old))*float64(n)*float64(n)*8 <= gramBudget {
		return sim, gramMatrix(ctx, sim, old, new)
	}
	return sim, featureMatrix(ctx, sim, old, new)
}

// normGram is the centred Gram of x scaled to unit Frobenius norm (nil when
// x has no variance).
func normGram(x *mat.Dense) *mat.SymDense {
	k := Gram(Centre(x))
	nrm := math.Sqrt(frobDot(k, k))
	if nrm == 0 {
		return nil
	}
	k.ScaleSym(1/nrm, k)
	return k
}

func gramMatrix(ctx context.Context, sim *mat.Dense, old, new []*mat.Dense) error {
	kold := make([]*mat.SymDense, len(old))
	for i, x := range old {
		if err := ctx.Err(); err != nil {
			return err
		}
		kold[i] = normGram(x)
	}
	for j, y := range new {
		if err := ctx.Err(); err != nil {
			return err
		}
		ky := normGram(y)
		for i, kx := range kold {
			v := 0.0
			if kx != nil && ky != nil {
				v = clamp01(frobDot(kx, ky))
			}
			sim.Set(i, j, v)
		}
	}
	return nil
}

// featureMatrix fills sim with the feature form, centring every layer once.
func featureMatrix(ctx context.Context, sim *mat.Dense, old, new []*mat.Dense) error {
	oc := make([]*mat.Dense, len(old))
	on := make([]float64, len(old))
	for i, x := range old {
		oc[i] = Centre(x)
		var xx mat.Dense
		xx.Mul(oc[i].T(), oc[i])
		on[i] = math.Sqrt(sqFrob(&xx))
	}
	for j, y := range new {
		if err := ctx.Err(); err != nil {
			return err
		}
		yc := Centre(y)
		var yy mat.Dense
		yy.Mul(yc.T(), yc)
		ny := math.Sqrt(sqFrob(&yy))
		for i, xc := range oc {
			var yx mat.Dense
			yx.Mul(yc.T(), xc)
			sim.Set(i, j, ratio(sqFrob(&yx), on[i]*ny))
		}
	}
	return nil
}

// clamp01 guards against rounding just outside [0, 1].
func clamp01(v float64) float64 { return math.Min(1, math.Max(0, v)) }
