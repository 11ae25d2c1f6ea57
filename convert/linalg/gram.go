package linalg

import (
	"fmt"

	"gonum.org/v1/gonum/mat"
)

// AddGrams accumulates the Gram products of one chunk of paired rows in
// float64: a += x^T x and b += x^T y, for x (c x p) and y (c x q) row-major
// float32 with the same c rows, a p x p and b p x q. Only the triangle of a
// that its storage uses is written. buf is scratch that AddGrams may use and
// returns (grown when short), so that a caller streaming many chunks can
// reuse one buffer of (p + q) c values; pass nil to start.
//
// Each backend gets the layout its kernels are fast at. OpenBLAS: the chunk
// converted as is, then Dsyrk and Dgemm with the transposes folded into the
// calls. Pure gonum: the chunk converted into transposed (p x c and q x c)
// buffers, then Dsyrk and Dgemm without transposes, which run gonum's
// dot-product kernels instead of the axpy-based transposed ones (2.5-4x
// faster at p = q = c = 1024; the float64 results agree to rounding).
//
// It panics ("linalg:") when the sizes do not agree: a caller's shape bug.
func AddGrams(a *mat.SymDense, b *mat.Dense, x, y []float32, buf []float64) []float64 {
	p := a.SymmetricDim()
	br, q := b.Dims()
	if p == 0 || q == 0 || br != p || len(x)%p != 0 || len(y)%q != 0 || len(x)/p != len(y)/q {
		panic(fmt.Sprintf("linalg: AddGrams of a %d x %d, b %d x %d, chunks of %d and %d values", p, p, br, q, len(x), len(y)))
	}
	c := len(x) / p
	if c == 0 {
		return buf
	}
	if cap(buf) < (p+q)*c {
		buf = make([]float64, (p+q)*c)
	}
	buf = buf[:(p+q)*c]
	addGrams(a.RawSymmetric(), b.RawMatrix(), x, y, c, p, q, buf)
	return buf
}

// transposeTo64 writes the transpose (cols x rows) of the row-major float32
// x (rows x cols) into dst as float64, in cache-sized tiles.
func transposeTo64(dst []float64, x []float32, rows, cols int) {
	const tile = 64
	for i0 := 0; i0 < rows; i0 += tile {
		i1 := min(i0+tile, rows)
		for j0 := 0; j0 < cols; j0 += tile {
			j1 := min(j0+tile, cols)
			for i := i0; i < i1; i++ {
				row := x[i*cols : (i+1)*cols]
				for j := j0; j < j1; j++ {
					dst[j*rows+i] = float64(row[j])
				}
			}
		}
	}
}
