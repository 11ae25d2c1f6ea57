package lorasuite

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/linalg"
)

// Tolerances of the MLP cross-checks.
const (
	// directTol: the factored path does the same float64 arithmetic as the
	// per-call solve but sums the Gram and the thin products in another order
	// (blocks); the normal equations amplify that by cond(W_o)^2, ~1e3 for
	// the random shapes below, so ~1e-13 is expected and 1e-10 is generous.
	directTol = 1e-10
	// pinvTol + pinvCondTol*cond(X)^2 per pseudo-inverse (X = W_o, W_x):
	// against a dense SVD pseudo-inverse, the ridge (1e-12 of the mean
	// eigenvalue) shifts the smallest eigen-direction by up to 1e-12 cond(X)^2
	// relative, and the normal equations lose ~1e-16 cond(X)^2; 10x margin on
	// the ridge term (random square matrices reach cond ~ 1e2-1e3).
	pinvTol     = 1e-9
	pinvCondTol = 1e-11
	// float32Tol: Project returns float32 factors (2^-24 relative each); their
	// product is ~1e-7 off the float64 delta, 1e-6 with r terms per entry.
	float32Tol = 1e-6
)

// mlpShape is one test configuration: old/new hidden and intermediate sizes.
type mlpShape struct{ do, dn, io, in int }

// mlpShapes covers tall old weights (every real model), a wide one (I < d,
// the other Gram side) and square ones, wider and narrower new models.
var mlpShapes = []mlpShape{{12, 16, 40, 52}, {12, 9, 30, 30}, {10, 10, 10, 14}, {14, 18, 8, 11}}

// mlpPair returns a one-layer-pair analysis (old layer 1 -> new layer 0) with
// a general W_x (not orthonormal, so pinv(W_x) != W_x^T).
func mlpPair(rng *rand.Rand, s mlpShape) *PairAnalysis {
	pa := &PairAnalysis{
		Old:      Dims{Hidden: s.do, Layers: 2, Heads: 1, KVHeads: 1, HeadDim: 2},
		New:      Dims{Hidden: s.dn, Layers: 1, Heads: 1, KVHeads: 1, HeadDim: 2},
		Transfer: NewTransfer(randMat(rng, s.do, s.dn)), LayerMap: []LayerPair{{1, 0}},
	}
	pa.Layers = []LayerAnalysis{unmatchedLayer(pa, 1, 0)}
	return pa
}

// mlpCase draws old and new base weights and a module for role.
func mlpCase(rng *rand.Rand, s mlpShape, role Role, r int) (m Module, wo, wn *mat.Dense) {
	if role == RoleDown {
		wo, wn = randMat(rng, s.do, s.io), randMat(rng, s.dn, s.in)
		m = Module{Layer: 1, Role: role, R: r, A: linalg.Float32(randMat(rng, r, s.io)), B: linalg.Float32(randMat(rng, s.do, r))}
	} else {
		wo, wn = randMat(rng, s.io, s.do), randMat(rng, s.in, s.dn)
		m = Module{Layer: 1, Role: role, R: r, A: linalg.Float32(randMat(rng, r, s.do)), B: linalg.Float32(randMat(rng, s.io, r))}
	}
	// Round the weights to float32 so every path sees the same values.
	wo = linalg.Dense64(linalg.Float32(wo), wo.RawMatrix().Rows, wo.RawMatrix().Cols)
	wn = linalg.Dense64(linalg.Float32(wn), wn.RawMatrix().Rows, wn.RawMatrix().Cols)
	return m, wo, wn
}

// product returns B A of a migrated module.
func product(m *Module, out, in int) *mat.Dense {
	return mul(linalg.Dense64(m.B, out, m.R), linalg.Dense64(m.A, m.R, in))
}

