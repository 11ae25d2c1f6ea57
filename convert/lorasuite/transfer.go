package lorasuite

import (
	"context"
	"fmt"
	"math"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/linalg"
)

// transferRidge is the ridge added to E_o^T E_o, relative to its mean
// eigenvalue tr(E_o^T E_o)/d_o. It makes the normal equations positive
// definite when E_o[S] is rank deficient (fewer shared tokens than d_o,
// duplicate rows, dead embedding dimensions), where it selects the
// minimum-norm minimiser that the reference's pinv gives. Directions whose
// eigenvalue is sigma^2 are shrunk by the factor sigma^2/(sigma^2+lambda), a
// relative change of 1e-9 for directions at the mean eigenvalue; the Cholesky
// condition number stays below ~1e9, safe in float64.
const transferRidge = 1e-9

// pinvRidge plays the same role for the Gram matrix of W_x itself when
// applying pinv(W_x): W_x is well conditioned for related models, so a
// smaller ridge keeps pinv(W_x) W_x = I to ~1e-12.
const pinvRidge = 1e-12

// Transfer is the hidden-space transfer matrix W_x (d_o x d_n) of step 1: an old
// hidden row vector x_o maps to x_n ~ x_o W_x.
type Transfer struct {
	// DOld and DNew are d_o and d_n.
	DOld, DNew int
	// Identity is true for W_x = I (then W is nil and DOld == DNew).
	Identity bool
	// W is W_x, d_o x d_n row-major; nil when Identity.
	W *mat.Dense
	// ResidualKnown says whether Residual was measured.
	ResidualKnown bool
	// Residual is ||E_o[S] W_x - E_n[S]||_F / ||E_n[S]||_F over the shared
	// embedding rows, computed from the accumulated Gram matrices (see
	// TransferAccumulator.Solve). Values below ~1e-7 mean "exact".
	Residual float64
	// Rows is the number of shared-vocabulary rows fitted (0 if none).
	Rows int
	// Ridge is the absolute ridge lambda added to E_o^T E_o (0 for identity).
	Ridge float64

	w32Once sync.Once
	w32     []float32 // W in float32, for mulRight32

	pinvOnce sync.Once
	pinvChol *mat.Cholesky // of W^T W (d_n <= d_o) or W W^T (d_n > d_o), ridged
	pinvErr  error
}

// IdentityTransfer returns W_x = I_d (the reference's choice for same-width
// pairs such as Qwen1.5 -> Qwen2.5). Models of different widths have no
// identity map: fit W_x from the shared embeddings (FitTransfer) or supply a
// matrix with NewTransfer.
func IdentityTransfer(d int) *Transfer {
	return &Transfer{DOld: d, DNew: d, Identity: true}
}

// NewTransfer wraps a caller-supplied W_x (d_o x d_n); the residual is unknown.
func NewTransfer(w *mat.Dense) *Transfer {
	r, c := w.Dims()
	return &Transfer{DOld: r, DNew: c, W: w}
}

// RowSource streams the shared-vocabulary embedding rows in chunks: it calls
// emit with matching row-major chunks old (c x d_o) and new (c x d_n) for the
// same c tokens (typically bf16 rows converted to float32), in any number of
// calls, and returns emit's error if any. It should stop when ctx is done.
type RowSource func(ctx context.Context, emit func(old, new []float32) error) error

// FitTransfer fits W_x = argmin ||E_o[S] W - E_n[S]||_F (step 1) from rows
// streamed by src, by the ridged normal equations (see TransferAccumulator).
// Memory: the d_o x d_o and d_o x d_n float64 Grams plus one chunk.
func FitTransfer(ctx context.Context, dOld, dNew int, src RowSource) (*Transfer, error) {
	if dOld <= 0 || dNew <= 0 {
		return nil, fmt.Errorf("lorasuite: transfer matrix needs positive hidden sizes, got %d -> %d", dOld, dNew)
	}
	acc := NewTransferAccumulator(dOld, dNew)
	err := src(ctx, func(old, new []float32) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return acc.Add(old, new)
	})
	if err != nil {
		return nil, fmt.Errorf("lorasuite: fitting transfer matrix: %w", err)
	}
	return acc.Solve()
}

