package lorasuite

import (
	"context"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/linalg"
)

// Role names a LoRA target projection (the PEFT module name's last part).
type Role string

// The roles Project and ProjectMLP understand.
const (
	RoleQ    Role = "q_proj"
	RoleK    Role = "k_proj"
	RoleV    Role = "v_proj"
	RoleO    Role = "o_proj"
	RoleGate Role = "gate_proj"
	RoleUp   Role = "up_proj"
	RoleDown Role = "down_proj"
)

// InputMap selects how the input (hidden) side of a delta moves to the new
// hidden space (step 4, "Input side").
type InputMap string

const (
	// InputWx (the default, the paper's choice): dW W_x, i.e. A_n = A_o W_x.
	InputWx InputMap = "wx"
	// InputPinv: dW pinv(W_x)^T, i.e. A_n = (pinv(W_x) A_o^T)^T, computed as a
	// least-squares solve. It equals InputWx when W_x has orthonormal rows.
	InputPinv InputMap = "pinv"
)

// Module is one LoRA module: dW = s B A for layer Layer's Role. Shapes (out x in
// of the base weight): q_proj (H h) x d, k/v_proj (G h) x d, o_proj d x (H h).
type Module struct {
	// Layer is the decoder layer index (old model on input, new on output).
	Layer int
	// Role is the projection.
	Role Role
	// R is the LoRA rank.
	R int
	// A is R x in, row-major.
	A []float32
	// B is out x R, row-major.
	B []float32
}

// ProjectOptions tune Project.
type ProjectOptions struct {
	// InputMap is the input-side map; "" means InputWx.
	InputMap InputMap
}

// Skipped records an input module that has no counterpart in the new model.
type Skipped struct {
	Layer  int
	Role   Role
	Reason string
}

// Projection is the result of Project.
type Projection struct {
	// Modules are the migrated modules, in input order, Layer set to the new
	// layer, same R; A and B re-balanced by Refactor.
	Modules []Module
	// Skipped lists old modules whose layer is not in the layer map.
	Skipped []Skipped
}

// Project migrates attention LoRA modules (q/k/v/o_proj) of an adapter trained
// on the old base through pa (step 4). It reads no base weights: all it needs
// is W_x and the per-head blocks. Each delta stays factored, so the new module
// has rank <= R exactly, then Refactor re-balances it:
//
//	q:   B_n[b] = T_Q[b] B_o[a_b]             A_n = inputMap(A_o)
//	k/v: B_n[g] = mean over matched b in KV group g of T[b] B_o[c_b]
//	                                          A_n = inputMap(A_o)
//	o:   B_n = W_x^T B_o                      A_n[:, b] = A_o[:, a_b] T_O[b]
//
// New heads without a matched old head get zero rows (q, k/v groups with no
// match) or zero columns (o). Because A_n is shared by every head of q/k/v,
// averaging the K/V head deltas of a group (H_n/G_n heads, the NEW model's
// group size) is averaging their B blocks; the mean is over the group's
// matched heads, which is the whole group whenever H_o >= H_n.
// MLP modules are rejected: use ProjectMLP.
func Project(ctx context.Context, pa *PairAnalysis, mods []Module, opts ProjectOptions) (*Projection, error) {
	im := opts.InputMap
	if im == "" {
		im = InputWx
	}
	if im != InputWx && im != InputPinv {
		return nil, fmt.Errorf("lorasuite: unknown input map %q (want %q or %q)", im, InputWx, InputPinv)
	}
	out := &Projection{}
	for _, m := range mods {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		la := pa.layerFor(m.Layer)
		if la == nil {
			out.Skipped = append(out.Skipped, Skipped{m.Layer, m.Role, "old layer not in the layer map"})
			continue
		}
		nm, err := projectModule(pa, la, m, im)
		if err != nil {
			return nil, fmt.Errorf("lorasuite: layer %d %s: %w", m.Layer, m.Role, err)
		}
		out.Modules = append(out.Modules, *nm)
	}
	return out, nil
}

