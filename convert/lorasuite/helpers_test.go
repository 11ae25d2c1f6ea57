package lorasuite

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/linalg"
)

// Test-only builders for small planted models. Shapes follow the package
// conventions: weights out x in, row-major.

func randMat(rng *rand.Rand, r, c int) *mat.Dense {
	d := make([]float64, r*c)
	for i := range d {
		d[i] = rng.NormFloat64()
	}
	return mat.NewDense(r, c, d)
}

// randOrthoRows returns a k x n matrix (k <= n) with orthonormal rows.
func randOrthoRows(rng *rand.Rand, k, n int) *mat.Dense {
	q, _ := linalg.QR(randMat(rng, n, k))
	return mat.DenseCopyOf(q.T())
}

// randInvertible returns a well-conditioned h x h matrix: I + 0.3 G / sqrt(h).
func randInvertible(rng *rand.Rand, h int) *mat.Dense {
	g := randMat(rng, h, h)
	g.Scale(0.3/float64(h), g)
	for i := 0; i < h; i++ {
		g.Set(i, i, g.At(i, i)+1)
	}
	return g
}

// layer64 is a layer in float64 with the same layout as LayerWeights.
type layer64 struct{ Q, K, V, O *mat.Dense }

func (l *layer64) weights() *LayerWeights {
	return &LayerWeights{Q: linalg.Float32(l.Q), K: linalg.Float32(l.K), V: linalg.Float32(l.V), O: linalg.Float32(l.O)}
}

// memSource serves layers from memory and records the order of requests.
type memSource struct {
	layers []*LayerWeights
	asked  []int
}

func (m *memSource) Layer(_ context.Context, i int) (*LayerWeights, error) {
	m.asked = append(m.asked, i)
	if i < 0 || i >= len(m.layers) {
		return nil, fmt.Errorf("memSource: no layer %d", i)
	}
	return m.layers[i], nil
}

func sourceOf(ls []*layer64) *memSource {
	s := &memSource{}
	for _, l := range ls {
		s.layers = append(s.layers, l.weights())
	}
	return s
}

// rowBlock returns rows [i*h, (i+1)*h) of m as a copy.
func rowBlock(m *mat.Dense, i, h int) *mat.Dense {
	_, c := m.Dims()
	return mat.DenseCopyOf(m.Slice(i*h, (i+1)*h, 0, c))
}

// colBlock returns columns [i*h, (i+1)*h) of m as a copy.
func colBlock(m *mat.Dense, i, h int) *mat.Dense {
	r, _ := m.Dims()
	return mat.DenseCopyOf(m.Slice(0, r, i*h, (i+1)*h))
}

func setRowBlock(dst *mat.Dense, i, h int, src mat.Matrix) {
	_, c := dst.Dims()
	dst.Slice(i*h, (i+1)*h, 0, c).(*mat.Dense).Copy(src)
}

func setColBlock(dst *mat.Dense, i, h int, src mat.Matrix) {
	r, _ := dst.Dims()
	dst.Slice(0, r, i*h, (i+1)*h).(*mat.Dense).Copy(src)
}

func mul(a, b mat.Matrix) *mat.Dense {
	var c mat.Dense
	c.Mul(a, b)
	return &c
}

func inverse(t *testing.T, a *mat.Dense) *mat.Dense {
	t.Helper()
	var inv mat.Dense
	if err := inv.Inverse(a); err != nil {
		t.Fatalf("inverse: %v", err)
	}
	return &inv
}

// relErr returns ||got - want||_F / ||want||_F.
func relErr(got, want mat.Matrix) float64 {
	var d mat.Dense
	d.Sub(got, want)
	return mat.Norm(&d, 2) / mat.Norm(want, 2)
}

// randModule returns a random rank-r module for role in a model with dims d.
func randModule(rng *rand.Rand, d Dims, layer int, role Role, r int) Module {
	out, in, err := moduleShape(role, d)
	if err != nil {
		panic(err)
	}
	return Module{Layer: layer, Role: role, R: r,
		A: linalg.Float32(randMat(rng, r, in)), B: linalg.Float32(randMat(rng, out, r))}
}

// delta returns the dense B A of a module (no scale: s is invariant).
func delta(m Module, d Dims) *mat.Dense {
	out, in, err := moduleShape(m.Role, d)
	if err != nil {
		panic(err)
	}
	return mul(linalg.Dense64(m.B, out, m.R), linalg.Dense64(m.A, m.R, in))
}

// embeddingsSource streams E_o and E_n = E_o P (+ noise) in chunks of 7 rows.
func embeddingsSource(eo, en *mat.Dense) RowSource {
	return func(ctx context.Context, emit func(old, new []float32) error) error {
		rows, _ := eo.Dims()
		for lo := 0; lo < rows; lo += 7 {
			hi := min(lo+7, rows)
			_, co := eo.Dims()
			_, cn := en.Dims()
			if err := emit(linalg.Float32(eo.Slice(lo, hi, 0, co)), linalg.Float32(en.Slice(lo, hi, 0, cn))); err != nil {
				return err
			}
		}
		return nil
	}
}

func mustSpectral(t *testing.T, m *mat.Dense) float64 {
	t.Helper()
	g, err := spectralNorm(m)
	if err != nil {
		t.Fatal(err)
	}
	return g
}
