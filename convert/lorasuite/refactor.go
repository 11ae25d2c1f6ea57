package lorasuite

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/linalg"
)

// Refactor re-balances a rank-<=r product dW = b a, b (out x r), a (r x in),
// into b' (out x r), a' (r x in) with b' a' = b a and the singular values
// split evenly: with thin QRs b = Q_b R_b and a^T = Q_a R_a and the r x r SVD
// R_b R_a^T = U S V^T,
//
//	b' = Q_b U sqrt(S),  a' = sqrt(S) V^T Q_a^T.
//
// This is the reference's "dense SVD, keep rank r" (B = U_r sqrt(S_r),
// A = sqrt(S_r) V_r^T) at O((out + in) r^2) instead of O(out in min(out, in)),
// and gives the same dW to float precision because rank(dW) <= r already.
// The LoRA scale s = alpha/r (or alpha/sqrt(r)) is not involved: b' a' = b a
// with the same r, so an adapter written with the same r and alpha reproduces
// s b a. When out < r or in < r (tiny models) it falls back to the dense SVD
// and pads with zero columns/rows so b' and a' keep r.
func Refactor(b, a *mat.Dense) (*mat.Dense, *mat.Dense, error) {
	out, r := b.Dims()
	r2, in := a.Dims()
	if r != r2 {
		panic(fmt.Sprintf("lorasuite: Refactor of b %d x %d and a %d x %d", out, r, r2, in))
	}
	if out < r || in < r {
		return refactorDense(b, a)
	}
	qb, rb := linalg.QR(b)
	qa, ra := linalg.QR(a.T())
	var core mat.Dense
	core.Mul(rb, ra.T())
	u, s, vt, err := linalg.SVD(&core)
	if err != nil {
		return nil, nil, fmt.Errorf("lorasuite: re-factorising rank-%d delta: %w", r, err)
	}
	scaleCols(u, s)
	scaleRows(vt, s)
	nb := mat.NewDense(out, r, nil)
	nb.Mul(qb, u)
	na := mat.NewDense(r, in, nil)
	na.Mul(vt, qa.T())
	return nb, na, nil
}

// refactorDense handles out < r or in < r via the SVD of the dense product.
func refactorDense(b, a *mat.Dense) (*mat.Dense, *mat.Dense, error) {
	out, r := b.Dims()
	_, in := a.Dims()
	var dw mat.Dense
	dw.Mul(b, a)
	u, s, vt, err := linalg.SVD(&dw)
	if err != nil {
		return nil, nil, fmt.Errorf("lorasuite: re-factorising %d x %d delta: %w", out, in, err)
	}
	k := len(s)
	scaleCols(u, s)
	scaleRows(vt, s)
	nb := mat.NewDense(out, r, nil)
	na := mat.NewDense(r, in, nil)
	if k > 0 {
		nb.Slice(0, out, 0, k).(*mat.Dense).Copy(u)
		na.Slice(0, k, 0, in).(*mat.Dense).Copy(vt)
	}
	return nb, na, nil
}

// scaleCols multiplies column j of m by sqrt(s[j]).
func scaleCols(m *mat.Dense, s []float64) {
	rows, _ := m.Dims()
	for j, v := range s {
		f := math.Sqrt(v)
		for i := 0; i < rows; i++ {
			m.Set(i, j, m.At(i, j)*f)
		}
	}
}

// scaleRows multiplies row i of m by sqrt(s[i]).
func scaleRows(m *mat.Dense, s []float64) {
	for i, v := range s {
		row := m.RawRowView(i)
		f := math.Sqrt(v)
		for j := range row {
			row[j] *= f
		}
	}
}