// projectMLPDirect is the previous ProjectMLP, kept as the reference: one
// ridged Gram and Cholesky of the base weight per call.
func projectMLPDirect(pa *PairAnalysis, m Module, wo, wn *mat.Dense, im InputMap) (*mat.Dense, error) {
	bo := linalg.Dense64(m.B, len(m.B)/m.R, m.R)
	ao := linalg.Dense64(m.A, m.R, len(m.A)/m.R)
	if m.Role == RoleDown {
		bn, err := pa.Transfer.pinvApply(bo)
		if err != nil {
			return nil, err
		}
		x, err := pinvSolve(wo.T(), ao.T())
		if err != nil {
			return nil, err
		}
		return mul(bn, mul(pa.Transfer.mulRight(x.T()), wn)), nil
	}
	x, err := pinvSolve(wo, bo)
	if err != nil {
		return nil, err
	}
	y, err := pa.Transfer.pinvApply(x)
	if err != nil {
		return nil, err
	}
	an, err := mapInput(pa.Transfer, ao, im)
	if err != nil {
		return nil, err
	}
	return mul(mul(wn, y), an), nil
}

// pinvSolve is the previous per-call least-squares solve pinv(x) y.
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
	for i := 0; i < n; i++ {
		g.SetSym(i, i, g.At(i, i)+l)
	}
	if tall {
		return linalg.SolveSPD(&g, mul(x.T(), y))
	}
	z, err := linalg.SolveSPD(&g, y)
	if err != nil {
		return nil, err
	}
	return mul(x.T(), z), nil
}

// pinvTolFor is pinvTol + pinvCondTol * cond(a)^2.
func pinvTolFor(t *testing.T, a mat.Matrix) float64 {
	t.Helper()
	sv, err := linalg.SingularValues(a)
	if err != nil {
		t.Fatal(err)
	}
	c := sv[0] / sv[len(sv)-1]
	return pinvTol + pinvCondTol*c*c
}

// densePinv is the SVD pseudo-inverse, for brute-force checks.
func densePinv(t *testing.T, a mat.Matrix) *mat.Dense {
	t.Helper()
	u, s, vt, err := linalg.SVD(a)
	if err != nil {
		t.Fatal(err)
	}
	for i := range s {
		if s[i] < 1e-12*s[0] {
			t.Fatalf("densePinv: singular value %d is %g of the largest", i, s[i]/s[0])
		}
		s[i] = 1 / s[i]
	}
	var us mat.Dense
	us.Apply(func(_, j int, v float64) float64 { return v * s[j] }, u)
	return mul(vt.T(), us.T())
}

