package lorasuite

import (
	"context"
	"fmt"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/linalg"
)

// mlpRidge is the ridge of the pinv(W) least-squares solves on base MLP
// weights, relative to the mean eigenvalue of the Gram matrix. Trained MLP
// weights are full rank, so it only guards against exact rank deficiency
// (then the solve returns the minimum-norm solution, as pinv would).
const mlpRidge = 1e-12

// MLPOperator is the adapter-independent part of migrating one MLP module
// (step 4, "MLP") of one layer pair and role: the inverse of the ridged Gram
// matrix behind pinv(W_o). It depends only on the old base weight W_o (and
// the layer map that pairs OldLayer with NewLayer), so it is computed once
// per pair and cached; Project then migrates any number of adapters with
// thin products and GEMMs with r columns only.
//
// With X = W_o for gate/up (I_o x d_o) and X = W_o^T for down (I_o x d_o as
// well), pinv(X) = (X^T X + l I)^-1 X^T when X is tall (I_o >= d_o, every
// real model; the Gram is d_o x d_o) and X^T (X X^T + l I)^-1 otherwise
// (I_o x I_o), l = mlpRidge * mean eigenvalue: the same ridged normal
// equations as the reference-formula solve did per call.
//
// Size: n(n+1)/2 float64 values, n = min(I_o, d_o): 67 MB at d_o = 4096.
type MLPOperator struct {
	// Role is gate_proj, up_proj or down_proj.
	Role Role
	// OldLayer and NewLayer are the layer pair.
	OldLayer, NewLayer int
	// Inter and Hidden are I_o and d_o, the old weight's shape (I_o x d_o
	// for gate/up, d_o x I_o for down).
	Inter, Hidden int
	// Gram is (X^T X + l I)^-1 (order d_o) when Inter >= Hidden, else
	// (X X^T + l I)^-1 (order I_o), as a GramInverse.
	Gram *GramFactor
	// PinvWx, when set, is pinv(W_x) (d_n x d_o, from NewTransferPinv; one
	// matrix shared by all operators of the pair), applied by GEMM; when nil,
	// pinv(W_x) is solved through the pair's Transfer on every use.
	PinvWx *mat.Dense
}

// tall reports whether X (I_o x d_o) has at least as many rows as columns.
func (op *MLPOperator) tall() bool { return op.Inter >= op.Hidden }

// NewMLPOperator computes the operator for the old layer's role from its base
// weight oldW (I_o x d_o for gate/up, d_o x I_o for down, row-major float32,
// oldInter = I_o). Cost: one Gram of oldW, I_o n^2 flops with n = min(I_o,
// d_o), accumulated over row or column blocks in float64 (~0.19 TFLOP at
// Llama-2-7B sizes), plus n^3 for the Cholesky factor and the inverse (~5 s
// in all with OpenBLAS). It returns (nil, nil) when the layer is not in pa's
// layer map.
func NewMLPOperator(ctx context.Context, pa *PairAnalysis, role Role, oldLayer int, oldW []float32, oldInter int) (*MLPOperator, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := pa.Validate(); err != nil {
		return nil, err
	}
	la := pa.layerFor(oldLayer)
	if la == nil {
		return nil, nil
	}
	fail := func(err error) (*MLPOperator, error) {
		return nil, fmt.Errorf("lorasuite: layer %d %s: %w", oldLayer, role, err)
	}
	if !role.mlp() {
		return fail(fmt.Errorf("not an MLP role (gate_proj, up_proj, down_proj)"))
	}
	do := pa.Old.Hidden
	if oldInter <= 0 {
		return fail(fmt.Errorf("old intermediate size must be positive, got %d", oldInter))
	}
	if len(oldW) != oldInter*do {
		return fail(fmt.Errorf("old base weight has %d values, want %d x %d", len(oldW), oldInter, do))
	}
	op := &MLPOperator{Role: role, OldLayer: oldLayer, NewLayer: la.New, Inter: oldInter, Hidden: do}
	// The Gram of X on the small side: X^T X when tall, X X^T otherwise. For
	// gate/up X = W (I x d), for down X = W^T (W is d x I).
	rows, cols := oldInter, do
	inner := op.tall()
	if role == RoleDown {
		rows, cols, inner = do, oldInter, !inner
	}
	g, err := gramInverseOf(ctx, oldW, rows, cols, inner, mlpRidge)
	if err != nil {
		return fail(fmt.Errorf("old %s: %w", role, err))
	}
	op.Gram = g
	return op, nil
}

