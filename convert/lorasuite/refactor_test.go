package lorasuite

import (
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// refactorTol: the product is rebuilt through a QR and an r x r SVD, backward
// stable at ~1e-15; 1e-12 relative allows for the factor norms.
const refactorTol = 1e-12

func TestRefactor(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	for _, sz := range [][3]int{{20, 4, 15}, {8, 8, 8}, {3, 5, 9}, {9, 5, 3}, {30, 1, 2}} {
		out, r, in := sz[0], sz[1], sz[2]
		b, a := randMat(rng, out, r), randMat(rng, r, in)
		if sz == [3]int{8, 8, 8} {
			// Rank-deficient input: a zero column in b.
			for i := 0; i < out; i++ {
				b.Set(i, 2, 0)
			}
		}
		nb, na, err := Refactor(b, a)
		if err != nil {
			t.Fatal(err)
		}
		if br, bc := nb.Dims(); br != out || bc != r {
			t.Fatalf("%v: b' is %dx%d", sz, br, bc)
		}
		if ar, ac := na.Dims(); ar != r || ac != in {
			t.Fatalf("%v: a' is %dx%d", sz, ar, ac)
		}
		if e := relErr(mul(nb, na), mul(b, a)); e > refactorTol {
			t.Errorf("%v: b'a' differs from ba by %g", sz, e)
		}
		// Balanced: b'^T b' = a' a'^T = diag(singular values).
		btb, aat := mul(nb.T(), nb), mul(na, na.T())
		if e := relErr(btb, aat); e > 1e-10 {
			t.Errorf("%v: factors not balanced: ||b'^T b' - a' a'^T|| rel %g", sz, e)
		}
		for i := 0; i < r; i++ {
			for j := 0; j < r; j++ {
				if i != j && abs(btb.At(i, j)) > 1e-10*mat.Norm(btb, 2) {
					t.Fatalf("%v: b'^T b' not diagonal at %d,%d", sz, i, j)
				}
			}
		}
	}
}
