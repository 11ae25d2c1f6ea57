package lorasuite

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// LayerPair maps old layer Old to new layer New: the adapter modules of old
// layer Old are migrated into new layer New. A layer map is a []LayerPair with
// both Old and New strictly increasing. When the new model is deeper, new
// layers absent from the map get no LoRA; when it is shallower, old layers
// absent from the map are dropped (step 2).
type LayerPair struct {
	Old, New int
}

// LinearLayerMap maps the shallower model's n layers evenly onto the deeper
// model's m layers: shallower layer i goes to deeper layer round(i (m-1)/(n-1))
// (the first to the first, the last to the last; a single layer goes to layer
// 0). Equal depths give the identity map.
func LinearLayerMap(oldLayers, newLayers int) ([]LayerPair, error) {
	if oldLayers <= 0 || newLayers <= 0 {
		return nil, fmt.Errorf("lorasuite: linear layer map needs positive layer counts, got old %d, new %d", oldLayers, newLayers)
	}
	n, m := min(oldLayers, newLayers), max(oldLayers, newLayers)
	targets := make([]int, n)
	for i := range targets {
		if n > 1 {
			// The step (m-1)/(n-1) >= 1, so rounding keeps the sequence strictly increasing.
			targets[i] = int(math.Round(float64(i) * float64(m-1) / float64(n-1)))
		}
	}
	return pairsFromTargets(oldLayers, newLayers, targets), nil
}

// ExplicitLayerMap builds a layer map from a user's list: targets[i] is the
// layer of the DEEPER model that layer i of the shallower model maps to (with
// equal depths, targets[i] is the new layer of old layer i). targets must have
// exactly min(oldLayers, newLayers) entries, be strictly increasing and lie in
// [0, max(oldLayers, newLayers)).
func ExplicitLayerMap(oldLayers, newLayers int, targets []int) ([]LayerPair, error) {
	if oldLayers <= 0 || newLayers <= 0 {
		return nil, fmt.Errorf("lorasuite: explicit layer map needs positive layer counts, got old %d, new %d", oldLayers, newLayers)
	}
	n, m := min(oldLayers, newLayers), max(oldLayers, newLayers)
	side := "old"
	if newLayers < oldLayers {
		side = "new"
	}
	if len(targets) != n {
		return nil, fmt.Errorf("lorasuite: explicit layer map has %d entries, want %d (one per layer of the shallower %s model, %d -> %d layers)",
			len(targets), n, side, oldLayers, newLayers)
	}
	for i, t := range targets {
		if t < 0 || t >= m {
			return nil, fmt.Errorf("lorasuite: explicit layer map entry %d = %d is out of range [0, %d)", i, t, m)
		}
		if i > 0 && t <= targets[i-1] {
			return nil, fmt.Errorf("lorasuite: explicit layer map is not strictly increasing at entry %d (%d after %d)", i, t, targets[i-1])
		}
	}
	return pairsFromTargets(oldLayers, newLayers, targets), nil
}

// DPLayerMap finds the order-preserving layer map that MAXIMISES the summed
// similarity (step 2, reference max_layer_similarity_mapping). sim is
// L_old x L_new, larger meaning more similar (CKA, not the 1 - CKA distance).
// Every layer of the shallower model maps to a distinct layer of the deeper
// one, strictly increasing. It returns the map and its total similarity. Ties
// go to the lexicographically smallest target sequence. Cost O(L_old L_new).
func DPLayerMap(sim mat.Matrix) ([]LayerPair, float64, error) {
	lo, ln := sim.Dims()
	if d, ok := sim.(*mat.Dense); ok && d.IsEmpty() {
		lo, ln = 0, 0
	}
	if lo == 0 || ln == 0 {
		return nil, 0, fmt.Errorf("lorasuite: layer similarity matrix is empty (%d x %d)", lo, ln)
	}
	for i := 0; i < lo; i++ {
		for j := 0; j < ln; j++ {
			if v := sim.At(i, j); math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, 0, fmt.Errorf("lorasuite: layer similarity[%d,%d] = %v", i, j, v)
			}
		}
	}
	// c(i, j): similarity between shallower layer i and deeper layer j.
	n, m := lo, ln
	c := sim.At
	if ln < lo {
		n, m = ln, lo
		c = func(i, j int) float64 { return sim.At(j, i) }
	}
	// f[i][j]: best total for shallower layers 0..i with layer i mapped to j.
	// Layer i can only sit in [i, m-n+i] so the rest still fit.
	inf := math.Inf(-1)
	f := make([][]float64, n)
	from := make([][]int, n)
	for i := range f {
		f[i] = make([]float64, m)
		from[i] = make([]int, m)
		for j := range f[i] {
			f[i][j] = inf
		}
	}
	for j := 0; j <= m-n; j++ {
		f[0][j] = c(0, j)
	}
	for i := 1; i < n; i++ {
		bestPrev, bestJ := inf, -1
		for j := i; j <= m-n+i; j++ {
			// Extend the running maximum of f[i-1][0..j-1]; strict > keeps the
			// smallest predecessor on ties.
			if p := f[i-1][j-1]; p > bestPrev {
				bestPrev, bestJ = p, j-1
			}
			f[i][j] = bestPrev + c(i, j)
			from[i][j] = bestJ
		}
	}
	best, end := inf, -1
	for j := n - 1; j < m; j++ {
		if f[n-1][j] > best {
			best, end = f[n-1][j], j
		}
	}
	targets := make([]int, n)
	for i := n - 1; i >= 0; i-- {
		targets[i] = end
		end = from[i][end]
	}
	return pairsFromTargets(lo, ln, targets), best, nil
}

// pairsFromTargets turns "shallower layer i -> deeper layer targets[i]" into
// (old, new) pairs, sorted by Old (and so by New).
func pairsFromTargets(oldLayers, newLayers int, targets []int) []LayerPair {
	pairs := make([]LayerPair, len(targets))
	for i, t := range targets {
		if oldLayers <= newLayers {
			pairs[i] = LayerPair{Old: i, New: t}
		} else {
			pairs[i] = LayerPair{Old: t, New: i}
		}
	}
	return pairs
}

// validateLayerMap checks a map given by a caller against the layer counts.
func validateLayerMap(pairs []LayerPair, oldLayers, newLayers int) error {
	if len(pairs) == 0 {
		return fmt.Errorf("lorasuite: layer map is empty")
	}
	for i, p := range pairs {
		if p.Old < 0 || p.Old >= oldLayers || p.New < 0 || p.New >= newLayers {
			return fmt.Errorf("lorasuite: layer pair %d (%d -> %d) out of range (%d old, %d new layers)", i, p.Old, p.New, oldLayers, newLayers)
		}
		if i > 0 && (p.Old <= pairs[i-1].Old || p.New <= pairs[i-1].New) {
			return fmt.Errorf("lorasuite: layer map not strictly increasing at pair %d (%d -> %d after %d -> %d)", i, p.Old, p.New, pairs[i-1].Old, pairs[i-1].New)
		}
	}
	return nil
}
