package lorasuite

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// assignTol: totals are sums of at most 7 scores of magnitude <= 1; the
// optimum found by two different summation orders agrees to ~1e-15.
const assignTol = 1e-12

// bruteAssign enumerates every injective map from the smaller side to the
// larger and returns the maximum total.
func bruteAssign(s *mat.Dense) float64 {
	n, m := s.Dims()
	if n > m {
		var t mat.Dense
		t.CloneFrom(s.T())
		return bruteAssign(&t)
	}
	best := math.Inf(-1)
	used := make([]bool, m)
	var rec func(i int, acc float64)
	rec = func(i int, acc float64) {
		if i == n {
			best = max(best, acc)
			return
		}
		for j := 0; j < m; j++ {
			if !used[j] {
				used[j] = true
				rec(i+1, acc+s.At(i, j))
				used[j] = false
			}
		}
	}
	rec(0, 0)
	return best
}

func TestAssignVsBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for trial := 0; trial < 400; trial++ {
		n, m := 1+rng.IntN(6), 1+rng.IntN(6)
		s := mat.NewDense(n, m, nil)
		ties := trial%3 == 0 // small integer scores force many ties
		for i := 0; i < n; i++ {
			for j := 0; j < m; j++ {
				if ties {
					s.Set(i, j, float64(rng.IntN(3)))
				} else {
					s.Set(i, j, rng.Float64()*2-1)
				}
			}
		}
		got, total, err := Assign(s)
		if err != nil {
			t.Fatal(err)
		}
		// Structural checks: injective, right count, total matches the map.
		seen := map[int]bool{}
		assigned, sum := 0, 0.0
		for i, j := range got {
			if j < 0 {
				continue
			}
			if j >= m || seen[j] {
				t.Fatalf("trial %d: invalid assignment %v for %dx%d", trial, got, n, m)
			}
			seen[j] = true
			assigned++
			sum += s.At(i, j)
		}
		if assigned != min(n, m) {
			t.Fatalf("trial %d: %d rows assigned for %dx%d, want %d", trial, assigned, n, m, min(n, m))
		}
		if math.Abs(sum-total) > assignTol {
			t.Fatalf("trial %d: reported total %g, map sums to %g", trial, total, sum)
		}
		if want := bruteAssign(s); math.Abs(total-want) > assignTol {
			t.Fatalf("trial %d (%dx%d, ties=%v): total %g, brute force %g\n%v", trial, n, m, ties, total, want, mat.Formatted(s))
		}
	}
}

// A hand-worked 3x3 case where the greedy row-by-row choice is wrong:
// greedy takes (0,0)=9 then (1,1)=1, (2,2)=1 -> 11; the optimum is
// (0,1)+(1,0)+(2,2) = 8+8+1 = 17.
func TestAssignHandWorked(t *testing.T) {
	s := mat.NewDense(3, 3, []float64{
		9, 8, 0,
		8, 1, 0,
		0, 0, 1,
	})
	got, total, err := Assign(s)
	if err != nil {
		t.Fatal(err)
	}
	want := []int{1, 0, 2}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Assign = %v, want %v", got, want)
		}
	}
	if total != 17 {
		t.Fatalf("total = %g, want 17", total)
	}
}

func TestAssignEdgeCases(t *testing.T) {
	if got, total, err := Assign(&mat.Dense{}); err != nil || len(got) != 0 || total != 0 {
		t.Fatalf("empty: %v %g %v", got, total, err)
	}
	bad := mat.NewDense(2, 2, []float64{1, math.NaN(), 0, 1})
	if _, _, err := Assign(bad); err == nil {
		t.Fatal("NaN score: want an error")
	}
	// More rows than columns: the two best rows win column 0 and 1.
	tall := mat.NewDense(3, 2, []float64{0, 0, 5, 0, 0, 5})
	got, total, err := Assign(tall)
	if err != nil || got[0] != -1 || got[1] != 0 || got[2] != 1 || total != 10 {
		t.Fatalf("tall: %v %g %v, want [-1 0 1] 10", got, total, err)
	}
}
