package lorasuite

import (
	"context"
	"fmt"
	"math"
	"sync"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/linalg"
)

// GramKind says what a GramFactor holds.
type GramKind string

const (
	// GramCholesky: the upper Cholesky factor U of G + lambda I = U^T U
	// (solves by two triangular sweeps; pinv(W_x) uses it).
	GramCholesky GramKind = "cholesky"
	// GramInverse: the symmetric (G + lambda I)^-1 itself (applied by one
	// GEMM; the MLP operators use it: with r = 16 right-hand sides a
	// triangular solve of order 4096 is latency bound, ~165 ms with OpenBLAS,
	// the GEMM ~20 ms).
	GramInverse GramKind = "inverse"
)

// GramFactor is a ridged Gram matrix G + lambda I (n x n) made ready for
// least-squares solves pinv(X) y by normal equations: its Cholesky factor or
// its inverse (Kind). It is kept in float64 on purpose: the normal equations
// square the condition number of X, so a float32 factor would lose
// eps32 * cond(X)^2 (1e-2 relative at cond(X) = 500, plausible for trained
// MLP weights), while float64 keeps it near 1e-16 * cond(X)^2.
//
// Packed holds the upper triangle, row-major: row i holds [i, i:n], so
// len(Packed) = n(n+1)/2 (half the bytes of a dense n x n matrix). A factor
// read back from its packed form computes bit for bit like the original.
type GramFactor struct {
	// Kind is GramCholesky or GramInverse.
	Kind GramKind
	// N is the order n of the Gram matrix.
	N int
	// Ridge is the lambda that was added to the diagonal.
	Ridge float64
	// Packed is the upper triangle (see the type comment).
	Packed []float64

	once sync.Once
	chol *mat.Cholesky // GramCholesky
	inv  *mat.Dense    // GramInverse, both triangles
	err  error
}

// PackedLen returns n(n+1)/2, the length of a packed n x n triangle.
func PackedLen(n int) int { return n * (n + 1) / 2 }

// ridgedGram factors the ridged Gram matrix of a float32 weight w (rows x
// cols, row-major): W^T W (n = cols) when inner, else W W^T (n = rows). The
// Gram is accumulated in float64 over blocks of w converted on the fly, so w
// is never copied whole to float64; lambda = ridge * tr(G)/n.
func ridgedGram(ctx context.Context, w []float32, rows, cols int, inner bool, ridge float64) (*mat.Cholesky, float64, error) {
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
		return nil, 0, err
	}
	l := ridge * mat.Trace(g) / float64(n)
	if l == 0 || math.IsNaN(l) || math.IsInf(l, 0) {
		return nil, 0, fmt.Errorf("base weight (%d x %d) is all zero or not finite", rows, cols)
	}
	for i := 0; i < n; i++ {
		g.SetSym(i, i, g.At(i, i)+l)
	}
	var ch mat.Cholesky
	if !ch.Factorize(g) {
		return nil, 0, fmt.Errorf("Gram matrix of the %d x %d base weight: %w", rows, cols, linalg.ErrNotPositiveDefinite)
	}
	return &ch, l, nil
}

// gramInverseOf returns the GramInverse of w's ridged Gram (see ridgedGram).
// The inverse costs n^3 flops on top of the Gram (Cholesky + Potri).
func gramInverseOf(ctx context.Context, w []float32, rows, cols int, inner bool, ridge float64) (*GramFactor, error) {
	ch, l, err := ridgedGram(ctx, w, rows, cols, inner, ridge)
	if err != nil {
		return nil, err
	}
	var s mat.SymDense
	if err := ch.InverseTo(&s); err != nil {
		return nil, fmt.Errorf("inverting the Gram matrix of the %d x %d base weight: %w", rows, cols, err)
	}
	n := s.SymmetricDim()
	f := &GramFactor{Kind: GramInverse, N: n, Ridge: l, Packed: make([]float64, 0, PackedLen(n))}
	raw := s.RawSymmetric()
	for i := 0; i < n; i++ {
		f.Packed = append(f.Packed, raw.Data[i*raw.Stride+i:i*raw.Stride+n]...)
	}
	return f, nil
}

// packCholesky returns ch's upper factor in packed form.
func packCholesky(ch *mat.Cholesky) *GramFactor {
	u := ch.RawU()
	n, _ := u.Triangle()
	f := &GramFactor{Kind: GramCholesky, N: n, Packed: make([]float64, 0, PackedLen(n))}
	for i := 0; i < n; i++ {
		for j := i; j < n; j++ {
			f.Packed = append(f.Packed, u.At(i, j))
		}
	}
	return f
}

