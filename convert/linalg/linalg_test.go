package linalg

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// svdTol bounds reconstruction and orthogonality errors relative to ||a||_F:
// backward-stable SVDs reach a few hundred ulps at these sizes (<= 60); 1e-12
// leaves room for both LAPACK implementations without hiding a wrong result.
const svdTol = 1e-12

func randDense(rng *rand.Rand, r, c int) *mat.Dense {
	if r == 0 || c == 0 {
		return &mat.Dense{}
	}
	d := make([]float64, r*c)
	for i := range d {
		d[i] = rng.NormFloat64()
	}
	return mat.NewDense(r, c, d)
}

func TestBackendName(t *testing.T) {
	switch b := Backend(); b {
	case "gonum", "openblas":
	default:
		t.Fatalf("Backend() = %q, want gonum or openblas", b)
	}
	t.Logf("backend: %s", Backend())
}

func TestSVDReconstruction(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := [][2]int{{1, 1}, {2, 2}, {3, 3}, {1, 5}, {5, 1}, {2, 7}, {7, 2}, {10, 10}, {17, 40}, {40, 17}, {60, 60}}
	for _, sz := range sizes {
		m, n := sz[0], sz[1]
		a := randDense(rng, m, n)
		u, s, vt, err := SVD(a)
		if err != nil {
			t.Fatalf("%dx%d: %v", m, n, err)
		}
		k := min(m, n)
		if ur, uc := u.Dims(); ur != m || uc != k {
			t.Fatalf("%dx%d: u is %dx%d, want %dx%d", m, n, ur, uc, m, k)
		}
		if vr, vc := vt.Dims(); vr != k || vc != n {
			t.Fatalf("%dx%d: vt is %dx%d, want %dx%d", m, n, vr, vc, k, n)
		}
		if len(s) != k {
			t.Fatalf("%dx%d: %d singular values, want %d", m, n, len(s), k)
		}
		for i := 1; i < k; i++ {
			if s[i] > s[i-1] || s[i] < 0 {
				t.Fatalf("%dx%d: singular values not non-negative decreasing: %v", m, n, s)
			}
		}
		var us, rec mat.Dense
		us.Scale(1, u)
		for j := 0; j < k; j++ {
			col := us.ColView(j).(*mat.VecDense)
			col.ScaleVec(s[j], col)
		}
		rec.Mul(&us, vt)
		rec.Sub(&rec, a)
		norm := mat.Norm(a, 2)
		if e := mat.Norm(&rec, 2) / norm; e > svdTol {
			t.Errorf("%dx%d: ||u s vt - a||/||a|| = %g > %g", m, n, e, svdTol)
		}
		checkOrthonormal(t, "u^T u", u.T(), u, k)
		checkOrthonormal(t, "vt vt^T", vt, vt.T(), k)
	}
}

func checkOrthonormal(t *testing.T, what string, a, b mat.Matrix, k int) {
	t.Helper()
	var p mat.Dense
	p.Mul(a, b)
	for i := 0; i < k; i++ {
		for j := 0; j < k; j++ {
			want := 0.0
			if i == j {
				want = 1
			}
			if d := math.Abs(p.At(i, j) - want); d > svdTol {
				t.Fatalf("%s[%d,%d] = %g, want %g", what, i, j, p.At(i, j), want)
			}
		}
	}
}

func TestSingularValuesMatchSVD(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	for _, sz := range [][2]int{{1, 1}, {2, 5}, {5, 2}, {30, 30}, {40, 17}} {
		a := randDense(rng, sz[0], sz[1])
		_, want, _, err := SVD(a)
		if err != nil {
			t.Fatal(err)
		}
		got, err := SingularValues(a)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%v: %d values, want %d", sz, len(got), len(want))
		}
		for i := range want {
			// Both paths are backward stable: agreement to a few ulps of s[0].
			if math.Abs(got[i]-want[i]) > 1e-13*want[0] {
				t.Fatalf("%v: s[%d] = %.17g, SVD gives %.17g", sz, i, got[i], want[i])
			}
		}
	}
	if s, err := SingularValues(&mat.Dense{}); err != nil || len(s) != 0 {
		t.Fatalf("empty: %v %v", s, err)
	}
}

// A hand-worked case: [[3, 0], [4, 5]] has singular values sqrt(45) and sqrt(5)
// (a^T a = [[25, 20], [20, 25]], eigenvalues 45 and 5).
func TestSVDHandWorked(t *testing.T) {
	a := mat.NewDense(2, 2, []float64{3, 0, 4, 5})
	_, s, _, err := SVD(a)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{math.Sqrt(45), math.Sqrt(5)}
	for i := range want {
		if math.Abs(s[i]-want[i]) > 1e-14*want[0] {
			t.Errorf("s[%d] = %.17g, want %.17g", i, s[i], want[i])
		}
	}
}

