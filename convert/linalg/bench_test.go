package linalg

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"
)

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
