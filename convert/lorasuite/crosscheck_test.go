package lorasuite

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/linalg"
)

// crossTol: the factored and dense computations of the same quantity differ
// only by float64 rounding in different summation orders (~1e-14 relative at
// these sizes); 1e-10 flags any algebraic slip while ignoring rounding.
const crossTol = 1e-10

func abs(x float64) float64 { return math.Abs(x) }

// A general pair: GQA on both sides with different group sizes, different
// head counts, widths and head dims, and a generic (non-orthonormal) W_x.
var (
	crossOld = Dims{Hidden: 11, Layers: 1, Heads: 4, KVHeads: 2, HeadDim: 3}
	crossNew = Dims{Hidden: 13, Layers: 1, Heads: 6, KVHeads: 2, HeadDim: 2}
)

func crossPair(t *testing.T, seed uint64, method HeadTransfer) (*PairAnalysis, *layer64, *layer64, *mat.Dense) {
	rng := rand.New(rand.NewPCG(seed, 5))
	old, nw := randomLayer(rng, crossOld), randomLayer(rng, crossNew)
	// Round the weights to float32 so the dense reference sees what Analyze sees.
	old = round32(old)
	nw = round32(nw)
	w := randMat(rng, crossOld.Hidden, crossNew.Hidden)
	pa, err := Analyze(context.Background(), crossOld, crossNew, NewTransfer(w), []LayerPair{{0, 0}},
		sourceOf([]*layer64{old}), sourceOf([]*layer64{nw}), Options{HeadTransfer: method, Float64: true})
	if err != nil {
		t.Fatal(err)
	}
	return pa, old, nw, w
}

func round32(l *layer64) *layer64 {
	r := func(m *mat.Dense) *mat.Dense {
		rows, cols := m.Dims()
		return linalg.Dense64(linalg.Float32(m), rows, cols)
	}
	return &layer64{Q: r(l.Q), K: r(l.K), V: r(l.V), O: r(l.O)}
}

// The factored similarity equals the cosine of the dense d_n x d_n circuits.
func TestHeadSimilarityMatchesDense(t *testing.T) {
	pa, old, nw, w := crossPair(t, 1, HeadLstsq)
	od, nd := crossOld, crossNew
	circuits := func(q, k, v, o *mat.Dense, d Dims, wx *mat.Dense) [][2]*mat.Dense {
		out := make([][2]*mat.Dense, d.Heads)
		for a := range out {
			c := d.kvOf(a)
			qk := mul(rowBlock(q, a, d.HeadDim).T(), rowBlock(k, c, d.HeadDim))
			vo := mul(rowBlock(v, c, d.HeadDim).T(), colBlock(o, a, d.HeadDim).T())
			if wx != nil {
				qk = mul(wx.T(), mul(qk, wx))
				vo = mul(wx.T(), mul(vo, wx))
			}
			out[a] = [2]*mat.Dense{qk, vo}
		}
		return out
	}
	co := circuits(old.Q, old.K, old.V, old.O, od, w)
	cn := circuits(nw.Q, nw.K, nw.V, nw.O, nd, nil)
	for a := range co {
		for b := range cn {
			dot := frobDot(co[a][0], cn[b][0]) + frobDot(co[a][1], cn[b][1])
			na := math.Sqrt(frobDot(co[a][0], co[a][0]) + frobDot(co[a][1], co[a][1]))
			nb := math.Sqrt(frobDot(cn[b][0], cn[b][0]) + frobDot(cn[b][1], cn[b][1]))
			if got, want := pa.Layers[0].Similarity.At(a, b), dot/(na*nb); abs(got-want) > crossTol {
				t.Fatalf("similarity[%d,%d] = %.15g, dense %.15g", a, b, got, want)
			}
		}
	}
}

// The lstsq blocks, fit residuals and gains equal dense least squares on the
// full head blocks; gram blocks equal M[a,b]^T.
func TestHeadTransferMatchesDense(t *testing.T) {
	for _, method := range []HeadTransfer{HeadLstsq, HeadGram} {
		pa, old, nw, w := crossPair(t, 2, method)
		la := pa.Layers[0]
		od, nd := crossOld, crossNew
		for b, a := range la.HeadMap {
			if a < 0 {
				continue
			}
			// q_proj rows: X = Q_o[a] W (h_o x d_n), Y = Q_n[b].
			x, y := mul(rowBlock(old.Q, a, od.HeadDim), w), rowBlock(nw.Q, b, nd.HeadDim)
			checkRowTransfer(t, method, "q_proj", la.Q, b, x, y)
			// o_proj columns: X = W^T O_o[:, a] (d_n x h_o), Y = O_n[:, b].
			xo, yo := mul(w.T(), colBlock(old.O, a, od.HeadDim)), colBlock(nw.O, b, nd.HeadDim)
			checkRowTransfer(t, method, "o_proj", transposeBlocks(la.O), b, mat.DenseCopyOf(xo.T()), mat.DenseCopyOf(yo.T()))
			// k_proj: repeated KV heads on both sides.
			xk := mul(rowBlock(old.K, od.kvOf(a), od.HeadDim), w)
			checkRowTransfer(t, method, "k_proj", la.K, b, xk, rowBlock(nw.K, nd.kvOf(b), nd.HeadDim))
		}
	}
}

// transposeBlocks turns o_proj's column transfers S into row transfers S^T.
func transposeBlocks(rb RoleBlocks) RoleBlocks {
	out := rb
	out.T = make([]Block, len(rb.T))
	for i, s := range rb.T {
		if !s.Empty() {
			out.T[i] = blockOf(mat.DenseCopyOf(s.Dense().T()))
		}
	}
	return out
}

