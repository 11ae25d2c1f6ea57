//go:build !(cgo && openblas)

package linalg

import "gonum.org/v1/gonum/mat"

// backendName is what Backend reports in the pure-Go build.
const backendName = "gonum"

// blasThreads reports 1: gonum's native BLAS has no thread pool to size (its
// Dgemm splits large products over goroutines on its own).
func blasThreads() int { return 1 }

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
