package lorasuite

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/linalg"
)

// A hand-worked 1-d case: E_o = [1; 2; 3], E_n = [2; 4; 7]:
// W = (1*2 + 2*4 + 3*7)/(1+4+9) = 31/14, residual^2 = ||E_n||^2 - W * 31 =
// 69 - 961/14 = 5/14, relative residual sqrt(5/14/69).
func TestFitTransferHandWorked(t *testing.T) {
	src := func(ctx context.Context, emit func(old, new []float32) error) error {
		if err := emit([]float32{1, 2}, []float32{2, 4}); err != nil {
			return err
		}
		return emit([]float32{3}, []float32{7})
	}
	tr, err := FitTransfer(context.Background(), 1, 1, src)
	if err != nil {
		t.Fatal(err)
	}
	// The 1e-9 relative ridge moves W by ~1e-9 relative.
	if got, want := tr.W.At(0, 0), 31.0/14; math.Abs(got-want) > 1e-8 {
		t.Errorf("W = %.12g, want %.12g", got, want)
	}
	if got, want := tr.Residual, math.Sqrt(5.0/14/69); math.Abs(got-want) > 1e-7 {
		t.Errorf("residual = %.12g, want %.12g", got, want)
	}
	if tr.Rows != 3 {
		t.Errorf("rows = %d, want 3", tr.Rows)
	}
}

// The Gram-based residual agrees with a second pass over the rows, for a
// noisy fit (where it is accurate) with a wider and a narrower new model.
func TestFitTransferResidualMatchesSecondPass(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	for _, dn := range []int{5, 12} {
		eo := randMat(rng, 200, 8)
		en := mul(eo, randMat(rng, 8, dn))
		noise := randMat(rng, 200, dn)
		noise.Scale(0.1, noise)
		en.Add(en, noise)
		eo, en = linalg.Dense64(linalg.Float32(eo), 200, 8), linalg.Dense64(linalg.Float32(en), 200, dn)
		tr, err := FitTransfer(context.Background(), 8, dn, embeddingsSource(eo, en))
		if err != nil {
			t.Fatal(err)
		}
		r := mul(eo, tr.W)
		r.Sub(r, en)
		want := mat.Norm(r, 2) / mat.Norm(en, 2)
		if math.Abs(tr.Residual-want) > 1e-9 {
			t.Errorf("d_n=%d: Gram residual %.12g, second pass %.12g", dn, tr.Residual, want)
		}
		// Optimality: the gradient E_o^T (E_o W - E_n) vanishes (up to the ridge).
		var g mat.Dense
		g.Mul(eo.T(), r)
		if n := mat.Norm(&g, 2) / (mat.Norm(eo, 2) * mat.Norm(en, 2)); n > 1e-8 {
			t.Errorf("d_n=%d: normal-equation gradient %g", dn, n)
		}
	}
}

// Fewer shared tokens than d_o: E_o^T E_o is singular; the ridge still gives
// a solution that fits exactly-representable targets.
func TestFitTransferRankDeficient(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	eo := randMat(rng, 4, 10)
	en := mul(eo, randMat(rng, 10, 6))
	tr, err := FitTransfer(context.Background(), 10, 6, embeddingsSource(eo, en))
	if err != nil {
		t.Fatal(err)
	}
	// The ridge (1e-9 of the mean eigenvalue) leaves a ~1e-9 relative misfit.
	if e := relErr(mul(eo, tr.W), en); e > 1e-6 {
		t.Errorf("rank-deficient fit misfit %g", e)
	}
}