func TestSVDEmptyAndRankDeficient(t *testing.T) {
	u, s, vt, err := SVD(&mat.Dense{})
	if err != nil || len(s) != 0 || !u.IsEmpty() || !vt.IsEmpty() {
		t.Fatalf("SVD(empty) = %v, %v, %v, %v; want empty, no error", u, s, vt, err)
	}
	// Rank 1 outer product: one non-zero singular value = ||x|| ||y||.
	x := mat.NewVecDense(4, []float64{1, 2, 3, 4})
	y := mat.NewVecDense(3, []float64{-1, 0, 2})
	var a mat.Dense
	a.Outer(1, x, y)
	_, s, _, err = SVD(&a)
	if err != nil {
		t.Fatal(err)
	}
	want := mat.Norm(x, 2) * mat.Norm(y, 2)
	if math.Abs(s[0]-want) > 1e-13*want || s[1] > 1e-13*want || s[2] > 1e-13*want {
		t.Errorf("rank-1 singular values %v, want [%g 0 0]", s, want)
	}
}

func TestSolveSPD(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 2, 5, 30} {
		g := randDense(rng, n+3, n)
		var a mat.SymDense
		a.SymOuterK(1, g.T())
		xTrue := randDense(rng, n, 2)
		var b mat.Dense
		b.Mul(&a, xTrue)
		x, err := SolveSPD(&a, &b)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		x.Sub(x, xTrue)
		// cond(a) for a Wishart(n+3, n) matrix at n=30 is ~1e4; 1e-9 allows it.
		if e := mat.Norm(x, 2) / mat.Norm(xTrue, 2); e > 1e-9 {
			t.Errorf("n=%d: relative error %g", n, e)
		}
	}
	neg := mat.NewSymDense(2, []float64{1, 2, 2, 1}) // eigenvalues 3 and -1
	if _, err := SolveSPD(neg, mat.NewDense(2, 1, []float64{1, 1})); !errors.Is(err, ErrNotPositiveDefinite) {
		t.Fatalf("indefinite matrix: err = %v, want ErrNotPositiveDefinite", err)
	}
}

func TestFloat32RoundTrip(t *testing.T) {
	data := []float32{1, -2.5, 3e-3, 4, 5, 6}
	d := Dense64(data, 2, 3)
	if d.At(1, 0) != 4 || d.At(0, 2) != float64(float32(3e-3)) {
		t.Fatalf("Dense64 layout wrong: %v", mat.Formatted(d))
	}
	back := Float32(d)
	for i := range data {
		if back[i] != data[i] {
			t.Fatalf("round trip [%d] = %g, want %g", i, back[i], data[i])
		}
	}
	if !IsEmpty(Dense64(nil, 0, 3)) {
		t.Fatal("Dense64(nil, 0, 3) should be empty")
	}
}

func TestQRThin(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, sz := range [][2]int{{1, 1}, {2, 1}, {3, 3}, {9, 4}, {100, 16}} {
		m, n := sz[0], sz[1]
		a := randDense(rng, m, n)
		q, r := QR(a)
		if qr, qc := q.Dims(); qr != m || qc != n {
			t.Fatalf("%dx%d: q is %dx%d", m, n, qr, qc)
		}
		for i := 0; i < n; i++ {
			for j := 0; j < i; j++ {
				if r.At(i, j) != 0 {
					t.Fatalf("%dx%d: r[%d,%d] = %g below the diagonal", m, n, i, j, r.At(i, j))
				}
			}
		}
		var rec mat.Dense
		rec.Mul(q, r)
		rec.Sub(&rec, a)
		if e := mat.Norm(&rec, 2) / mat.Norm(a, 2); e > svdTol {
			t.Errorf("%dx%d: ||q r - a||/||a|| = %g", m, n, e)
		}
		checkOrthonormal(t, "q^T q", q.T(), q, n)
	}
	// Rank-deficient input (a zero column) still factors: q stays orthonormal.
	a := mat.NewDense(4, 2, []float64{1, 0, 2, 0, 3, 0, 4, 0})
	q, _ := QR(a)
	checkOrthonormal(t, "q^T q (rank deficient)", q.T(), q, 2)
}

// Run with: go test -run ^$ -bench . ./convert/linalg (add -tags openblas).

func BenchmarkSVD(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{64, 256, 1024} {
		a := randDense(rng, n, n)
		b.Run(fmt.Sprintf("%s/%d", Backend(), n), func(b *testing.B) {
			for b.Loop() {
				if _, _, _, err := SVD(a); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDgemm(b *testing.B) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{512, 2048} {
		x, y := randDense(rng, n, n), randDense(rng, n, n)
		c := mat.NewDense(n, n, nil)
		b.Run(fmt.Sprintf("%s/%d", Backend(), n), func(b *testing.B) {
			for b.Loop() {
				c.Mul(x, y)
			}
			b.ReportMetric(2*float64(n)*float64(n)*float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

func BenchmarkSolveSPD(b *testing.B) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{512, 2048} {
		g := randDense(rng, 2*n, n)
		var a mat.SymDense
		a.SymOuterK(1, g.T())
		rhs := randDense(rng, n, 64)
		b.Run(fmt.Sprintf("%s/%d", Backend(), n), func(b *testing.B) {
			for b.Loop() {
				if _, err := SolveSPD(&a, rhs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
