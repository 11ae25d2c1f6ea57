package lorasuite

import (
	"context"
	"fmt"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/mat"
)

// Thin products with a float32 base weight w (rows x cols, row-major, a
// float32 view of a bf16 tensor), in float64 without a float64 copy of w:
// w is converted one block (8 MB) at a time. The other factor has k columns
// (or rows), the LoRA rank, so every product is memory bound, O(rows cols k).

// wTMul returns w^T b (cols x k) for b (rows x k).
func wTMul(ctx context.Context, w []float32, rows, cols int, b *mat.Dense) (*mat.Dense, error) {
	br, k := b.Dims()
	if br != rows {
		panic(fmt.Sprintf("lorasuite: w^T b with w %d x %d and b %d x %d", rows, cols, br, k))
	}
	out := mat.NewDense(cols, k, nil)
	err := forRowBlocks(ctx, w, rows, cols, func(i0 int, blk *mat.Dense) {
		r, _ := blk.Dims()
		// out += blk^T b[i0:i0+r]
		blas64.Gemm(blas.Trans, blas.NoTrans, 1, blk.RawMatrix(), b.Slice(i0, i0+r, 0, k).(*mat.Dense).RawMatrix(), 1, out.RawMatrix())
	})
	return out, err
}

// wMul returns w y (rows x k) for y (cols x k).
func wMul(ctx context.Context, w []float32, rows, cols int, y *mat.Dense) (*mat.Dense, error) {
	yr, k := y.Dims()
	if yr != cols {
		panic(fmt.Sprintf("lorasuite: w y with w %d x %d and y %d x %d", rows, cols, yr, k))
	}
	out := mat.NewDense(rows, k, nil)
	err := forRowBlocks(ctx, w, rows, cols, func(i0 int, blk *mat.Dense) {
		r, _ := blk.Dims()
		out.Slice(i0, i0+r, 0, k).(*mat.Dense).Mul(blk, y)
	})
	return out, err
}

// mulWT returns a w^T (k x rows) for a (k x cols).
func mulWT(ctx context.Context, a *mat.Dense, w []float32, rows, cols int) (*mat.Dense, error) {
	k, ac := a.Dims()
	if ac != cols {
		panic(fmt.Sprintf("lorasuite: a w^T with a %d x %d and w %d x %d", k, ac, rows, cols))
	}
	out := mat.NewDense(k, rows, nil)
	err := forRowBlocks(ctx, w, rows, cols, func(i0 int, blk *mat.Dense) {
		r, _ := blk.Dims()
		out.Slice(0, k, i0, i0+r).(*mat.Dense).Mul(a, blk.T())
	})
	return out, err
}

// mulW returns h w (k x cols) for h (k x rows).
func mulW(ctx context.Context, h *mat.Dense, w []float32, rows, cols int) (*mat.Dense, error) {
	k, hc := h.Dims()
	if hc != rows {
		panic(fmt.Sprintf("lorasuite: h w with h %d x %d and w %d x %d", k, hc, rows, cols))
	}
	out := mat.NewDense(k, cols, nil)
	err := forRowBlocks(ctx, w, rows, cols, func(i0 int, blk *mat.Dense) {
		r, _ := blk.Dims()
		// out += h[:, i0:i0+r] blk
		blas64.Gemm(blas.NoTrans, blas.NoTrans, 1, h.Slice(0, k, i0, i0+r).(*mat.Dense).RawMatrix(), blk.RawMatrix(), 1, out.RawMatrix())
	})
	return out, err
}

// mlpBlockValues is the number of float64 values (8 MB) a weight block holds
// while it is converted from float32 and multiplied (a variable so that tests
// can force many blocks on small matrices).
var mlpBlockValues = 1 << 20

// forRowBlocks calls fn(i0, blk) for consecutive row blocks of w (rows x
// cols, row-major float32): blk is rows i0.. of w in float64. blk is reused
// between calls.
func forRowBlocks(ctx context.Context, w []float32, rows, cols int, fn func(i0 int, blk *mat.Dense)) error {
	if len(w) != rows*cols {
		panic(fmt.Sprintf("lorasuite: weight of %d values for %d x %d", len(w), rows, cols))
	}
	kb := max(1, mlpBlockValues/max(cols, 1))
	buf := make([]float64, min(kb, rows)*cols)
	for i0 := 0; i0 < rows; i0 += kb {
		if err := ctx.Err(); err != nil {
			return err
		}
		i1 := min(i0+kb, rows)
		b := buf[:(i1-i0)*cols]
		for k, v := range w[i0*cols : i1*cols] {
			b[k] = float64(v)
		}
		fn(i0, mat.NewDense(i1-i0, cols, b))
	}
	return nil
}

// forColBlocks is forRowBlocks over column blocks: blk is rows x (j1-j0),
// columns j0.. of w.
func forColBlocks(ctx context.Context, w []float32, rows, cols int, fn func(j0 int, blk *mat.Dense)) error {
	if len(w) != rows*cols {
		panic(fmt.Sprintf("lorasuite: weight of %d values for %d x %d", len(w), rows, cols))
	}
	kb := max(1, mlpBlockValues/max(rows, 1))
	buf := make([]float64, rows*min(kb, cols))
	for j0 := 0; j0 < cols; j0 += kb {
		if err := ctx.Err(); err != nil {
			return err
		}
		j1 := min(j0+kb, cols)
		nb := j1 - j0
		b := buf[:rows*nb]
		for i := 0; i < rows; i++ {
			for j, v := range w[i*cols+j0 : i*cols+j1] {
				b[i*nb+j] = float64(v)
			}
		}
		fn(j0, mat.NewDense(rows, nb, b))
	}
	return nil
}