// The operator path (NewMLPOperator + Project, and the ProjectMLP wrapper)
// equals the previous per-call solve and the reference formula with dense
// SVD pseudo-inverses, for every role, input map and Gram side.
func TestMLPOperatorMatchesDirectAndDense(t *testing.T) {
	rng := rand.New(rand.NewPCG(61, 62))
	ctx := context.Background()
	const r = 3
	for _, s := range mlpShapes {
		pa := mlpPair(rng, s)
		pwx := densePinv(t, pa.Transfer.W)
		pinvWx, err := NewTransferPinv(pa.Transfer)
		if err != nil {
			t.Fatal(err)
		}
		if e := relErr(pinvWx, pwx); e > pinvTolFor(t, pa.Transfer.W) {
			t.Fatalf("%v: NewTransferPinv off the SVD pseudo-inverse by %.2g", s, e)
		}
		for _, role := range []Role{RoleGate, RoleUp, RoleDown} {
			for _, im := range []InputMap{InputWx, InputPinv} {
				m, wo, wn := mlpCase(rng, s, role, r)
				op, err := NewMLPOperator(ctx, pa, role, 1, linalg.Float32(wo), s.io)
				if err != nil {
					t.Fatal(err)
				}
				if op.NewLayer != 0 || op.Gram.N != min(s.io, s.do) {
					t.Fatalf("%v %s: operator for new layer %d with Gram order %d", s, role, op.NewLayer, op.Gram.N)
				}
				bn, an, err := op.delta(ctx, pa, m, linalg.Float32(wo), linalg.Float32(wn), s.in, im)
				if err != nil {
					t.Fatal(err)
				}
				dw := mul(bn, an)
				want, err := projectMLPDirect(pa, m, wo, wn, im)
				if err != nil {
					t.Fatal(err)
				}
				if e := relErr(dw, want); e > directTol {
					t.Errorf("%v %s/%s: operator path off the per-call solve by %.2g", s, role, im, e)
				}
				// With the explicit pinv(W_x) (what the convert cache hands out).
				withP := *op
				withP.PinvWx = pinvWx
				bn, an, err = withP.delta(ctx, pa, m, linalg.Float32(wo), linalg.Float32(wn), s.in, im)
				if err != nil {
					t.Fatal(err)
				}
				if e := relErr(mul(bn, an), want); e > directTol {
					t.Errorf("%v %s/%s: operator with explicit pinv(W_x) off the per-call solve by %.2g", s, role, im, e)
				}
				// Brute force: the reference formula with dense pseudo-inverses.
				bo := linalg.Dense64(m.B, len(m.B)/r, r)
				ao := linalg.Dense64(m.A, r, len(m.A)/r)
				var dense *mat.Dense
				if role == RoleDown {
					dense = mul(mul(pwx, bo), mul(mul(mul(ao, densePinv(t, wo)), pa.Transfer.W), wn))
				} else {
					an := mul(ao, pa.Transfer.W)
					if im == InputPinv {
						an = mul(ao, pwx.T())
					}
					dense = mul(mul(mul(mul(wn, pwx), densePinv(t, wo)), bo), an)
				}
				if e := relErr(dw, dense); e > pinvTolFor(t, wo)+pinvTolFor(t, pa.Transfer.W) {
					t.Errorf("%v %s/%s: operator path off the dense pinv formula by %.2g", s, role, im, e)
				}
				// The public result is that delta re-factored and rounded to
				// float32, by Project and by the one-shot ProjectMLP alike.
				got, err := op.Project(ctx, pa, m, linalg.Float32(wo), linalg.Float32(wn), s.in, ProjectOptions{InputMap: im})
				if err != nil {
					t.Fatal(err)
				}
				out, in := dw.Dims()
				if e := relErr(product(got, out, in), dw); e > float32Tol {
					t.Errorf("%v %s/%s: Project's float32 factors off the delta by %.2g", s, role, im, e)
				}
				one, err := ProjectMLP(ctx, pa, m, linalg.Float32(wo), s.io, linalg.Float32(wn), s.in, ProjectOptions{InputMap: im})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(one.A, got.A) || !slices.Equal(one.B, got.B) {
					t.Errorf("%v %s/%s: ProjectMLP differs from NewMLPOperator + Project", s, role, im)
				}
			}
		}
	}
}