func TestTransferErrors(t *testing.T) {
	acc := NewTransferAccumulator(3, 2)
	if err := acc.Add([]float32{1, 2, 3}, []float32{1, 2, 3, 4}); err == nil || !strings.Contains(err.Error(), "same number of rows") {
		t.Errorf("mismatched chunk: err = %v", err)
	}
	if err := acc.Add([]float32{1, float32(math.NaN()), 3}, []float32{1, 2}); err == nil || !strings.Contains(err.Error(), "non-finite") {
		t.Errorf("NaN chunk: err = %v", err)
	}
	if _, err := acc.Solve(); err == nil || !strings.Contains(err.Error(), "no shared embedding rows") {
		t.Errorf("empty solve: err = %v", err)
	}
	if _, err := acc.Identity(); err == nil || !strings.Contains(err.Error(), "equal hidden sizes") {
		t.Errorf("identity of 3 -> 2: err = %v", err)
	}
	if _, err := FitTransfer(context.Background(), 0, 4, nil); err == nil || !strings.Contains(err.Error(), "positive hidden sizes") {
		t.Errorf("zero width: err = %v", err)
	}
	boom := errors.New("disk gone")
	_, err := FitTransfer(context.Background(), 2, 2, func(context.Context, func(_, _ []float32) error) error { return boom })
	if !errors.Is(err, boom) {
		t.Errorf("source error not wrapped: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = FitTransfer(ctx, 1, 1, func(ctx context.Context, emit func(_, _ []float32) error) error {
		return emit([]float32{1}, []float32{1})
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled fit: err = %v", err)
	}
}

func TestIdentityTransferResidual(t *testing.T) {
	acc := NewTransferAccumulator(2, 2)
	// E_o = [[1,0],[0,1]], E_n = [[1,0],[0,2]]: ||E_o - E_n|| = 1, ||E_n|| = sqrt(5).
	if err := acc.Add([]float32{1, 0, 0, 1}, []float32{1, 0, 0, 2}); err != nil {
		t.Fatal(err)
	}
	tr, err := acc.Identity()
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Identity || tr.W != nil || math.Abs(tr.Residual-1/math.Sqrt(5)) > 1e-12 {
		t.Fatalf("identity transfer %+v, want residual %g", tr, 1/math.Sqrt(5))
	}
}

// NewIdentityAccumulator reports the same residual as a full accumulator and
// as a second pass over the rows, over several chunks; it cannot Solve.
func TestIdentityAccumulatorMatchesFull(t *testing.T) {
	rng := rand.New(rand.NewPCG(37, 38))
	const d = 6
	full, light := NewTransferAccumulator(d, d), NewIdentityAccumulator(d)
	var diff, norm float64
	for _, c := range []int{1, 5, 17} {
		old, nw := make([]float32, c*d), make([]float32, c*d)
		for i := range old {
			old[i] = float32(rng.NormFloat64())
			nw[i] = old[i] + float32(0.3*rng.NormFloat64())
			diff += (float64(old[i]) - float64(nw[i])) * (float64(old[i]) - float64(nw[i]))
			norm += float64(nw[i]) * float64(nw[i])
		}
		for _, acc := range []*TransferAccumulator{full, light} {
			if err := acc.Add(old, nw); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := math.Sqrt(diff / norm)
	for name, acc := range map[string]*TransferAccumulator{"full": full, "identity-only": light} {
		tr, err := acc.Identity()
		if err != nil {
			t.Fatal(err)
		}
		// ||E_o - E_n||^2 as a difference of sums of ~d*23 terms of size ~1:
		// ~1e-15 relative each, far below 1e-12 after the square root.
		if !tr.ResidualKnown || tr.Rows != 23 || math.Abs(tr.Residual-want) > 1e-12 {
			t.Errorf("%s: residual %.15g (known %v, rows %d), second pass %.15g", name, tr.Residual, tr.ResidualKnown, tr.Rows, want)
		}
	}
	if _, err := light.Solve(); err == nil || !strings.Contains(err.Error(), "holds no Grams") {
		t.Errorf("Solve on an identity accumulator: err = %v", err)
	}
	if err := light.Add([]float32{1, 2, 3, 4, 5, float32(math.Inf(1))}, make([]float32, d)); err == nil || !strings.Contains(err.Error(), "non-finite") {
		t.Errorf("Inf chunk: err = %v", err)
	}
}

// pinvApply equals the SVD pseudo-inverse for tall and wide W_x.
func TestPinvApply(t *testing.T) {
	rng := rand.New(rand.NewPCG(35, 36))
	for _, sz := range [][2]int{{6, 9}, {9, 6}, {7, 7}} {
		w := randMat(rng, sz[0], sz[1])
		tr := NewTransfer(w)
		y := randMat(rng, sz[0], 3)
		got, err := tr.pinvApply(y)
		if err != nil {
			t.Fatal(err)
		}
		want := mul(pinvT(t, w).T(), y)
		// pinvRidge 1e-12 times cond(W)^2 (~1e2-1e3 for these Gaussian W).
		if e := relErr(got, want); e > 1e-8 {
			t.Errorf("%dx%d: pinv(W) y off by %g", sz[0], sz[1], e)
		}
	}
}
