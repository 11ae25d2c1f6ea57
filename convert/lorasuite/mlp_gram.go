package lorasuite

import (
	"context"
	"fmt"
	"math"
	"sync"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/linalg"
)

// GramFactor is the Cholesky factor U (upper, n x n) of a ridged Gram matrix
// G + lambda I = U^T U: the reusable half of a least-squares solve pinv(X) y by
// normal equations. It is kept in float64 on purpose: the normal equations
// square the condition number of X, so a float32 factor would lose
// eps32 * cond(X)^2 (1e-2 relative at cond(X) = 500, plausible for trained
// MLP weights), while float64 keeps it near 1e-16 * cond(X)^2.
//
// U is stored packed, row-major upper triangle: row i holds U[i, i:n], so
// len(U) = n(n+1)/2 (half the bytes of a dense n x n matrix). A factor read
// back from its packed form solves bit for bit like the one that was computed.
type GramFactor struct {
	// N is the order n of the Gram matrix.
	N int
	// Ridge is the lambda that was added to the diagonal.
	Ridge float64
	// U is the packed upper Cholesky factor (see the type comment).
	U []float64

	once sync.Once
	chol *mat.Cholesky
	err  error
}

// PackedLen returns n(n+1)/2, the length of a packed n x n triangle.
func PackedLen(n int) int { return n * (n + 1) / 2 }

// gramFactorOf factors the ridged Gram matrix of a float32 weight w (rows x
// cols, row-major): W^T W (n = cols) when inner, else W W^T (n = rows). The
// Gram is accumulated in float64 over blocks of w converted on the fly, so w
// is never copied whole to float64; lambda = ridge * tr(G)/n.
func gramFactorOf(ctx context.Context, w []float32, rows, cols int, inner bool, ridge float64) (*GramFactor, error) {
	n := rows
	if inner {
		n = cols
	}
	g := mat.NewSymDense(n, nil)
	var err error
	if inner {
		err = forRowBlocks(ctx, w, rows, cols, func(_ int, blk *mat.Dense) {
			g.SymRankK(g, 1, blk.T()) // G += blk^T blk
		})
	} else {
		err = forColBlocks(ctx, w, rows, cols, func(_ int, blk *mat.Dense) {
			g.SymRankK(g, 1, blk) // G += blk blk^T
		})
	}
	if err != nil {
		return nil, err
	}
	l := ridge * mat.Trace(g) / float64(n)
	if l == 0 || math.IsNaN(l) || math.IsInf(l, 0) {
		return nil, fmt.Errorf("base weight (%d x %d) is all zero or not finite", rows, cols)
	}
	for i := 0; i < n; i++ {
		g.SetSym(i, i, g.At(i, i)+l)
	}
	var ch mat.Cholesky
	if !ch.Factorize(g) {
		return nil, fmt.Errorf("Gram matrix of the %d x %d base weight: %w", rows, cols, linalg.ErrNotPositiveDefinite)
	}
	f := packCholesky(&ch)
	f.Ridge = l
	f.once.Do(func() { f.chol = &ch })
	return f, nil
}

// packCholesky returns ch's upper factor in packed form.
func packCholesky(ch *mat.Cholesky) *GramFactor {
	u := ch.RawU()
	n, _ := u.Triangle()
	f := &GramFactor{N: n, U: make([]float64, 0, PackedLen(n))}
	for i := 0; i < n; i++ {
		for j := i; j < n; j++ {
			f.U = append(f.U, u.At(i, j))
		}
	}
	return f
}

// Validate checks the packed length and that the diagonal of U is positive
// and every entry finite (a corrupt cache file is an error, not a panic).
func (f *GramFactor) Validate() error {
	if f == nil {
		return fmt.Errorf("lorasuite: missing Gram factor")
	}
	if f.N <= 0 || len(f.U) != PackedLen(f.N) {
		return fmt.Errorf("lorasuite: Gram factor of order %d has %d packed values, want %d", f.N, len(f.U), PackedLen(max(f.N, 0)))
	}
	k := 0
	for i := 0; i < f.N; i++ {
		for j := i; j < f.N; j++ {
			v := f.U[k]
			if math.IsNaN(v) || math.IsInf(v, 0) || (j == i && v <= 0) {
				return fmt.Errorf("lorasuite: Gram factor entry (%d, %d) = %v", i, j, v)
			}
			k++
		}
	}
	return nil
}

// cholesky unpacks U once (n x n float64) into a mat.Cholesky.
func (f *GramFactor) cholesky() (*mat.Cholesky, error) {
	f.once.Do(func() {
		if f.err = f.Validate(); f.err != nil {
			return
		}
		t := mat.NewTriDense(f.N, mat.Upper, nil)
		raw := t.RawTriangular()
		k := 0
		for i := 0; i < f.N; i++ {
			m := f.N - i
			copy(raw.Data[i*raw.Stride+i:i*raw.Stride+f.N], f.U[k:k+m])
			k += m
		}
		var ch mat.Cholesky
		ch.SetFromU(t)
		f.chol = &ch
	})
	return f.chol, f.err
}

// solve returns (G + lambda I)^-1 b for b (n x k).
func (f *GramFactor) solve(b mat.Matrix) (*mat.Dense, error) {
	ch, err := f.cholesky()
	if err != nil {
		return nil, err
	}
	if r, _ := b.Dims(); r != f.N {
		panic(fmt.Sprintf("lorasuite: Gram solve of order %d with %d rows", f.N, r))
	}
	var x mat.Dense
	if err := ch.SolveTo(&x, b); err != nil {
		return nil, fmt.Errorf("Gram solve (%d x %d): %w", f.N, f.N, err)
	}
	return &x, nil
}

// PinvFactor returns the factor pinv(W_x) solves with (of W^T W, order d_n,
// when d_n <= d_o, else of W W^T, order d_o), computing it on first use; nil
// for the identity. Callers cache it with the pair (it costs a d^3 Gram and
// Cholesky, seconds at d = 4096) and hand it back with SetPinvFactor.
func (t *Transfer) PinvFactor() (*GramFactor, error) {
	if t.Identity {
		return nil, nil
	}
	if _, err := t.pinvApply(mat.NewDense(t.DOld, 1, nil)); err != nil {
		return nil, err
	}
	return packCholesky(t.pinvChol), nil
}

// SetPinvFactor installs a factor from PinvFactor (read back from a cache)
// so that pinv(W_x) solves skip the Gram and Cholesky; the solves are then
// bit for bit those of the computed factor. It is a no-op for the identity
// and once the factor exists; an inconsistent factor is an error.
func (t *Transfer) SetPinvFactor(f *GramFactor) error {
	if t.Identity {
		return nil
	}
	if want := min(t.DOld, t.DNew); f == nil || f.N != want {
		return fmt.Errorf("lorasuite: pinv(W_x) factor for %d x %d W_x must have order %d", t.DOld, t.DNew, want)
	}
	ch, err := f.cholesky()
	if err != nil {
		return fmt.Errorf("lorasuite: pinv(W_x) factor: %w", err)
	}
	t.pinvOnce.Do(func() { t.pinvChol = ch })
	return nil
}