// Validate checks the operator's shape against pa and its factor.
func (op *MLPOperator) Validate(pa *PairAnalysis) error {
	if op == nil {
		return fmt.Errorf("lorasuite: missing MLP operator")
	}
	if !op.Role.mlp() {
		return fmt.Errorf("lorasuite: MLP operator for role %q", op.Role)
	}
	la := pa.layerFor(op.OldLayer)
	if la == nil || la.New != op.NewLayer {
		return fmt.Errorf("lorasuite: MLP operator for layers %d -> %d, not a pair of the layer map", op.OldLayer, op.NewLayer)
	}
	if op.Hidden != pa.Old.Hidden || op.Inter <= 0 {
		return fmt.Errorf("lorasuite: MLP operator for a %d x %d weight, old hidden size %d", op.Inter, op.Hidden, pa.Old.Hidden)
	}
	if err := op.Gram.Validate(); err != nil {
		return err
	}
	if op.Gram.Kind != GramInverse {
		return fmt.Errorf("lorasuite: MLP operator holds a Gram factor of kind %q, want %q", op.Gram.Kind, GramInverse)
	}
	if op.Gram.N != min(op.Inter, op.Hidden) {
		return fmt.Errorf("lorasuite: MLP operator Gram of order %d for a %d x %d weight", op.Gram.N, op.Inter, op.Hidden)
	}
	if op.PinvWx != nil {
		if r, c := op.PinvWx.Dims(); pa.Transfer.Identity || r != pa.New.Hidden || c != pa.Old.Hidden {
			return fmt.Errorf("lorasuite: MLP operator's pinv(W_x) is %d x %d, W_x is %d x %d (identity %v)", r, c, pa.Old.Hidden, pa.New.Hidden, pa.Transfer.Identity)
		}
	}
	return nil
}

// mlp reports whether r is an MLP role.
func (r Role) mlp() bool { return r == RoleGate || r == RoleUp || r == RoleDown }

// ProjectMLP migrates one MLP module with the reference's formulas (step 4,
// "MLP"); it is NewMLPOperator followed by MLPOperator.Project, for callers
// that migrate a single adapter (no cache). It returns (nil, nil) when m's
// layer is not in the layer map.
func ProjectMLP(ctx context.Context, pa *PairAnalysis, m Module, oldW []float32, oldInter int,
	newW []float32, newInter int, opts ProjectOptions) (*Module, error) {
	op, err := NewMLPOperator(ctx, pa, m.Role, m.Layer, oldW, oldInter)
	if op == nil || err != nil {
		return nil, err
	}
	return op.Project(ctx, pa, m, oldW, newW, newInter, opts)
}

// Project migrates one MLP module m of the operator's old layer and role:
//
//	gate/up (W: I x d):  B_n = W_n pinv(W_x) pinv(W_o) B_o   (I_n x r)
//	                     A_n = inputMap(A_o)                 (r x d_n)
//	down    (W: d x I):  B_n = pinv(W_x) B_o                 (d_n x r)
//	                     A_n = A_o pinv(W_o) W_x W_n         (r x I_n)
//
// oldW is the old base weight the operator was built from (needed again for
// the thin product W_o^T B_o or A_o W_o^T), newW the new layer's (I_n x d_n
// for gate/up, d_n x I_n for down), both row-major float32; newInter is I_n.
// Everything runs in float64, the base weights converted block by block.
// With G^-1 the operator's inverse Gram, the tall case evaluates
//
//	gate/up: B_n = W_n (pinv(W_x) (G^-1 (W_o^T B_o)))
//	down:    A_n = (((A_o W_o^T) G^-1) W_x) W_n
//
// in O(I d r + d^2 r) flops (~4 GFLOP, ~0.3 s with OpenBLAS at Llama sizes,
// r = 16). In exact arithmetic this is the per-call ridged solve; in float64
// the two differ by rounding amplified by cond(W_o)^2 (tested to 1e-10
// relative). The delta stays rank <= r and is re-factored like Project's.
//
// The formulas reproduce the planted truth only for the part of B_o (gate/up)
// or A_o (down) inside the range of the old base weight; the rest is dropped.
func (op *MLPOperator) Project(ctx context.Context, pa *PairAnalysis, m Module, oldW, newW []float32, newInter int, opts ProjectOptions) (*Module, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := pa.Validate(); err != nil {
		return nil, err
	}
	if err := op.Validate(pa); err != nil {
		return nil, err
	}
	fail := func(err error) (*Module, error) {
		return nil, fmt.Errorf("lorasuite: layer %d %s: %w", m.Layer, m.Role, err)
	}
	bn, an, err := op.delta(ctx, pa, m, oldW, newW, newInter, opts.InputMap)
	if err != nil {
		return fail(err)
	}
	nb, na, err := Refactor(bn, an)
	if err != nil {
		return fail(err)
	}
	return &Module{Layer: op.NewLayer, Role: m.Role, R: m.R, A: linalg.Float32(na), B: linalg.Float32(nb)}, nil
}