// TransferAccumulator accumulates A = E_o^T E_o (d_o x d_o), C = E_o^T E_n
// (d_o x d_n), ||E_o||_F^2, ||E_n||_F^2 and (when d_o == d_n) tr(E_o^T E_n)
// in float64 over row chunks. One made by NewIdentityAccumulator keeps only
// the three scalars: all that Identity needs.
type TransferAccumulator struct {
	dOld, dNew int
	ata        *mat.SymDense // nil for an identity-only accumulator
	atb        *mat.Dense
	buf        []float64 // linalg.AddGrams scratch, one chunk in float64
	ata2       float64   // ||E_o||_F^2 = tr(A)
	btb        float64   // ||E_n||_F^2
	cross      float64   // tr(E_o^T E_n) = <E_o, E_n>_F, when d_o == d_n
	rows       int
}

// NewTransferAccumulator returns an empty accumulator for d_o x d_n. It
// panics ("lorasuite:") unless both are positive; FitTransfer checks first.
// Memory: the two float64 Grams, (d_o + d_n) d_o values, plus one chunk.
func NewTransferAccumulator(dOld, dNew int) *TransferAccumulator {
	if dOld <= 0 || dNew <= 0 {
		panic(fmt.Sprintf("lorasuite: transfer dimensions %d x %d", dOld, dNew))
	}
	return &TransferAccumulator{
		dOld: dOld, dNew: dNew,
		ata: mat.NewSymDense(dOld, nil),
		atb: mat.NewDense(dOld, dNew, nil),
	}
}

// NewIdentityAccumulator returns an accumulator for W_x = I_d that keeps only
// ||E_o||^2, ||E_n||^2 and <E_o, E_n>: O(d) work per row instead of the
// O(d^2) Gram updates, and no d x d matrices. Its Identity reports the same
// residual as a full accumulator's; Solve returns an error. It panics
// ("lorasuite:") unless d is positive.
func NewIdentityAccumulator(d int) *TransferAccumulator {
	if d <= 0 {
		panic(fmt.Sprintf("lorasuite: transfer dimension %d", d))
	}
	return &TransferAccumulator{dOld: d, dNew: d}
}

// Rows returns the number of rows accumulated so far.
func (t *TransferAccumulator) Rows() int { return t.rows }

// Add accumulates one chunk: old is c x d_o and new is c x d_n, row-major,
// for the same c shared tokens. Non-finite values are an error. The Grams
// are float64 sums of exact float64 products of the float32 inputs
// (linalg.AddGrams). Float32 GEMMs would be about twice as fast, and the
// products of bf16 values are exact in float32, but their sums over a chunk
// are not: a relative error of ~1e-7 sqrt(c) per entry, and the residual of
// an exact fit is the square root of a difference of such sums, so it would
// read ~1e-3 (an estimate, not measured) instead of ~1e-7, and the planted
// tests' 1e-6 bound on W_x would not hold.
func (t *TransferAccumulator) Add(old, new []float32) error {
	if len(old)%t.dOld != 0 || len(new)%t.dNew != 0 || len(old)/t.dOld != len(new)/t.dNew {
		return fmt.Errorf("lorasuite: embedding chunk sizes %d and %d do not hold the same number of rows of widths %d and %d",
			len(old), len(new), t.dOld, t.dNew)
	}
	c := len(old) / t.dOld
	if c == 0 {
		return nil
	}
	sqOld, sqNew, cross := 0.0, 0.0, 0.0
	for i, v := range old {
		if v-v != 0 { // NaN or ±Inf
			return fmt.Errorf("lorasuite: old embedding chunk row %d (of rows %d..) has non-finite value", i/t.dOld, t.rows)
		}
		sqOld += float64(v) * float64(v)
	}
	for i, v := range new {
		if v-v != 0 {
			return fmt.Errorf("lorasuite: new embedding chunk row %d (of rows %d..) has non-finite value", i/t.dNew, t.rows)
		}
		sqNew += float64(v) * float64(v)
	}
	if t.dOld == t.dNew {
		for i, v := range old {
			cross += float64(v) * float64(new[i])
		}
	}
	if t.ata != nil {
		t.buf = linalg.AddGrams(t.ata, t.atb, old, new, t.buf)
	}
	t.ata2 += sqOld
	t.btb += sqNew
	t.cross += cross
	t.rows += c
	return nil
}

