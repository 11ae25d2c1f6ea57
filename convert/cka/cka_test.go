package cka

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// ckaTol is for identities that hold exactly in real arithmetic and are
// computed in float64 on O(1) data: rounding stays near 1e-14, 1e-10 leaves
// room for the n = 200 sums.
const ckaTol = 1e-10

func randMat(rng *rand.Rand, r, c int) *mat.Dense {
	m := mat.NewDense(r, c, nil)
	for i := 0; i < r; i++ {
		for j := 0; j < c; j++ {
			m.Set(i, j, rng.NormFloat64())
		}
	}
	return m
}

// randOrthogonal is the Q factor of a random square matrix.
func randOrthogonal(rng *rand.Rand, n int) *mat.Dense {
	var qr mat.QR
	qr.Factorize(randMat(rng, n, n))
	var q mat.Dense
	qr.QTo(&q)
	return &q
}

func TestLinearHandWorked(t *testing.T) {
	// One feature each: CKA is the squared Pearson correlation. Centred x is
	// (-1, 0, 1), centred y is (-4/3, -1/3, 5/3): (x.y)^2 / (|x|^2 |y|^2) =
	// 9 / (2 * 42/9) = 81/84.
	x := mat.NewDense(3, 1, []float64{1, 2, 3})
	y := mat.NewDense(3, 1, []float64{1, 2, 4})
	for name, f := range map[string]func(a, b mat.Matrix) float64{"feature": LinearFeature, "gram": LinearGram, "auto": Linear} {
		if got := f(x, y); math.Abs(got-81.0/84) > ckaTol {
			t.Errorf("%s: CKA = %.15f, want 81/84 = %.15f", name, got, 81.0/84)
		}
	}
	// Orthogonal centred features: CKA 0.
	a := mat.NewDense(4, 1, []float64{1, -1, 1, -1})
	b := mat.NewDense(4, 1, []float64{1, 1, -1, -1})
	if got := Linear(a, b); math.Abs(got) > ckaTol {
		t.Errorf("orthogonal features: CKA = %g, want 0", got)
	}
	// Constant representation: no variance, defined as 0.
	c := mat.NewDense(4, 2, []float64{1, 2, 1, 2, 1, 2, 1, 2})
	if got := Linear(c, a); got != 0 {
		t.Errorf("constant representation: CKA = %g, want 0", got)
	}
}

// TestLinearProperties sweeps shapes on both sides of n = d and checks
// CKA(X, X) = 1, Gram form = feature form, and invariance to orthogonal maps,
// isotropic scaling and per-column shifts of either side.
func TestLinearProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 0))
	for _, sz := range [][3]int{{2, 1, 1}, {3, 2, 5}, {10, 4, 7}, {50, 20, 12}, {12, 40, 30}, {200, 16, 24}} {
		n, dx, dy := sz[0], sz[1], sz[2]
		x := randMat(rng, n, dx)
		// y shares structure with x so CKA is neither 0 nor 1.
		y := randMat(rng, n, dy)
		var mix mat.Dense
		mix.Mul(x, randMat(rng, dx, dy))
		y.Add(y, &mix)

		if got := Linear(x, x); math.Abs(got-1) > ckaTol {
			t.Errorf("n=%d d=%d: CKA(X,X) = %.15f", n, dx, got)
		}
		f, g := LinearFeature(x, y), LinearGram(x, y)
		if math.Abs(f-g) > ckaTol {
			t.Errorf("n=%d dx=%d dy=%d: feature %.15f != gram %.15f", n, dx, dy, f, g)
		}
		var xq, ys mat.Dense
		xq.Mul(x, randOrthogonal(rng, dx))
		ys.Scale(37.5, y)
		for i := 0; i < n; i++ { // shift every column of ys by a constant
			for j := 0; j < dy; j++ {
				ys.Set(i, j, ys.At(i, j)+float64(j)*3-5)
			}
		}
		if got := Linear(&xq, &ys); math.Abs(got-f) > ckaTol {
			t.Errorf("n=%d dx=%d dy=%d: CKA(XQ, 37.5Y + c) = %.15f, CKA(X, Y) = %.15f", n, dx, dy, got, f)
		}
		if f < 0 || f > 1 {
			t.Errorf("CKA %g outside [0, 1]", f)
		}
	}
}

// TestMatrixBruteForce compares both matrix paths with Linear entry by entry.
func TestMatrixBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	const n = 30
	old := []*mat.Dense{randMat(rng, n, 8), randMat(rng, n, 40), randMat(rng, n, 3)}
	nw := []*mat.Dense{randMat(rng, n, 16), randMat(rng, n, 5)}
	var mix mat.Dense
	mix.Mul(old[0], randMat(rng, 8, 5))
	nw[1].Add(nw[1], &mix)
	sim, err := Matrix(context.Background(), old, nw)
	if err != nil {
		t.Fatal(err)
	}
	feat := mat.NewDense(len(old), len(nw), nil)
	if err := featureMatrix(context.Background(), feat, old, nw); err != nil {
		t.Fatal(err)
	}
	for i := range old {
		for j := range nw {
			want := Linear(old[i], nw[j])
			if math.Abs(sim.At(i, j)-want) > ckaTol || math.Abs(feat.At(i, j)-want) > ckaTol {
				t.Errorf("(%d,%d): gram path %.15f, feature path %.15f, Linear %.15f", i, j, sim.At(i, j), feat.At(i, j), want)
			}
		}
	}
	if _, err := Matrix(context.Background(), old, []*mat.Dense{randMat(rng, n+1, 4)}); err == nil {
		t.Error("sample count mismatch accepted")
	}
	if _, err := Matrix(context.Background(), nil, nw); err == nil {
		t.Error("empty old side accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Matrix(ctx, old, nw); err == nil {
		t.Error("cancelled context ignored")
	}
}
