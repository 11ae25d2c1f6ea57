//go:build !(cgo && openblas)

package linalg

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/mat"
)

// backendName is what Backend reports in the pure-Go build.
const backendName = "gonum"

// blasThreads reports 1: gonum's native BLAS has no thread pool to size (its
// Dgemm splits large products over goroutines on its own).
func blasThreads() int { return 1 }

// kernelName is "go": gonum's native kernels are pure Go (its assembly
// covers a few level-1 routines, and is not picked per CPU).
func kernelName() string { return "go" }

// setBLASThreads is a no-op in the pure-Go build.
func setBLASThreads(int) {}

// svdThin computes the thin SVD of a (m x n, m, n >= 1) with gonum's mat.SVD
// (LAPACK Dgesvd semantics, pure Go).
func svdThin(a *mat.Dense) (u *mat.Dense, s []float64, vt *mat.Dense, ok bool) {
	var f mat.SVD
	if !f.Factorize(a, mat.SVDThin) {
		return nil, nil, nil, false
	}
	u = new(mat.Dense)
	f.UTo(u)
	var v mat.Dense
	f.VTo(&v)
	vt = mat.DenseCopyOf(v.T())
	return u, f.Values(nil), vt, true
}

// singularValues returns the singular values of a (m x n, m, n >= 1) only.
func singularValues(a *mat.Dense) ([]float64, bool) {
	var f mat.SVD
	if !f.Factorize(a, mat.SVDNone) {
		return nil, false
	}
	return f.Values(nil), true
}

// addGrams is AddGrams's kernel: the chunk transposed into buf (x^T then
// y^T, p x c and q x c), so that Dsyrk and Dgemm need no transposes.
func addGrams(a blas64.Symmetric, b blas64.General, x, y []float32, c, p, q int, buf []float64) {
	xt, yt := buf[:p*c], buf[p*c:(p+q)*c]
	transposeTo64(xt, x, c, p)
	transposeTo64(yt, y, c, q)
	xg := blas64.General{Rows: p, Cols: c, Stride: c, Data: xt}
	blas64.Syrk(blas.NoTrans, 1, xg, 1, a)
	blas64.Gemm(blas.NoTrans, blas.Trans, 1, xg, blas64.General{Rows: q, Cols: c, Stride: c, Data: yt}, 1, b)
}
