package lorasuite

import (
	"context"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/linalg"
)

// Block products and Grams equal the dense ones whatever the block size
// (one block, several, one row or column at a time).
func TestBlockProducts(t *testing.T) {
	rng := rand.New(rand.NewPCG(69, 70))
	ctx := context.Background()
	defer func(v int) { mlpBlockValues = v }(mlpBlockValues)
	for _, bv := range []int{1 << 20, 20, 1} {
		mlpBlockValues = bv
		for _, sz := range [][2]int{{7, 5}, {1, 9}, {9, 1}, {13, 8}} {
			rows, cols := sz[0], sz[1]
			w32 := linalg.Float32(randMat(rng, rows, cols))
			w := linalg.Dense64(w32, rows, cols)
			b, y := randMat(rng, rows, 2), randMat(rng, cols, 2)
			a, h := randMat(rng, 2, cols), randMat(rng, 2, rows)
			check := func(name string, got mat.Matrix, err error, want *mat.Dense) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
				if e := relErr(got, want); e > 1e-13 {
					t.Errorf("block %d, %v %s: off by %g", bv, sz, name, e)
				}
			}
			got, err := wTMul(ctx, w32, rows, cols, b)
			check("w^T b", got, err, mul(w.T(), b))
			got, err = wMul(ctx, w32, rows, cols, y)
			check("w y", got, err, mul(w, y))
			got, err = mulWT(ctx, a, w32, rows, cols)
			check("a w^T", got, err, mul(a, w.T()))
			got, err = mulW(ctx, h, w32, rows, cols)
			check("h w", got, err, mul(h, w))
			for _, inner := range []bool{true, false} {
				ch, l, err := ridgedGram(ctx, w32, rows, cols, inner, 1e-3)
				if err != nil {
					t.Fatal(err)
				}
				var g mat.SymDense
				ch.ToSym(&g)
				want := mul(w, w.T())
				if inner {
					want = mul(w.T(), w)
				}
				n, _ := want.Dims()
				for i := 0; i < n; i++ {
					want.Set(i, i, want.At(i, i)+l)
				}
				check("gram", &g, nil, want)
			}
		}
	}
	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := wTMul(ctx2, make([]float32, 6), 2, 3, mat.NewDense(2, 1, nil)); err == nil {
		t.Error("cancelled context: want an error")
	}
}