// Solve returns W_x solving (A + lambda I) W = C by Cholesky, lambda =
// transferRidge * tr(A)/d_o, and its relative residual computed from the
// accumulated Grams without a second pass:
//
//	||E_o W - E_n||^2 = ||E_n||^2 - 2<W, C> + <W, A W>  and  A W = C - lambda W
//	                  = ||E_n||^2 - <W, C> - lambda ||W||^2.
//
// The subtraction loses about half the float64 digits when the fit is almost
// exact, so residuals below ~1e-7 are indistinguishable from 0 (clamped at 0).
func (t *TransferAccumulator) Solve() (*Transfer, error) {
	if t.ata == nil {
		return nil, fmt.Errorf("lorasuite: an identity accumulator (NewIdentityAccumulator) holds no Grams to fit the %d x %d transfer matrix", t.dOld, t.dNew)
	}
	if t.rows == 0 {
		return nil, fmt.Errorf("lorasuite: no shared embedding rows to fit the %d x %d transfer matrix", t.dOld, t.dNew)
	}
	lambda := transferRidge * mat.Trace(t.ata) / float64(t.dOld)
	if lambda == 0 {
		return nil, fmt.Errorf("lorasuite: old embeddings of the %d shared tokens are all zero", t.rows)
	}
	a := mat.NewSymDense(t.dOld, nil)
	a.CopySym(t.ata)
	for i := 0; i < t.dOld; i++ {
		a.SetSym(i, i, a.At(i, i)+lambda)
	}
	w, err := linalg.SolveSPD(a, t.atb)
	if err != nil {
		return nil, fmt.Errorf("lorasuite: transfer matrix normal equations (%d rows, d_o %d): %w", t.rows, t.dOld, err)
	}
	res := t.btb - frobDot(w, t.atb) - lambda*frobDot(w, w)
	tr := &Transfer{DOld: t.dOld, DNew: t.dNew, W: w, ResidualKnown: true, Rows: t.rows, Ridge: lambda}
	if t.btb > 0 {
		tr.Residual = math.Sqrt(max(res, 0) / t.btb)
	}
	return tr, nil
}

// Identity returns W_x = I with its residual ||E_o - E_n||/||E_n|| measured on
// the accumulated rows (so a user can compare it to Solve's), from
// ||E_o - E_n||^2 = ||E_o||^2 - 2 <E_o, E_n> + ||E_n||^2. Requires d_o == d_n.
func (t *TransferAccumulator) Identity() (*Transfer, error) {
	if t.dOld != t.dNew {
		return nil, fmt.Errorf("lorasuite: identity transfer needs equal hidden sizes, old %d, new %d: fit W_x by least squares instead", t.dOld, t.dNew)
	}
	tr := IdentityTransfer(t.dOld)
	tr.Rows = t.rows
	if t.rows > 0 && t.btb > 0 {
		res := t.ata2 - 2*t.cross + t.btb
		tr.ResidualKnown = true
		tr.Residual = math.Sqrt(max(res, 0) / t.btb)
	}
	return tr, nil
}

// frobDot returns <a, b>_F = sum a_ij b_ij.
func frobDot(a, b *mat.Dense) float64 {
	ar, br := a.RawMatrix(), b.RawMatrix()
	r, c := a.Dims()
	if r2, c2 := b.Dims(); r2 != r || c2 != c {
		panic(fmt.Sprintf("lorasuite: frobDot of %dx%d and %dx%d", r, c, r2, c2))
	}
	s := 0.0
	for i := 0; i < r; i++ {
		x := ar.Data[i*ar.Stride : i*ar.Stride+c]
		y := br.Data[i*br.Stride : i*br.Stride+c]
		for j := range x {
			s += x[j] * y[j]
		}
	}
	return s
}

// mulRight returns x W_x: x is k x d_o, the result k x d_n (a copy for identity).
func (t *Transfer) mulRight(x mat.Matrix) *mat.Dense {
	if _, c := x.Dims(); c != t.DOld {
		panic(fmt.Sprintf("lorasuite: x W_x with x of %d columns, d_o %d", c, t.DOld))
	}
	if t.Identity {
		return mat.DenseCopyOf(x)
	}
	var out mat.Dense
	out.Mul(x, t.W)
	return &out
}

