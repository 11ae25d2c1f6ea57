package lorasuite

import (
	"context"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/linalg"
)

// mlpRidge is the ridge of the pinv(W) least-squares solves on base MLP
// weights, relative to the mean eigenvalue of the Gram matrix. Trained MLP
// weights are full rank, so it only guards against exact rank deficiency
// (then the solve returns the minimum-norm solution, as pinv would).
const mlpRidge = 1e-12

// ProjectMLP migrates one MLP LoRA module with the reference's formulas
// (step 4, "MLP"), which need the base weights of both layers:
//
//	gate/up (W: I x d):  B_n = W_n pinv(W_x) pinv(W_o) B_o   (I_n x r)
//	                     A_n = inputMap(A_o)                 (r x d_n)
//	down    (W: d x I):  B_n = pinv(W_x) B_o                 (d_n x r)
//	                     A_n = A_o pinv(W_o) W_x W_n         (r x I_n)
//
// oldW is the old layer's base weight of m's role (I_o x d_o for gate/up,
// d_o x I_o for down), newW the new layer's (I_n x d_n, d_n x I_n), both
// row-major float32; oldInter and newInter are I_o and I_n. Every pinv(X) Y is
// a least-squares solve by ridged normal equations in float64, never a dense
// pseudo-inverse. The delta stays rank <= r and is re-factored like Project's.
//
// The formulas reproduce the planted truth only for the part of B_o (gate/up)
// or A_o (down) inside the range of the old base weight; the rest is dropped.
// Cost: one I x d x d Gram per call (~0.2 TFLOP at Llama sizes, seconds with
// OpenBLAS), so callers should stream MLP layers and call it per module. It
// returns (nil, nil) when m's layer is not in the layer map.
func ProjectMLP(ctx context.Context, pa *PairAnalysis, m Module, oldW []float32, oldInter int,
	newW []float32, newInter int, opts ProjectOptions) (*Module, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := pa.Validate(); err != nil {
		return nil, err
	}
	la := pa.layerFor(m.Layer)
	if la == nil {
		return nil, nil
	}
	im := opts.InputMap
	if im == "" {
		im = InputWx
	}
	if im != InputWx && im != InputPinv {
		return nil, fmt.Errorf("lorasuite: unknown input map %q (want %q or %q)", im, InputWx, InputPinv)
	}
	fail := func(err error) (*Module, error) {
		return nil, fmt.Errorf("lorasuite: layer %d %s: %w", m.Layer, m.Role, err)
	}
	do, dn := pa.Old.Hidden, pa.New.Hidden
	if oldInter <= 0 || newInter <= 0 {
		return fail(fmt.Errorf("intermediate sizes must be positive, got old %d, new %d", oldInter, newInter))
	}
	var out, in, wor, woc, wnr, wnc int
	switch m.Role {
	case RoleGate, RoleUp:
		out, in, wor, woc, wnr, wnc = oldInter, do, oldInter, do, newInter, dn
	case RoleDown:
		out, in, wor, woc, wnr, wnc = do, oldInter, do, oldInter, dn, newInter
	default:
		return fail(fmt.Errorf("not an MLP role (gate_proj, up_proj, down_proj)"))
	}
	if len(oldW) != wor*woc || len(newW) != wnr*wnc {
		return fail(fmt.Errorf("base weights have %d and %d values, want %d x %d (old) and %d x %d (new)", len(oldW), len(newW), wor, woc, wnr, wnc))
	}
	bo, ao, err := factors(m, out, in)
	if err != nil {
		return fail(err)
	}
	wo, wn := linalg.Dense64(oldW, wor, woc), linalg.Dense64(newW, wnr, wnc)
	var bn, an *mat.Dense
	if m.Role == RoleDown {
		if bn, err = pa.Transfer.pinvApply(bo); err != nil {
			return fail(err)
		}
		// A_o pinv(W_o) = (pinv(W_o^T) A_o^T)^T, W_o^T is I_o x d_o.
		x, err := pinvSolve(wo.T(), ao.T())
		if err != nil {
			return fail(fmt.Errorf("old down_proj: %w", err))
		}
		an = mul2(pa.Transfer.mulRight(x.T()), wn)
	} else {
		x, err := pinvSolve(wo, bo) // d_o x r
		if err != nil {
			return fail(fmt.Errorf("old %s: %w", m.Role, err))
		}
		y, err := pa.Transfer.pinvApply(x) // d_n x r
		if err != nil {
			return fail(err)
		}
		bn = mul2(wn, y)
		if an, err = mapInput(pa.Transfer, ao, im); err != nil {
			return fail(err)
		}
	}
	nb, na, err := Refactor(bn, an)
	if err != nil {
		return fail(err)
	}
	return &Module{Layer: la.New, Role: m.Role, R: m.R, A: linalg.Float32(na), B: linalg.Float32(nb)}, nil
}

// pinvSolve returns pinv(x) y for x (p x q) and y (p x k) by ridged normal
// equations: (x^T x + l I)^-1 x^T y when p >= q, x^T (x x^T + l I)^-1 y
// otherwise, l = mlpRidge * mean eigenvalue.
func pinvSolve(x, y mat.Matrix) (*mat.Dense, error) {
	p, q := x.Dims()
	var g mat.SymDense
	tall := p >= q
	if tall {
		g.SymOuterK(1, x.T())
	} else {
		g.SymOuterK(1, x)
	}
	n := g.SymmetricDim()
	l := mlpRidge * mat.Trace(&g) / float64(n)
	if l == 0 || math.IsNaN(l) {
		return nil, fmt.Errorf("base weight is all zero")
	}
	for i := 0; i < n; i++ {
		g.SetSym(i, i, g.At(i, i)+l)
	}
	if tall {
		return linalg.SolveSPD(&g, mul2(x.T(), y))
	}
	z, err := linalg.SolveSPD(&g, y)
	if err != nil {
		return nil, err
	}
	return mul2(x.T(), z), nil
}

func mul2(a, b mat.Matrix) *mat.Dense {
	var c mat.Dense
	c.Mul(a, b)
	return &c
}
