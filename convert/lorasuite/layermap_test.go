package lorasuite

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// bruteLayerMap enumerates every strictly increasing map from the shallower
// model's layers into the deeper model's and returns the best total.
func bruteLayerMap(sim *mat.Dense) float64 {
	lo, ln := sim.Dims()
	n, m := min(lo, ln), max(lo, ln)
	c := func(i, j int) float64 {
		if lo <= ln {
			return sim.At(i, j)
		}
		return sim.At(j, i)
	}
	best := math.Inf(-1)
	var rec func(i, start int, acc float64)
	rec = func(i, start int, acc float64) {
		if i == n {
			best = max(best, acc)
			return
		}
		for j := start; j < m; j++ {
			rec(i+1, j+1, acc+c(i, j))
		}
	}
	rec(0, 0, 0)
	return best
}

func checkIncreasing(t *testing.T, pairs []LayerPair, lo, ln int) {
	t.Helper()
	if err := validateLayerMap(pairs, lo, ln); err != nil {
		t.Fatalf("%v: %v", pairs, err)
	}
	if len(pairs) != min(lo, ln) {
		t.Fatalf("%d pairs for %d -> %d layers", len(pairs), lo, ln)
	}
}

func TestDPLayerMapVsBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for trial := 0; trial < 300; trial++ {
		lo, ln := 1+rng.IntN(7), 1+rng.IntN(7)
		sim := mat.NewDense(lo, ln, nil)
		for i := 0; i < lo; i++ {
			for j := 0; j < ln; j++ {
				if trial%4 == 0 {
					sim.Set(i, j, float64(rng.IntN(2))) // ties
				} else {
					sim.Set(i, j, rng.Float64())
				}
			}
		}
		pairs, total, err := DPLayerMap(sim)
		if err != nil {
			t.Fatal(err)
		}
		checkIncreasing(t, pairs, lo, ln)
		sum := 0.0
		for _, p := range pairs {
			sum += sim.At(p.Old, p.New)
		}
		// Sums of <= 7 values in [0,1]: exact to a few ulps.
		if math.Abs(sum-total) > 1e-12 {
			t.Fatalf("trial %d: reported %g, pairs sum to %g", trial, total, sum)
		}
		if want := bruteLayerMap(sim); math.Abs(total-want) > 1e-12 {
			t.Fatalf("trial %d (%dx%d): DP total %g, brute force %g", trial, lo, ln, total, want)
		}
	}
}

// plantedSim builds a similarity matrix that is 1 on the planted pairs, and a
// seeded value in [0, 0.5) elsewhere, so the planted map is the unique optimum.
func plantedSim(rng *rand.Rand, lo, ln int, planted []LayerPair) *mat.Dense {
	sim := mat.NewDense(lo, ln, nil)
	for i := 0; i < lo; i++ {
		for j := 0; j < ln; j++ {
			sim.Set(i, j, 0.5*rng.Float64())
		}
	}
	for _, p := range planted {
		sim.Set(p.Old, p.New, 1)
	}
	return sim
}

func TestDPLayerMapRecoversPlanted(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	cases := []struct {
		name    string
		lo, ln  int
		planted []LayerPair
	}{
		// New model with layers inserted at 1, 4 and 5.
		{"inserted", 5, 8, []LayerPair{{0, 0}, {1, 2}, {2, 3}, {3, 6}, {4, 7}}},
		// New model with old layers 2 and 5 removed.
		{"removed", 7, 5, []LayerPair{{0, 0}, {1, 1}, {3, 2}, {4, 3}, {6, 4}}},
		{"same depth", 4, 4, []LayerPair{{0, 0}, {1, 1}, {2, 2}, {3, 3}}},
	}
	for _, tc := range cases {
		sim := plantedSim(rng, tc.lo, tc.ln, tc.planted)
		got, _, err := DPLayerMap(sim)
		if err != nil {
			t.Fatal(err)
		}
		for i := range tc.planted {
			if got[i] != tc.planted[i] {
				t.Fatalf("%s: DP map %v, planted %v", tc.name, got, tc.planted)
			}
		}
	}
}

func TestLinearLayerMap(t *testing.T) {
	cases := []struct {
		lo, ln int
		want   []LayerPair
	}{
		{3, 3, []LayerPair{{0, 0}, {1, 1}, {2, 2}}},
		// 24 -> 36 style: 3 -> 5 goes 0, 2, 4.
		{3, 5, []LayerPair{{0, 0}, {1, 2}, {2, 4}}},
		// Shallower new model: new layer i takes old layer round(i*4/2).
		{5, 3, []LayerPair{{0, 0}, {2, 1}, {4, 2}}},
		{1, 4, []LayerPair{{0, 0}}},
		// 4 -> 6: 0, 5/3=1.67->2, 3.33->3, 5.
		{4, 6, []LayerPair{{0, 0}, {1, 2}, {2, 3}, {3, 5}}},
	}
	for _, tc := range cases {
		got, err := LinearLayerMap(tc.lo, tc.ln)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(tc.want) {
			t.Fatalf("%d->%d: %v, want %v", tc.lo, tc.ln, got, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Fatalf("%d->%d: %v, want %v", tc.lo, tc.ln, got, tc.want)
			}
		}
	}
	for lo := 1; lo < 40; lo += 3 {
		for ln := 1; ln < 40; ln += 5 {
			got, err := LinearLayerMap(lo, ln)
			if err != nil {
				t.Fatal(err)
			}
			checkIncreasing(t, got, lo, ln)
		}
	}
	if _, err := LinearLayerMap(0, 3); err == nil {
		t.Fatal("zero layers: want an error")
	}
}

func TestExplicitLayerMap(t *testing.T) {
	got, err := ExplicitLayerMap(3, 5, []int{0, 3, 4})
	if err != nil || got[1] != (LayerPair{1, 3}) {
		t.Fatalf("valid map: %v %v", got, err)
	}
	got, err = ExplicitLayerMap(5, 3, []int{1, 2, 4})
	if err != nil || got[0] != (LayerPair{1, 0}) || got[2] != (LayerPair{4, 2}) {
		t.Fatalf("shallower new model: %v %v", got, err)
	}
	bad := []struct {
		lo, ln  int
		targets []int
		msg     string
	}{
		{3, 5, []int{0, 1}, "2 entries, want 3"},
		{3, 5, []int{0, 5, 6}, "out of range"},
		{3, 5, []int{0, 2, 2}, "not strictly increasing"},
		{3, 5, []int{-1, 2, 3}, "out of range"},
		{5, 3, []int{0, 1, 2, 3, 4}, "shallower new model"},
	}
	for _, b := range bad {
		_, err := ExplicitLayerMap(b.lo, b.ln, b.targets)
		if err == nil || !strings.Contains(err.Error(), b.msg) {
			t.Errorf("ExplicitLayerMap(%d, %d, %v) err = %v, want one containing %q", b.lo, b.ln, b.targets, err, b.msg)
		}
	}
}
