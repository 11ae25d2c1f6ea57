package linalg

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"
)

func randChunk(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// AddGrams over several chunks equals x^T x and x^T y summed by brute force
// in float64 over all rows, for square, wide and tall shapes and tile-edge
// sizes (not multiples of the 64-wide transpose tiles).
func TestAddGramsBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	for _, sz := range [][3]int{{1, 1, 1}, {3, 2, 5}, {2, 7, 1}, {70, 65, 130}, {129, 3, 64}} {
		c, p, q := sz[0], sz[1], sz[2]
		a, b := mat.NewSymDense(p, nil), mat.NewDense(p, q, nil)
		wantA, wantB := make([]float64, p*p), make([]float64, p*q)
		var buf []float64
		for chunk := 0; chunk < 3; chunk++ {
			x, y := randChunk(rng, c*p), randChunk(rng, c*q)
			buf = AddGrams(a, b, x, y, buf)
			for r := 0; r < c; r++ {
				for i := 0; i < p; i++ {
					xi := float64(x[r*p+i])
					for j := 0; j < p; j++ {
						wantA[i*p+j] += xi * float64(x[r*p+j])
					}
					for j := 0; j < q; j++ {
						wantB[i*q+j] += xi * float64(y[r*q+j])
					}
				}
			}
		}
		// Products of float32 values are exact in float64; the sums of 3c
		// terms of size ~1 differ only in order: 1e-12 of the sum's scale.
		tol := 1e-12 * float64(3*c)
		for i := 0; i < p; i++ {
			for j := 0; j < p; j++ {
				if d := math.Abs(a.At(i, j) - wantA[i*p+j]); d > tol {
					t.Fatalf("%v: (x^T x)[%d,%d] = %.17g, want %.17g", sz, i, j, a.At(i, j), wantA[i*p+j])
				}
			}
			for j := 0; j < q; j++ {
				if d := math.Abs(b.At(i, j) - wantB[i*q+j]); d > tol {
					t.Fatalf("%v: (x^T y)[%d,%d] = %.17g, want %.17g", sz, i, j, b.At(i, j), wantB[i*q+j])
				}
			}
		}
	}
}

// A hand-worked chunk: x = [[1, 2], [3, 4]], y = [[5], [6]]:
// x^T x = [[10, 14], [14, 20]], x^T y = [[23], [34]].
func TestAddGramsHandWorked(t *testing.T) {
	a, b := mat.NewSymDense(2, nil), mat.NewDense(2, 1, nil)
	AddGrams(a, b, []float32{1, 2, 3, 4}, []float32{5, 6}, nil)
	if a.At(0, 0) != 10 || a.At(0, 1) != 14 || a.At(1, 1) != 20 || b.At(0, 0) != 23 || b.At(1, 0) != 34 {
		t.Fatalf("x^T x = %v, x^T y = %v", mat.Formatted(a), mat.Formatted(b))
	}
	// An empty chunk changes nothing.
	AddGrams(a, b, nil, nil, nil)
	if a.At(0, 0) != 10 || b.At(1, 0) != 34 {
		t.Fatal("empty chunk changed the Grams")
	}
}

func TestAddGramsShapeMismatchPanics(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.HasPrefix(fmt.Sprint(r), "linalg:") {
			t.Fatalf("recovered %v, want a linalg: panic", r)
		}
	}()
	AddGrams(mat.NewSymDense(2, nil), mat.NewDense(2, 1, nil), []float32{1, 2, 3, 4}, []float32{5}, nil)
}

// Run with: go test -run ^$ -bench AddGrams ./convert/linalg (add -tags openblas).
func BenchmarkAddGrams(b *testing.B) {
	const c = 1024
	rng := rand.New(rand.NewPCG(43, 44))
	for _, d := range []int{1024, 2048} {
		x, y := randChunk(rng, c*d), randChunk(rng, c*d)
		a, ab := mat.NewSymDense(d, nil), mat.NewDense(d, d, nil)
		var buf []float64
		b.Run(fmt.Sprintf("%s/d%d/rows%d", Backend(), d, c), func(b *testing.B) {
			for b.Loop() {
				buf = AddGrams(a, ab, x, y, buf)
			}
			b.ReportMetric(float64(c*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