// delta returns the migrated factors B_n (out_n x r) and A_n (r x in_n) in
// float64, before re-factorisation; errors are not yet prefixed with the module.
func (op *MLPOperator) delta(ctx context.Context, pa *PairAnalysis, m Module, oldW, newW []float32, newInter int, im InputMap) (*mat.Dense, *mat.Dense, error) {
	fail := func(err error) (*mat.Dense, *mat.Dense, error) { return nil, nil, err }
	if m.Layer != op.OldLayer || m.Role != op.Role {
		return fail(fmt.Errorf("operator is for layer %d %s", op.OldLayer, op.Role))
	}
	if im == "" {
		im = InputWx
	}
	if im != InputWx && im != InputPinv {
		return fail(fmt.Errorf("unknown input map %q (want %q or %q)", im, InputWx, InputPinv))
	}
	do, dn, io := pa.Old.Hidden, pa.New.Hidden, op.Inter
	if newInter <= 0 {
		return fail(fmt.Errorf("new intermediate size must be positive, got %d", newInter))
	}
	if len(oldW) != io*do || len(newW) != newInter*dn {
		return fail(fmt.Errorf("base weights have %d and %d values, want %d x %d (old) and %d x %d (new)", len(oldW), len(newW), io, do, newInter, dn))
	}
	var bn, an *mat.Dense
	if m.Role == RoleDown {
		bo, ao, err := factors(m, do, io)
		if err != nil {
			return fail(err)
		}
		if bn, err = op.pinv(pa, bo); err != nil {
			return fail(err)
		}
		x, err := op.applyDown(ctx, ao, oldW) // A_o pinv(W_o), r x d_o
		if err != nil {
			return fail(err)
		}
		if an, err = mulW(ctx, pa.Transfer.mulRight(x), newW, dn, newInter); err != nil {
			return fail(err)
		}
	} else {
		bo, ao, err := factors(m, io, do)
		if err != nil {
			return fail(err)
		}
		x, err := op.applyUp(ctx, bo, oldW) // pinv(W_o) B_o, d_o x r
		if err != nil {
			return fail(err)
		}
		y, err := op.pinv(pa, x) // d_n x r
		if err != nil {
			return fail(err)
		}
		if bn, err = wMul(ctx, newW, newInter, dn, y); err != nil {
			return fail(err)
		}
		if im == InputPinv && op.PinvWx != nil {
			an = mul2(ao, op.PinvWx.T()) // (pinv(W_x) A_o^T)^T
		} else if an, err = mapInput(pa.Transfer, ao, im); err != nil {
			return fail(err)
		}
	}
	return bn, an, nil
}

// pinv returns pinv(W_x) y (d_n x k) for y (d_o x k).
func (op *MLPOperator) pinv(pa *PairAnalysis, y *mat.Dense) (*mat.Dense, error) {
	if op.PinvWx != nil {
		return mul2(op.PinvWx, y), nil
	}
	return pa.Transfer.pinvApply(y)
}

// applyUp returns pinv(W_o) b for gate/up (W_o I x d, b I x r): G^-1 (W_o^T b)
// when tall, W_o^T (G^-1 b) otherwise.
func (op *MLPOperator) applyUp(ctx context.Context, b *mat.Dense, w []float32) (*mat.Dense, error) {
	inv, err := op.Gram.inverse()
	if err != nil {
		return nil, err
	}
	if op.tall() {
		wtb, err := wTMul(ctx, w, op.Inter, op.Hidden, b)
		if err != nil {
			return nil, err
		}
		return mul2(inv, wtb), nil
	}
	return wTMul(ctx, w, op.Inter, op.Hidden, mul2(inv, b))
}

// applyDown returns a pinv(W_o) for down (W_o d x I, a r x I), r x d:
// (a W_o^T) G^-1 when X = W_o^T is tall, (a G^-1) W_o^T otherwise.
func (op *MLPOperator) applyDown(ctx context.Context, a *mat.Dense, w []float32) (*mat.Dense, error) {
	inv, err := op.Gram.inverse()
	if err != nil {
		return nil, err
	}
	if op.tall() {
		awt, err := mulWT(ctx, a, w, op.Hidden, op.Inter)
		if err != nil {
			return nil, err
		}
		return mul2(awt, inv), nil
	}
	return mulWT(ctx, mul2(a, inv), w, op.Hidden, op.Inter)
}

func mul2(a, b mat.Matrix) *mat.Dense {
	var c mat.Dense
	c.Mul(a, b)
	return &c
}
