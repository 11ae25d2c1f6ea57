package linalg

import (
	"fmt"

	"gonum.org/v1/gonum/lapack/lapack64"
	"gonum.org/v1/gonum/mat"
)

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
