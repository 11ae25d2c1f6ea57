package linalg

import (
	"errors"
	"fmt"

	"gonum.org/v1/gonum/lapack/lapack64"
	"gonum.org/v1/gonum/mat"
)

// ErrSVD reports that the singular value decomposition did not converge.
var ErrSVD = errors.New("linalg: SVD did not converge")

// ErrNotPositiveDefinite reports that a Cholesky factorisation failed: the
// matrix is not (numerically) symmetric positive definite.
var ErrNotPositiveDefinite = errors.New("linalg: matrix is not positive definite")

// Backend names the active backend: "gonum" (pure Go, the default build) or
// "openblas" (build tag openblas with cgo).
func Backend() string { return backendName }

// SVD returns the thin singular value decomposition a = u diag(s) vt of an
// m x n matrix: u is m x k with orthonormal columns, s holds the k = min(m, n)
// singular values in decreasing order, and vt is k x n with orthonormal rows.
// When k is 0 it returns empty (zero-value) matrices and an empty s. a is not
// modified. A non-converged decomposition returns an error wrapping ErrSVD.
func SVD(a mat.Matrix) (u *mat.Dense, s []float64, vt *mat.Dense, err error) {
	m, n := a.Dims()
	if m == 0 || n == 0 {
		return &mat.Dense{}, []float64{}, &mat.Dense{}, nil
	}
	u, s, vt, ok := svdThin(mat.DenseCopyOf(a))
	if !ok {
		return nil, nil, nil, fmt.Errorf("%w (%d x %d, backend %s)", ErrSVD, m, n, backendName)
	}
	return u, s, vt, nil
}

// SingularValues returns the min(m, n) singular values of a (m x n) in
// decreasing order, without computing the singular vectors. An empty a gives
// an empty slice.
func SingularValues(a mat.Matrix) ([]float64, error) {
	m, n := a.Dims()
	if IsEmpty(a) {
		return []float64{}, nil
	}
	s, ok := singularValues(mat.DenseCopyOf(a))
	if !ok {
		return nil, fmt.Errorf("%w (%d x %d values only, backend %s)", ErrSVD, m, n, backendName)
	}
	return s, nil
}

// SolveSPD solves a x = b for x (n x k) with a symmetric positive definite
// (n x n) via Cholesky. It returns an error wrapping ErrNotPositiveDefinite when
// the factorisation fails. b is not modified.
func SolveSPD(a mat.Symmetric, b mat.Matrix) (*mat.Dense, error) {
	n := a.SymmetricDim()
	br, bc := b.Dims()
	if br != n {
		panic(fmt.Sprintf("linalg: SolveSPD dimension mismatch: a is %d x %d, b is %d x %d", n, n, br, bc))
	}
	if n == 0 || bc == 0 {
		return &mat.Dense{}, nil
	}
	var ch mat.Cholesky
	if ok := ch.Factorize(a); !ok {
		return nil, fmt.Errorf("%w (%d x %d)", ErrNotPositiveDefinite, n, n)
	}
	x := mat.NewDense(n, bc, nil)
	if err := ch.SolveTo(x, b); err != nil {
		// A Condition error: the solve happened but is ill-conditioned. The
		// caller asked for a ridge-regularised system, so report it.
		return nil, fmt.Errorf("linalg: SolveSPD (%d x %d): %w", n, n, err)
	}
	return x, nil
}

// Dense64 converts a row-major float32 slice (rows x cols) to a new *mat.Dense.
// It panics when len(data) != rows*cols; rows or cols of 0 give an empty Dense.
func Dense64(data []float32, rows, cols int) *mat.Dense {
	if len(data) != rows*cols {
		panic(fmt.Sprintf("linalg: Dense64: %d values for %d x %d", len(data), rows, cols))
	}
	if rows == 0 || cols == 0 {
		return &mat.Dense{}
	}
	out := make([]float64, len(data))
	for i, v := range data {
		out[i] = float64(v)
	}
	return mat.NewDense(rows, cols, out)
}

// Float32 converts a matrix to a row-major float32 slice (rows x cols).
func Float32(a mat.Matrix) []float32 {
	r, c := a.Dims()
	out := make([]float32, r*c)
	if d, ok := a.(*mat.Dense); ok {
		raw := d.RawMatrix()
		for i := 0; i < r; i++ {
			row := raw.Data[i*raw.Stride : i*raw.Stride+c]
			for j, v := range row {
				out[i*c+j] = float32(v)
			}
		}
		return out
	}
	for i := 0; i < r; i++ {
		for j := 0; j < c; j++ {
			out[i*c+j] = float32(a.At(i, j))
		}
	}
	return out
}

// IsEmpty reports whether m has no elements (zero-value Dense included).
func IsEmpty(m mat.Matrix) bool {
	if d, ok := m.(*mat.Dense); ok && d.IsEmpty() {
		return true
	}
	r, c := m.Dims()
	return r == 0 || c == 0
}

// QR returns the thin QR factorisation a = q r of an m x n matrix with m >= n:
// q is m x n with orthonormal columns, r is n x n upper triangular. Unlike
// mat.QR, which forms the full m x m Q, it costs O(m n^2) time and memory,
// which matters for the tall 4096 x 16 LoRA factors it is used on. It panics
// ("linalg:") when m < n. a is not modified.
func QR(a mat.Matrix) (q, r *mat.Dense) {
	m, n := a.Dims()
	if m < n {
		panic(fmt.Sprintf("linalg: thin QR needs rows >= cols, got %d x %d", m, n))
	}
	if n == 0 {
		return &mat.Dense{}, &mat.Dense{}
	}
	q = mat.DenseCopyOf(a)
	raw := q.RawMatrix()
	tau := make([]float64, n)
	query := make([]float64, 1)
	lapack64.Geqrf(raw, tau, query, -1)
	lwork := int(query[0])
	lapack64.Orgqr(raw, tau, query, -1)
	lwork = max(lwork, int(query[0]), 1)
	work := make([]float64, lwork)
	lapack64.Geqrf(raw, tau, work, lwork)
	r = mat.NewDense(n, n, nil)
	for i := 0; i < n; i++ {
		for j := i; j < n; j++ {
			r.Set(i, j, raw.Data[i*raw.Stride+j])
		}
	}
	lapack64.Orgqr(raw, tau, work, lwork)
	return q, r
}
