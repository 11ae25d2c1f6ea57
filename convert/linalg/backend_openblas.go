//go:build cgo && openblas

package linalg

/*
#cgo pkg-config: openblas lapacke
// From OpenBLAS's cblas.h, declared here so that no header path is needed.
int openblas_get_num_threads(void);
void openblas_set_num_threads(int num_threads);
char *openblas_get_corename(void);
*/
import "C"

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/lapack/lapack64"
	"gonum.org/v1/gonum/mat"
	blasnetlib "gonum.org/v1/netlib/blas/netlib"
	"gonum.org/v1/netlib/lapack/lapacke"
	lapacknetlib "gonum.org/v1/netlib/lapack/netlib"
)

// backendName is what Backend reports in the OpenBLAS build.
const backendName = "openblas"

func init() {
	blas64.Use(blasnetlib.Implementation{})
	blas32.Use(blasnetlib.Implementation{})
	lapack64.Use(lapacknetlib.Implementation{})
}

// blasThreads returns OpenBLAS's current thread count.
func blasThreads() int { return int(C.openblas_get_num_threads()) }

// kernelName is the OpenBLAS kernel family in use ("Haswell", "Cooperlake",
// ...): OpenBLAS picks it from the CPU at load time unless the environment
// variable OPENBLAS_CORETYPE names one.
func kernelName() string { return C.GoString(C.openblas_get_corename()) }

// setBLASThreads sets OpenBLAS's thread count for all later calls from every
// thread (the Debian 0.3.21 library has no per-caller setting).
func setBLASThreads(n int) { C.openblas_set_num_threads(C.int(n)) }

// svdThin computes the thin SVD of a (m x n, m, n >= 1) with LAPACKE Dgesdd
// (divide and conquer, jobz = 'S'), row-major throughout.
func svdThin(a *mat.Dense) (u *mat.Dense, s []float64, vt *mat.Dense, ok bool) {
	m, n := a.Dims()
	k := min(m, n)
	work := mat.DenseCopyOf(a) // Dgesdd overwrites its input.
	raw := work.RawMatrix()
	s = make([]float64, k)
	u = mat.NewDense(m, k, nil)
	vt = mat.NewDense(k, n, nil)
	ur, vr := u.RawMatrix(), vt.RawMatrix()
	iwork := make([]int32, 8*k)
	query := make([]float64, 1)
	if !lapacke.Dgesdd('S', m, n, raw.Data, raw.Stride, s, ur.Data, ur.Stride, vr.Data, vr.Stride, query, -1, iwork) {
		return nil, nil, nil, false
	}
	lwork := int(query[0])
	buf := make([]float64, max(lwork, 1))
	if !lapacke.Dgesdd('S', m, n, raw.Data, raw.Stride, s, ur.Data, ur.Stride, vr.Data, vr.Stride, buf, lwork, iwork) {
		return nil, nil, nil, false
	}
	return u, s, vt, true
}

// singularValues returns the singular values of a (m x n, m, n >= 1) only,
// with LAPACKE Dgesdd (jobz = 'N'). LAPACKE 3.11's row-major check demands
// ldvt >= n even when no vectors are computed, so pass that (and small dummy
// buffers that are never written).
func singularValues(a *mat.Dense) ([]float64, bool) {
	m, n := a.Dims()
	k := min(m, n)
	work := mat.DenseCopyOf(a)
	raw := work.RawMatrix()
	s := make([]float64, k)
	iwork := make([]int32, 8*k)
	query := make([]float64, 1)
	u, vt := make([]float64, 1), make([]float64, n)
	if !lapacke.Dgesdd('N', m, n, raw.Data, raw.Stride, s, u, 1, vt, n, query, -1, iwork) {
		return nil, false
	}
	lwork := int(query[0])
	buf := make([]float64, max(lwork, 1))
	if !lapacke.Dgesdd('N', m, n, raw.Data, raw.Stride, s, u, 1, vt, n, buf, lwork, iwork) {
		return nil, false
	}
	return s, true
}

// addGrams is AddGrams's kernel: the chunk converted as is into buf (x then
// y, c x p and c x q); OpenBLAS's Dsyrk and Dgemm take the transposes in
// their packing at no cost (transposing first measured 15% slower).
func addGrams(a blas64.Symmetric, b blas64.General, x, y []float32, c, p, q int, buf []float64) {
	xd, yd := buf[:c*p], buf[c*p:c*(p+q)]
	for i, v := range x {
		xd[i] = float64(v)
	}
	for i, v := range y {
		yd[i] = float64(v)
	}
	xg := blas64.General{Rows: c, Cols: p, Stride: p, Data: xd}
	blas64.Syrk(blas.Trans, 1, xg, 1, a)
	blas64.Gemm(blas.Trans, blas.NoTrans, 1, xg, blas64.General{Rows: c, Cols: q, Stride: q, Data: yd}, 1, b)
}