// checkRowTransfer compares block b of rb with the dense solution of
// min ||T x - y||_F (lstsq) or T = y x^T (gram), and the residual and gain.
func checkRowTransfer(t *testing.T, method HeadTransfer, role string, rb RoleBlocks, b int, x, y *mat.Dense) {
	t.Helper()
	var want mat.Dense
	if method == HeadGram {
		want.Mul(y, x.T())
	} else {
		// T = y x^T (x x^T)^-1 by a dense solve of (x x^T) T^T = x y^T.
		var tt mat.Dense
		if err := tt.Solve(mul(x, x.T()), mul(x, y.T())); err != nil {
			t.Fatal(err)
		}
		want.CloneFrom(tt.T())
	}
	got := rb.T[b].Dense()
	// The lstsq path adds a 1e-10 relative ridge; x x^T has cond ~1e2 here.
	if e := relErr(got, &want); e > 1e-8 {
		t.Fatalf("%s %s head %d: T off the dense solution by %g", method, role, b, e)
	}
	var r mat.Dense
	r.Mul(&want, x)
	r.Sub(&r, y)
	res := mat.Norm(&r, 2) / mat.Norm(y, 2)
	if abs(rb.Residual[b]-res) > 1e-6*max(res, 1) { // squared-form residual: ~sqrt(eps) absolute
		t.Fatalf("%s %s head %d: residual %.12g, dense %.12g", method, role, b, rb.Residual[b], res)
	}
	if g := mustSpectral(t, &want); abs(rb.Gain[b]-g) > 1e-8*g {
		t.Fatalf("%s %s head %d: gain %g, dense %g", method, role, b, rb.Gain[b], g)
	}
}

// pinvT returns pinv(w)^T via the SVD (test reference only).
func pinvT(t *testing.T, w *mat.Dense) *mat.Dense {
	u, s, vt, err := linalg.SVD(w)
	if err != nil {
		t.Fatal(err)
	}
	// pinv(w)^T = u diag(1/s) vt.
	us := mat.DenseCopyOf(u)
	for j, v := range s {
		col := us.ColView(j).(*mat.VecDense)
		col.ScaleVec(1/v, col)
	}
	return mul(us, vt)
}

// Factored projection + Refactor equals the dense projection of s B A followed
// by an SVD truncated to rank r (the reference's procedure).
func TestProjectMatchesDense(t *testing.T) {
	const r = 3
	const scale = 16.0 / r // lora_alpha / r: the same on both sides
	for _, im := range []InputMap{InputWx, InputPinv} {
		pa, _, _, w := crossPair(t, 3, HeadLstsq)
		la := pa.Layers[0]
		od, nd := crossOld, crossNew
		inMap := w
		if im == InputPinv {
			inMap = pinvT(t, w)
		}
		rng := rand.New(rand.NewPCG(8, 8))
		for _, role := range []Role{RoleQ, RoleK, RoleV, RoleO} {
			m := randModule(rng, od, 0, role, r)
			dw := delta(m, od)
			dw.Scale(scale, dw)
			var want *mat.Dense
			switch role {
			case RoleQ:
				want = mat.NewDense(nd.Heads*nd.HeadDim, nd.Hidden, nil)
				for b, a := range la.Q.Src {
					if a >= 0 {
						setRowBlock(want, b, nd.HeadDim, mul(la.Q.T[b].Dense(), mul(rowBlock(dw, a, od.HeadDim), inMap)))
					}
				}
			case RoleK, RoleV:
				rb := la.K
				if role == RoleV {
					rb = la.V
				}
				want = mat.NewDense(nd.KVHeads*nd.HeadDim, nd.Hidden, nil)
				for g := 0; g < nd.KVHeads; g++ {
					acc := mat.NewDense(nd.HeadDim, nd.Hidden, nil)
					n := 0
					for b, c := range rb.Src {
						if c >= 0 && nd.kvOf(b) == g {
							acc.Add(acc, mul(rb.T[b].Dense(), mul(rowBlock(dw, c, od.HeadDim), inMap)))
							n++
						}
					}
					if n > 0 {
						acc.Scale(1/float64(n), acc)
					}
					setRowBlock(want, g, nd.HeadDim, acc)
				}
			case RoleO:
				want = mat.NewDense(nd.Hidden, nd.Heads*nd.HeadDim, nil)
				for b, a := range la.O.Src {
					if a >= 0 {
						setColBlock(want, b, nd.HeadDim, mul(mul(w.T(), colBlock(dw, a, od.HeadDim)), la.O.T[b].Dense()))
					}
				}
			}
			want = truncate(t, want, r)
			for _, f64 := range []bool{false, true} {
				res, err := Project(context.Background(), pa, []Module{m}, ProjectOptions{InputMap: im, Float64: f64})
				if err != nil {
					t.Fatal(err)
				}
				got := delta(res.Modules[0], nd)
				got.Scale(scale, got)
				// float32 output factors (and, by default, the float32 A_o W_x and W_x^T B_o
				// products): ~1e-7 relative.
				if e := relErr(got, want); e > 1e-6 {
					t.Errorf("%s %s float64=%v: factored projection off the dense one by %g", im, role, f64, e)
				}
			}
		}
	}
}

// truncate returns the best rank-r approximation of a (dense SVD).
func truncate(t *testing.T, a *mat.Dense, r int) *mat.Dense {
	u, s, vt, err := linalg.SVD(a)
	if err != nil {
		t.Fatal(err)
	}
	k := min(r, len(s))
	rows, cols := a.Dims()
	uk := mat.DenseCopyOf(u.Slice(0, rows, 0, k))
	for j := 0; j < k; j++ {
		col := uk.ColView(j).(*mat.VecDense)
		col.ScaleVec(s[j], col)
	}
	return mul(uk, vt.Slice(0, k, 0, cols))
}
