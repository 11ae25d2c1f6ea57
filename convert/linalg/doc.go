// Package linalg is lorasync's single switch between linear-algebra backends.
//
// The default build is pure Go: gonum's native BLAS and LAPACK. Built with the
// tag openblas (and cgo), the package routes gonum's blas64 and blas32 to
// OpenBLAS through gonum.org/v1/netlib/blas/netlib, lapack64 to the reference
// LAPACK wrappers in gonum.org/v1/netlib/lapack/netlib, and the singular value
// decomposition to LAPACKE's divide-and-conquer Dgesdd, which is 40x faster than
// the one-sided Dgesvd that mat.SVD uses (docs/dependencies.md). Importing this
// package is what installs the backend, so every package that wants OpenBLAS
// speed must import it (convert/lorasuite does).
//
// OpenBLAS runs every call on its thread pool, even a 128 x 128 one, and
// concurrent multi-threaded calls from several goroutines spin against each
// other. SerialBLAS switches the pool to one thread for a phase of many small
// calls (reference-counted, process-wide), so that the caller's goroutines
// are the parallelism; big GEMMs belong outside such phases. AddGrams is the
// streamed Gram update x^T x, x^T y in the layout each backend is fast at.
//
// Both builds pass the same tests:
//
//	go test ./convert/linalg/...
//	go test -tags openblas ./convert/linalg/...
//
// Matrices are gonum *mat.Dense, row-major, with shapes given as rows x cols.
// Shape mismatches in a caller's own code panic with a "linalg:" prefix; numeric
// failures (a non-converged SVD, a matrix that is not positive definite) are
// returned as errors.
package linalg