// An operator rebuilt from its exported fields (what a cache stores: the
// packed float64 factor) projects bit for bit like the computed one.
func TestMLPOperatorRoundTripIsExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(63, 64))
	ctx := context.Background()
	s := mlpShapes[0]
	pa := mlpPair(rng, s)
	for _, role := range []Role{RoleUp, RoleDown} {
		m, wo, wn := mlpCase(rng, s, role, 4)
		op, err := NewMLPOperator(ctx, pa, role, 1, linalg.Float32(wo), s.io)
		if err != nil {
			t.Fatal(err)
		}
		again := &MLPOperator{Role: op.Role, OldLayer: op.OldLayer, NewLayer: op.NewLayer, Inter: op.Inter, Hidden: op.Hidden,
			Gram: &GramFactor{Kind: op.Gram.Kind, N: op.Gram.N, Ridge: op.Gram.Ridge, Packed: slices.Clone(op.Gram.Packed)}}
		a, err := op.Project(ctx, pa, m, linalg.Float32(wo), linalg.Float32(wn), s.in, ProjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := again.Project(ctx, pa, m, linalg.Float32(wo), linalg.Float32(wn), s.in, ProjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(a.A, b.A) || !slices.Equal(a.B, b.B) {
			t.Errorf("%s: operator from its packed factor does not project bit for bit", role)
		}
	}
}

// Hand-checked on a 2 x 3 weight W = [[1 2 0] [0 1 3]] with ridge 0.5 of the
// mean eigenvalue: W W^T = [[5 2] [2 10]], lambda = 3.75, so G + lambda I =
// [[8.75 2] [2 13.75]]; its packed Cholesky factor and packed inverse follow
// by hand. W^T W (order 3, rank 2) needs the ridge to factor at all.
func TestGramFactorHandWorked(t *testing.T) {
	ctx := context.Background()
	w := []float32{1, 2, 0, 0, 1, 3}
	ch, l, err := ridgedGram(ctx, w, 2, 3, false, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if l != 3.75 {
		t.Fatalf("ridge %g, want 0.5 * 15/2", l)
	}
	u00 := math.Sqrt(8.75)
	det := 8.75*13.75 - 4
	for _, tc := range []struct {
		got  *GramFactor
		want []float64
	}{
		{packCholesky(ch), []float64{u00, 2 / u00, math.Sqrt(13.75 - 4/8.75)}},
		{mustInverse(t, w, 0.5), []float64{13.75 / det, -2 / det, 8.75 / det}},
	} {
		for i := range tc.want {
			if math.Abs(tc.got.Packed[i]-tc.want[i]) > 1e-15 {
				t.Fatalf("%s: packed %v, want %v", tc.got.Kind, tc.got.Packed, tc.want)
			}
		}
		if err := tc.got.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := ridgedGram(ctx, w, 2, 3, true, 0); err == nil {
		t.Fatal("rank-deficient W^T W with zero ridge factored")
	}
	if _, _, err := ridgedGram(ctx, w, 2, 3, true, 1e-3); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ridgedGram(ctx, make([]float32, 6), 2, 3, true, 1e-3); err == nil || !strings.Contains(err.Error(), "all zero") {
		t.Errorf("zero weight: err = %v", err)
	}
	// A factor of the wrong kind is refused where the other is needed.
	if _, err := packCholesky(ch).inverse(); err == nil {
		t.Error("a Cholesky factor served as an inverse")
	}
	if err := (&GramFactor{Kind: "lu", N: 1, Packed: []float64{1}}).Validate(); err == nil {
		t.Error("unknown kind accepted")
	}
}

func mustInverse(t *testing.T, w []float32, ridge float64) *GramFactor {
	t.Helper()
	f, err := gramInverseOf(context.Background(), w, 2, 3, false, ridge)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A corrupt factor or an operator that does not fit the pair is an error.
func TestMLPOperatorRejectsBadInput(t *testing.T) {
	rng := rand.New(rand.NewPCG(65, 66))
	ctx := context.Background()
	s := mlpShapes[0]
	pa := mlpPair(rng, s)
	m, wo, wn := mlpCase(rng, s, RoleGate, 2)
	fresh := func() *MLPOperator {
		op, err := NewMLPOperator(ctx, pa, RoleGate, 1, linalg.Float32(wo), s.io)
		if err != nil {
			t.Fatal(err)
		}
		return op
	}
	if op, err := NewMLPOperator(ctx, pa, RoleGate, 0, nil, s.io); op != nil || err != nil {
		t.Errorf("unmapped layer: %v, %v; want nil, nil", op, err)
	}
	for _, tc := range []struct {
		name string
		err  func() error
		msg  string
	}{
		{"attention role", func() error { _, err := NewMLPOperator(ctx, pa, RoleQ, 1, linalg.Float32(wo), s.io); return err }, "not an MLP role"},
		{"short weight", func() error { _, err := NewMLPOperator(ctx, pa, RoleGate, 1, make([]float32, 5), s.io); return err }, "has 5 values"},
		{"other role", func() error {
			mm := m
			mm.Role = RoleUp
			_, err := fresh().Project(ctx, pa, mm, linalg.Float32(wo), linalg.Float32(wn), s.in, ProjectOptions{})
			return err
		}, "operator is for layer 1 gate_proj"},
		{"new layer", func() error {
			op := fresh()
			op.NewLayer = 5
			_, err := op.Project(ctx, pa, m, linalg.Float32(wo), linalg.Float32(wn), s.in, ProjectOptions{})
			return err
		}, "not a pair of the layer map"},
		{"short factor", func() error {
			op := fresh()
			op.Gram = &GramFactor{Kind: GramInverse, N: op.Gram.N, Packed: op.Gram.Packed[:3]}
			_, err := op.Project(ctx, pa, m, linalg.Float32(wo), linalg.Float32(wn), s.in, ProjectOptions{})
			return err
		}, "packed values"},
		{"NaN factor", func() error {
			op := fresh()
			u := slices.Clone(op.Gram.Packed)
			u[0] = math.NaN()
			op.Gram = &GramFactor{Kind: GramInverse, N: op.Gram.N, Packed: u}
			_, err := op.Project(ctx, pa, m, linalg.Float32(wo), linalg.Float32(wn), s.in, ProjectOptions{})
			return err
		}, "entry (0, 0)"},
		{"pinv shape", func() error {
			op := fresh()
			op.PinvWx = mat.NewDense(s.do, s.do, nil)
			_, err := op.Project(ctx, pa, m, linalg.Float32(wo), linalg.Float32(wn), s.in, ProjectOptions{})
			return err
		}, "pinv(W_x) is 12 x 12"},
		{"factor kind", func() error {
			op := fresh()
			op.Gram = &GramFactor{Kind: GramCholesky, N: op.Gram.N, Packed: op.Gram.Packed}
			_, err := op.Project(ctx, pa, m, linalg.Float32(wo), linalg.Float32(wn), s.in, ProjectOptions{})
			return err
		}, "want \"inverse\""},
		{"new weight", func() error {
			_, err := fresh().Project(ctx, pa, m, linalg.Float32(wo), make([]float32, 7), s.in, ProjectOptions{})
			return err
		}, "base weights have"},
		{"input map", func() error {
			_, err := fresh().Project(ctx, pa, m, linalg.Float32(wo), linalg.Float32(wn), s.in, ProjectOptions{InputMap: "x"})
			return err
		}, "unknown input map"},
	} {
		if err := tc.err(); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: err = %v, want one containing %q", tc.name, err, tc.msg)
		}
	}
}

// A pinv(W_x) factor handed back with SetPinvFactor gives bit-for-bit the
// solves of the computed one, on both sides (d_n <= d_o and d_n > d_o).
func TestTransferPinvFactorRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(67, 68))
	for _, dims := range [][2]int{{9, 6}, {6, 9}} {
		w := randMat(rng, dims[0], dims[1])
		y := randMat(rng, dims[0], 3)
		a := NewTransfer(w)
		f, err := a.PinvFactor()
		if err != nil {
			t.Fatal(err)
		}
		want, err := a.pinvApply(y)
		if err != nil {
			t.Fatal(err)
		}
		b := NewTransfer(mat.DenseCopyOf(w))
		if err := b.SetPinvFactor(&GramFactor{Kind: f.Kind, N: f.N, Packed: slices.Clone(f.Packed)}); err != nil {
			t.Fatal(err)
		}
		got, err := b.pinvApply(y)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.RawMatrix().Data, want.RawMatrix().Data) {
			t.Errorf("%v: pinv(W_x) from the packed factor differs", dims)
		}
		if err := NewTransfer(w).SetPinvFactor(&GramFactor{Kind: GramCholesky, N: f.N + 1, Packed: make([]float64, PackedLen(f.N+1))}); err == nil {
			t.Errorf("%v: factor of the wrong order accepted", dims)
		}
	}
	if f, err := IdentityTransfer(4).PinvFactor(); f != nil || err != nil {
		t.Errorf("identity: %v, %v", f, err)
	}
	if p, err := NewTransferPinv(IdentityTransfer(4)); p != nil || err != nil {
		t.Errorf("identity pinv: %v, %v", p, err)
	}
}