// mulRight32 returns x W_x in float32 with float32 accumulation (blas32
// Sgemm: twice the speed and half the memory traffic of float64). x is
// k x d_o row-major; the result is k x d_n row-major, written into dst when
// it has the capacity (a scratch buffer), else freshly allocated.
func (t *Transfer) mulRight32(dst, x []float32, k int) []float32 {
	if len(x) != k*t.DOld {
		panic(fmt.Sprintf("lorasuite: x W_x with %d values for %d x %d", len(x), k, t.DOld))
	}
	out := grow(dst, k*t.DNew)
	if t.Identity {
		copy(out, x)
		return out
	}
	t.w32Once.Do(func() { t.w32 = linalg.Float32(t.W) })
	if k == 0 {
		return out
	}
	blas32.Gemm(blas.NoTrans, blas.NoTrans, 1,
		blas32.General{Rows: k, Cols: t.DOld, Stride: t.DOld, Data: x},
		blas32.General{Rows: t.DOld, Cols: t.DNew, Stride: t.DNew, Data: t.w32},
		0, blas32.General{Rows: k, Cols: t.DNew, Stride: t.DNew, Data: out})
	return out
}

// grow returns buf[:n], reallocating when its capacity is short.
func grow[T any](buf []T, n int) []T {
	if cap(buf) < n {
		return make([]T, n)
	}
	return buf[:n]
}

// mulLeftT returns W_x^T y: y is d_o x k, the result d_n x k.
func (t *Transfer) mulLeftT(y mat.Matrix) *mat.Dense {
	if r, _ := y.Dims(); r != t.DOld {
		panic(fmt.Sprintf("lorasuite: W_x^T y with y of %d rows, d_o %d", r, t.DOld))
	}
	if t.Identity {
		return mat.DenseCopyOf(y)
	}
	var out mat.Dense
	out.Mul(t.W.T(), y)
	return &out
}

// pinvApply returns pinv(W_x) y (d_n x k) for y (d_o x k) as a least-squares
// solve, never forming pinv: with d_n <= d_o, (W^T W + l I)^-1 W^T y; with
// d_n > d_o, W^T (W W^T + l I)^-1 y, l = pinvRidge * mean eigenvalue.
func (t *Transfer) pinvApply(y mat.Matrix) (*mat.Dense, error) {
	if r, _ := y.Dims(); r != t.DOld {
		panic(fmt.Sprintf("lorasuite: pinv(W_x) y with y of %d rows, d_o %d", r, t.DOld))
	}
	if t.Identity {
		return mat.DenseCopyOf(y), nil
	}
	t.pinvOnce.Do(func() {
		var g mat.SymDense
		if t.DNew <= t.DOld {
			g.SymOuterK(1, t.W.T())
		} else {
			g.SymOuterK(1, t.W)
		}
		n := g.SymmetricDim()
		l := pinvRidge * mat.Trace(&g) / float64(n)
		for i := 0; i < n; i++ {
			g.SetSym(i, i, g.At(i, i)+l)
		}
		var ch mat.Cholesky
		if !ch.Factorize(&g) {
			t.pinvErr = fmt.Errorf("lorasuite: W_x (%d x %d) is numerically rank deficient: %w", t.DOld, t.DNew, linalg.ErrNotPositiveDefinite)
			return
		}
		t.pinvChol = &ch
	})
	if t.pinvErr != nil {
		return nil, t.pinvErr
	}
	var out mat.Dense
	if t.DNew <= t.DOld {
		var wty mat.Dense
		wty.Mul(t.W.T(), y)
		if err := t.pinvChol.SolveTo(&out, &wty); err != nil {
			return nil, fmt.Errorf("lorasuite: pinv(W_x) solve: %w", err)
		}
		return &out, nil
	}
	var z mat.Dense
	if err := t.pinvChol.SolveTo(&z, y); err != nil {
		return nil, fmt.Errorf("lorasuite: pinv(W_x) solve: %w", err)
	}
	out.Mul(t.W.T(), &z)
	return &out, nil
}
