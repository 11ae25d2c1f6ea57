package cka

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/mat"
)

// Linear returns linear CKA between x (n x dx) and y (n x dy), rows being the
// same n samples, in [0, 1]. It uses the feature form when n (dx + dy) >=
// dx dy and the Gram form otherwise (same value, fewer operations). It returns
// 0 when either side has no variance (all rows equal), where CKA is undefined.
// It panics with "cka:" when the row counts differ.
func Linear(x, y mat.Matrix) float64 {
	n, dx := x.Dims()
	_, dy := y.Dims()
	if n*(dx+dy) >= dx*dy {
		return LinearFeature(x, y)
	}
	return LinearGram(x, y)
}

// LinearFeature is CKA in feature space: ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F
// ||Yc^T Yc||_F) with Xc, Yc the column-centred inputs.
func LinearFeature(x, y mat.Matrix) float64 {
	xc, yc := centred(x, y)
	var yx, xx, yy mat.Dense
	yx.Mul(yc.T(), xc) // dy x dx
	xx.Mul(xc.T(), xc) // dx x dx
	yy.Mul(yc.T(), yc) // dy x dy
	num := sqFrob(&yx)
	den := math.Sqrt(sqFrob(&xx)) * math.Sqrt(sqFrob(&yy))
	return ratio(num, den)
}

// LinearGram is CKA in sample space: <Kx, Ky>_F / (||Kx||_F ||Ky||_F) with
// Kx = Xc Xc^T and Ky = Yc Yc^T (n x n).
func LinearGram(x, y mat.Matrix) float64 {
	xc, yc := centred(x, y)
	kx, ky := Gram(xc), Gram(yc)
	num := frobDot(kx, ky)
	den := math.Sqrt(frobDot(kx, kx)) * math.Sqrt(frobDot(ky, ky))
	return ratio(num, den)
}

// ratio is num/den clamped to [0, 1], 0 when den is 0 (no variance).
func ratio(num, den float64) float64 {
	if den == 0 || math.IsNaN(den) {
		return 0
	}
	return math.Min(1, math.Max(0, num/den))
}

// centred returns column-centred copies of x and y.
func centred(x, y mat.Matrix) (*mat.Dense, *mat.Dense) {
	nx, _ := x.Dims()
	ny, _ := y.Dims()
	if nx != ny {
		panic(fmt.Sprintf("cka: sample counts differ: x has %d rows, y has %d", nx, ny))
	}
	return Centre(x), Centre(y)
}

// Centre returns a copy of x (n x d) with every column's mean subtracted.
func Centre(x mat.Matrix) *mat.Dense {
	c := mat.DenseCopyOf(x)
	n, d := c.Dims()
	if n == 0 {
		return c
	}
	raw := c.RawMatrix()
	mean := make([]float64, d)
	for i := 0; i < n; i++ {
		row := raw.Data[i*raw.Stride : i*raw.Stride+d]
		for j, v := range row {
			mean[j] += v
		}
	}
	for j := range mean {
		mean[j] /= float64(n)
	}
	for i := 0; i < n; i++ {
		row := raw.Data[i*raw.Stride : i*raw.Stride+d]
		for j := range row {
			row[j] -= mean[j]
		}
	}
	return c
}

// Gram returns x x^T (n x n, symmetric) for x (n x d) with one BLAS Dsyrk.
func Gram(x *mat.Dense) *mat.SymDense {
	n, d := x.Dims()
	k := mat.NewSymDense(n, nil)
	if n == 0 || d == 0 {
		return k
	}
	blas64.Syrk(blas.NoTrans, 1, x.RawMatrix(), 0, k.RawSymmetric())
	return k
}

// frobDot is <a, b>_F of two symmetric matrices stored as upper triangles.
func frobDot(a, b *mat.SymDense) float64 {
	ra, rb := a.RawSymmetric(), b.RawSymmetric()
	n := ra.N
	var s float64
	for i := 0; i < n; i++ {
		s += ra.Data[i*ra.Stride+i] * rb.Data[i*rb.Stride+i]
		var off float64
		for j := i + 1; j < n; j++ {
			off += ra.Data[i*ra.Stride+j] * rb.Data[i*rb.Stride+j]
		}
		s += 2 * off
	}
	return s
}

// sqFrob is ||a||_F^2.
func sqFrob(a *mat.Dense) float64 {
	r, c := a.Dims()
	raw := a.RawMatrix()
	var s float64
	for i := 0; i < r; i++ {
		for _, v := range raw.Data[i*raw.Stride : i*raw.Stride+c] {
			s += v * v
		}
	}
	return s
}
