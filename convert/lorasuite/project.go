package lorasuite

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync"

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
	// Float64 computes the batched products with W_x, A_o W_x (InputWx) and
	// W_x^T B_o (o_proj), in float64. By default they run in float32 (Sgemm,
	// float32 accumulation): the adapter factors are float32 on input and
	// output, and the products' relative error is ~1e-6 at d = 4096 (sqrt(d)
	// ulps), well below what the written float32/bf16 adapter keeps. Other
	// products are always float64.
	Float64 bool
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
//
// Cost: the products with W_x dominate (2 r d_o d_n flops per module); they
// are batched into one GEMM for all q/k/v modules and one for all o modules,
// so W_x is streamed from memory twice per call rather than once per module:
// pass all of an adapter's modules in one call. MLP modules are rejected: use
// ProjectMLP.
func Project(ctx context.Context, pa *PairAnalysis, mods []Module, opts ProjectOptions) (*Projection, error) {
	im := opts.InputMap
	if im == "" {
		im = InputWx
	}
	if im != InputWx && im != InputPinv {
		return nil, fmt.Errorf("lorasuite: unknown input map %q (want %q or %q)", im, InputWx, InputPinv)
	}
	if err := pa.Validate(); err != nil {
		return nil, err
	}
	out := &Projection{}
	type job struct {
		m      Module
		la     *LayerAnalysis
		bo, ao *mat.Dense
		off    int // first row (q/k/v: of A_o^T stacks) or column (o: of B_o stacks)
	}
	var jobs []*job
	inRows, outCols := 0, 0
	for _, m := range mods {
		la := pa.layerFor(m.Layer)
		if la == nil {
			out.Skipped = append(out.Skipped, Skipped{m.Layer, m.Role, "old layer not in the layer map"})
			continue
		}
		o, in, err := moduleShape(m.Role, pa.Old)
		if err != nil {
			return nil, fmt.Errorf("lorasuite: layer %d %s: %w", m.Layer, m.Role, err)
		}
		bo, ao, err := factors(m, o, in)
		if err != nil {
			return nil, fmt.Errorf("lorasuite: layer %d %s: %w", m.Layer, m.Role, err)
		}
		j := &job{m: m, la: la, bo: bo, ao: ao}
		if m.Role == RoleO {
			j.off, outCols = outCols, outCols+m.R
		} else {
			j.off, inRows = inRows, inRows+m.R
		}
		jobs = append(jobs, j)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// One batched product for every hidden-side factor.
	var mappedA, mappedB *mat.Dense
	if inRows > 0 {
		stack := mat.NewDense(inRows, pa.Old.Hidden, nil)
		for _, j := range jobs {
			if j.m.Role != RoleO {
				stack.Slice(j.off, j.off+j.m.R, 0, pa.Old.Hidden).(*mat.Dense).Copy(j.ao)
			}
		}
		if im == InputWx && !opts.Float64 {
			mappedA = linalg.Dense64(pa.Transfer.mulRight32(nil, linalg.Float32(stack), inRows), inRows, pa.New.Hidden)
		} else {
			var err error
			if mappedA, err = mapInput(pa.Transfer, stack, im); err != nil {
				return nil, fmt.Errorf("lorasuite: input map %s: %w", im, err)
			}
		}
	}
	if outCols > 0 && opts.Float64 {
		stack := mat.NewDense(pa.Old.Hidden, outCols, nil)
		for _, j := range jobs {
			if j.m.Role == RoleO {
				stack.Slice(0, pa.Old.Hidden, j.off, j.off+j.m.R).(*mat.Dense).Copy(j.bo)
			}
		}
		mappedB = pa.Transfer.mulLeftT(stack)
	} else if outCols > 0 {
		// W_x^T B_o in float32 as its transpose B_o^T W_x: the o_proj B
		// factors stacked as rows (outCols x d_o), so that the product is
		// the same untransposed Sgemm as the input side's.
		stack := make([]float32, outCols*pa.Old.Hidden)
		for _, j := range jobs {
			if j.m.Role == RoleO {
				transpose32(stack[j.off*pa.Old.Hidden:], j.m.B, pa.Old.Hidden, j.m.R)
			}
		}
		mt := linalg.Dense64(pa.Transfer.mulRight32(nil, stack, outCols), outCols, pa.New.Hidden)
		mappedB = mat.DenseCopyOf(mt.T())
	}
	// Finish the modules (head blocks + Refactor) on GOMAXPROCS workers:
	// small products, QRs and r x r SVDs, so single-threaded BLAS (see
	// linalg.SerialBLAS); the batched products with W_x are done.
	release := linalg.SerialBLAS()
	defer release()
	results := make([]*Module, len(jobs))
	errs := make([]error, len(jobs))
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				j := jobs[i]
				var side *mat.Dense
				if j.m.Role == RoleO {
					side = mat.DenseCopyOf(mappedB.Slice(0, pa.New.Hidden, j.off, j.off+j.m.R))
				} else {
					side = mat.DenseCopyOf(mappedA.Slice(j.off, j.off+j.m.R, 0, pa.New.Hidden))
				}
				results[i], errs[i] = projectModule(pa, j.la, j.m, j.bo, j.ao, side)
			}
		}()
	}
	for i := range jobs {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	release()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for i, j := range jobs {
		if errs[i] != nil {
			return nil, fmt.Errorf("lorasuite: layer %d %s: %w", j.m.Layer, j.m.Role, errs[i])
		}
		out.Modules = append(out.Modules, *results[i])
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

// projectModule finishes one module given its hidden-side factor already
// mapped: side is A_n (r x d_n) for q/k/v and B_n = W_x^T B_o (d_n x r) for o.
func projectModule(pa *PairAnalysis, la *LayerAnalysis, m Module, bo, ao, side *mat.Dense) (*Module, error) {
	od, nd := pa.Old, pa.New
	r, ho, hn := m.R, od.HeadDim, nd.HeadDim
	var bn, an *mat.Dense
	switch m.Role {
	case RoleQ:
		an = side
		bn = mat.NewDense(nd.Heads*hn, r, nil)
		for b, a := range la.Q.Src {
			if a >= 0 {
				bn.Slice(b*hn, (b+1)*hn, 0, r).(*mat.Dense).Mul(la.Q.T[b].Dense(), bo.Slice(a*ho, (a+1)*ho, 0, r))
			}
		}
	case RoleK, RoleV:
		rb := &la.K
		if m.Role == RoleV {
			rb = &la.V
		}
		an = side
		bn = mat.NewDense(nd.KVHeads*hn, r, nil)
		count := make([]int, nd.KVHeads)
		var tb mat.Dense
		for b, c := range rb.Src {
			if c < 0 {
				continue
			}
			g := nd.kvOf(b)
			tb.Mul(rb.T[b].Dense(), bo.Slice(c*ho, (c+1)*ho, 0, r))
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
		bn = side
		an = mat.NewDense(r, nd.Heads*hn, nil)
		for b, a := range la.O.Src {
			if a >= 0 {
				an.Slice(0, r, b*hn, (b+1)*hn).(*mat.Dense).Mul(ao.Slice(0, r, a*ho, (a+1)*ho), la.O.T[b].Dense())
			}
		}
	}
	nb, na, err := Refactor(bn, an)
	if err != nil {
		return nil, err
	}
	return &Module{Layer: la.New, Role: m.Role, R: r, A: linalg.Float32(na), B: linalg.Float32(nb)}, nil
}

// Refactor re-balances a rank-<=r product dW = b a, b (out x r), a (r x in),
// into b' (out x r), a' (r x in) with b' a' = b a and the singular values
// split evenly: with thin QRs b = Q_b R_b and a^T = Q_a R_a and the r x r SVD
// R_b R_a^T = U S V^T,
//
//	b' = Q_b U sqrt(S),  a' = sqrt(S) V^T Q_a^T.
//
// This is the reference's "dense SVD, keep rank r" (B = U_r sqrt(S_r),
// A = sqrt(S_r) V_r^T) at O((out + in) r^2) instead of O(out in min(out, in)),
// and gives the same dW to float precision because rank(dW) <= r already.
// The LoRA scale s = alpha/r (or alpha/sqrt(r)) is not involved: b' a' = b a
// with the same r, so an adapter written with the same r and alpha reproduces
// s b a. When out < r or in < r (tiny models) it falls back to the dense SVD
// and pads with zero columns/rows so b' and a' keep r.
func Refactor(b, a *mat.Dense) (*mat.Dense, *mat.Dense, error) {
	out, r := b.Dims()
	r2, in := a.Dims()
	if r != r2 {
		panic(fmt.Sprintf("lorasuite: Refactor of b %d x %d and a %d x %d", out, r, r2, in))
	}
	if out < r || in < r {
		return refactorDense(b, a)
	}
	qb, rb := linalg.QR(b)
	qa, ra := linalg.QR(a.T())
	var core mat.Dense
	core.Mul(rb, ra.T())
	u, s, vt, err := linalg.SVD(&core)
	if err != nil {
		return nil, nil, fmt.Errorf("lorasuite: re-factorising rank-%d delta: %w", r, err)
	}
	scaleCols(u, s)
	scaleRows(vt, s)
	nb := mat.NewDense(out, r, nil)
	nb.Mul(qb, u)
	na := mat.NewDense(r, in, nil)
	na.Mul(vt, qa.T())
	return nb, na, nil
}

// refactorDense handles out < r or in < r via the SVD of the dense product.
func refactorDense(b, a *mat.Dense) (*mat.Dense, *mat.Dense, error) {
	out, r := b.Dims()
	_, in := a.Dims()
	var dw mat.Dense
	dw.Mul(b, a)
	u, s, vt, err := linalg.SVD(&dw)
	if err != nil {
		return nil, nil, fmt.Errorf("lorasuite: re-factorising %d x %d delta: %w", out, in, err)
	}
	k := len(s)
	scaleCols(u, s)
	scaleRows(vt, s)
	nb := mat.NewDense(out, r, nil)
	na := mat.NewDense(r, in, nil)
	if k > 0 {
		nb.Slice(0, out, 0, k).(*mat.Dense).Copy(u)
		na.Slice(0, k, 0, in).(*mat.Dense).Copy(vt)
	}
	return nb, na, nil
}

// scaleCols multiplies column j of m by sqrt(s[j]).
func scaleCols(m *mat.Dense, s []float64) {
	rows, _ := m.Dims()
	for j, v := range s {
		f := math.Sqrt(v)
		for i := 0; i < rows; i++ {
			m.Set(i, j, m.At(i, j)*f)
		}
	}
}

// scaleRows multiplies row i of m by sqrt(s[i]).
func scaleRows(m *mat.Dense, s []float64) {
	for i, v := range s {
		row := m.RawRowView(i)
		f := math.Sqrt(v)
		for j := range row {
			row[j] *= f
		}
	}
}