// Validate checks the kind, the packed length, that every entry is finite
// and the diagonal positive (true of a Cholesky factor and of the inverse of
// a positive definite matrix): a corrupt cache file is an error, not a panic.
func (f *GramFactor) Validate() error {
	if f == nil {
		return fmt.Errorf("lorasuite: missing Gram factor")
	}
	if f.Kind != GramCholesky && f.Kind != GramInverse {
		return fmt.Errorf("lorasuite: Gram factor of unknown kind %q", f.Kind)
	}
	if f.N <= 0 || len(f.Packed) != PackedLen(f.N) {
		return fmt.Errorf("lorasuite: Gram factor of order %d has %d packed values, want %d", f.N, len(f.Packed), PackedLen(max(f.N, 0)))
	}
	k := 0
	for i := 0; i < f.N; i++ {
		for j := i; j < f.N; j++ {
			v := f.Packed[k]
			if math.IsNaN(v) || math.IsInf(v, 0) || (j == i && v <= 0) {
				return fmt.Errorf("lorasuite: Gram factor entry (%d, %d) = %v", i, j, v)
			}
			k++
		}
	}
	return nil
}

// unpack builds the dense form once: the Cholesky for GramCholesky, the full
// symmetric n x n inverse for GramInverse.
func (f *GramFactor) unpack() error {
	f.once.Do(func() {
		if f.err = f.Validate(); f.err != nil {
			return
		}
		n := f.N
		d := make([]float64, n*n)
		k := 0
		for i := 0; i < n; i++ {
			copy(d[i*n+i:i*n+n], f.Packed[k:k+n-i])
			k += n - i
		}
		if f.Kind == GramInverse {
			for i := 0; i < n; i++ {
				for j := i + 1; j < n; j++ {
					d[j*n+i] = d[i*n+j]
				}
			}
			f.inv = mat.NewDense(n, n, d)
			return
		}
		var ch mat.Cholesky
		ch.SetFromU(mat.NewTriDense(n, mat.Upper, d))
		f.chol = &ch
	})
	return f.err
}

// cholesky returns the factor of a GramCholesky.
func (f *GramFactor) cholesky() (*mat.Cholesky, error) {
	if f.Kind != GramCholesky {
		return nil, fmt.Errorf("lorasuite: Gram factor of kind %q, want %q", f.Kind, GramCholesky)
	}
	if err := f.unpack(); err != nil {
		return nil, err
	}
	return f.chol, nil
}

// inverse returns the dense symmetric inverse of a GramInverse.
func (f *GramFactor) inverse() (*mat.Dense, error) {
	if f.Kind != GramInverse {
		return nil, fmt.Errorf("lorasuite: Gram factor of kind %q, want %q", f.Kind, GramInverse)
	}
	if err := f.unpack(); err != nil {
		return nil, err
	}
	return f.inv, nil
}

// NewTransferPinv returns pinv(W_x) (d_n x d_o) explicitly, as the ridged
// least-squares solves of pinvApply give it, or nil for the identity. MLP
// operators apply it with one GEMM per module instead of a Cholesky solve
// with r right-hand sides (latency bound: ~165 ms at d = 4096 with OpenBLAS,
// against ~20 ms). Cost: the d^3 Gram and Cholesky plus a solve with d
// right-hand sides (~0.2 TFLOP at d = 4096): cache it with the pair.
func NewTransferPinv(t *Transfer) (*mat.Dense, error) {
	if t.Identity {
		return nil, nil
	}
	if _, err := t.pinvApply(mat.NewDense(t.DOld, 1, nil)); err != nil { // factors W_x's Gram once
		return nil, err
	}
	var p mat.Dense
	if t.DNew <= t.DOld { // (W^T W + l I)^-1 W^T
		if err := t.pinvChol.SolveTo(&p, t.W.T()); err != nil {
			return nil, fmt.Errorf("lorasuite: pinv(W_x): %w", err)
		}
		return &p, nil
	}
	// W^T (W W^T + l I)^-1 = ((W W^T + l I)^-1 W)^T
	if err := t.pinvChol.SolveTo(&p, t.W); err != nil {
		return nil, fmt.Errorf("lorasuite: pinv(W_x): %w", err)
	}
	return mat.DenseCopyOf(p.T()), nil
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
