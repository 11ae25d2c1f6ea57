package forward

import (
	"math"
	"testing"
)

// ulpDiff is the distance between two finite float32s of the same sign in
// units in the last place (adjacent floats differ by 1).
func ulpDiff(a, b float32) int64 {
	d := int64(math.Float32bits(a)) - int64(math.Float32bits(b))
	if d < 0 {
		d = -d
	}
	return d
}

// TestExp32 compares exp32 with float64 math.Exp rounded to float32 on a
// dense sweep of float32 bit patterns (every 61st: about 35 million inputs,
// both signs, from tiny magnitudes to the overflow and underflow limits),
// plus the special values.
func TestExp32(t *testing.T) {
	const maxULP = 2 // the polynomial's error plus the rounding of its steps
	worst, worstX := int64(0), float32(0)
	for _, sign := range []uint32{0, 1 << 31} {
		for bits := uint32(0); bits < 0x7f800000; bits += 61 {
			x := math.Float32frombits(sign | bits)
			if x > expHi || x < expLo {
				continue
			}
			want := float32(math.Exp(float64(x)))
			got := exp32(x)
			if want < math.SmallestNonzeroFloat32*(1<<24) {
				// Subnormal results: ulps are absolute, check that instead.
				if math.Abs(float64(got-want)) > 2*math.SmallestNonzeroFloat32 {
					t.Fatalf("exp32(%g) = %g, want %g (subnormal)", x, got, want)
				}
				continue
			}
			if d := ulpDiff(got, want); d > worst {
				worst, worstX = d, x
			}
		}
	}
	t.Logf("worst error %d ulp at x = %g", worst, worstX)
	if worst > maxULP {
		t.Errorf("exp32 is %d ulp off at x = %g (exp32 %g, math.Exp %g), want <= %d", worst, worstX, exp32(worstX), math.Exp(float64(worstX)), maxULP)
	}
	inf := float32(math.Inf(1))
	for _, c := range []struct{ x, want float32 }{
		{0, 1}, {inf, inf}, {-inf, 0}, {100, inf}, {-200, 0}, {expHi + 0.01, inf},
	} {
		if got := exp32(c.x); got != c.want {
			t.Errorf("exp32(%g) = %g, want %g", c.x, got, c.want)
		}
	}
	if nan := float32(math.NaN()); !math.IsNaN(float64(exp32(nan))) {
		t.Error("exp32(NaN) is not NaN")
	}
}

// TestSiluMul checks the parallel SwiGLU product against float64 math on a
// vector long enough to be split over goroutines, including the limits.
func TestSiluMul(t *testing.T) {
	n := 3*minParallelElems + 7
	gate := make([]float32, n)
	up := make([]float32, n)
	for i := range gate {
		gate[i] = float32(i%2001-1000) / 25 // -40 .. 40
		up[i] = float32(i%7) - 3
	}
	gate[0], gate[1], gate[2] = 200, -200, -89 // e^89 overflows float32: silu is -0
	want := make([]float64, n)
	for i, g := range gate {
		want[i] = float64(g) / (1 + math.Exp(-float64(g))) * float64(up[i])
	}
	siluMul(gate, up)
	const tol = 1e-6 // a few float32 roundings of an O(1)-relative quantity
	for i, g := range gate {
		w := want[i]
		if !(math.Abs(float64(g)-w) <= tol*math.Max(1, math.Abs(w))) { // NaN fails too
			t.Fatalf("siluMul[%d] (gate %g, up %g) = %g, want %g", i, float32(i%2001-1000)/25, up[i], g, w)
		}
	}
}