// moduleShape returns (out, in) of role in a model with dims d.
func moduleShape(role Role, d Dims) (int, int, error) {
	switch role {
	case RoleQ:
		return d.Heads * d.HeadDim, d.Hidden, nil
	case RoleK, RoleV:
		return d.KVHeads * d.HeadDim, d.Hidden, nil
	case RoleO:
		return d.Hidden, d.Heads * d.HeadDim, nil
	case RoleGate, RoleUp, RoleDown:
		return 0, 0, fmt.Errorf("MLP module: needs the base MLP weights, use ProjectMLP")
	}
	return 0, 0, fmt.Errorf("unsupported role %q", role)
}

// factors checks a module against its old shape and returns B (out x r) and
// A (r x in) in float64.
func factors(m Module, out, in int) (*mat.Dense, *mat.Dense, error) {
	if m.R <= 0 {
		return nil, nil, fmt.Errorf("rank %d", m.R)
	}
	if len(m.A) != m.R*in || len(m.B) != out*m.R {
		return nil, nil, fmt.Errorf("lora_A has %d values, lora_B %d; want %d x %d and %d x %d", len(m.A), len(m.B), m.R, in, out, m.R)
	}
	for _, x := range [][]float32{m.A, m.B} {
		for i, v := range x {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, nil, fmt.Errorf("non-finite value %v at flat index %d", v, i)
			}
		}
	}
	return linalg.Dense64(m.B, out, m.R), linalg.Dense64(m.A, m.R, in), nil
}

// mapInput applies the input-side map to A (r x d_o), giving r x d_n.
func mapInput(tr *Transfer, a *mat.Dense, im InputMap) (*mat.Dense, error) {
	if im == InputWx {
		return tr.mulRight(a), nil
	}
	z, err := tr.pinvApply(a.T())
	if err != nil {
		return nil, err
	}
	return mat.DenseCopyOf(z.T()), nil
}

func projectModule(pa *PairAnalysis, la *LayerAnalysis, m Module, im InputMap) (*Module, error) {
	od, nd := pa.Old, pa.New
	out, in, err := moduleShape(m.Role, od)
	if err != nil {
		return nil, err
	}
	bo, ao, err := factors(m, out, in)
	if err != nil {
		return nil, err
	}
	r, ho, hn := m.R, od.HeadDim, nd.HeadDim
	var bn, an *mat.Dense
	switch m.Role {
	case RoleQ:
		if an, err = mapInput(pa.Transfer, ao, im); err != nil {
			return nil, err
		}
		bn = mat.NewDense(nd.Heads*hn, r, nil)
		for b, a := range la.Q.Src {
			if a >= 0 {
				bn.Slice(b*hn, (b+1)*hn, 0, r).(*mat.Dense).Mul(la.Q.T[b], bo.Slice(a*ho, (a+1)*ho, 0, r))
			}
		}
	case RoleK, RoleV:
		rb := &la.K
		if m.Role == RoleV {
			rb = &la.V
		}
		if an, err = mapInput(pa.Transfer, ao, im); err != nil {
			return nil, err
		}
		bn = mat.NewDense(nd.KVHeads*hn, r, nil)
		count := make([]int, nd.KVHeads)
		var tb mat.Dense
		for b, c := range rb.Src {
			if c < 0 {
				continue
			}
			g := nd.kvOf(b)
			tb.Mul(rb.T[b], bo.Slice(c*ho, (c+1)*ho, 0, r))
			dst := bn.Slice(g*hn, (g+1)*hn, 0, r).(*mat.Dense)
			dst.Add(dst, &tb)
			count[g]++
		}
		for g, n := range count {
			if n > 1 {
				dst := bn.Slice(g*hn, (g+1)*hn, 0, r).(*mat.Dense)
				dst.Scale(1/float64(n), dst)
			}
		}
	case RoleO:
		bn = pa.Transfer.mulLeftT(bo)
		an = mat.NewDense(r, nd.Heads*hn, nil)
		for b, a := range la.O.Src {
			if a >= 0 {
				an.Slice(0, r, b*hn, (b+1)*hn).(*mat.Dense).Mul(ao.Slice(0, r, a*ho, (a+1)*ho), la.O.T[b])
			}
		}
	}
	nb, na, err := Refactor(bn, an)
	if err != nil {
		return nil, err
	}
	return &Module{Layer: la.New, Role: m.Role, R: r, A: linalg.Float32(na), B: linalg.Float32(nb)}, nil
}
