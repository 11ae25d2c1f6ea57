package synth

import (
	"fmt"
	"math"
	"strings"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/linalg"
	"github.com/lorasync/lorasync/convert/lorasuite"
)

// UpgradeSpec says how a new base differs from the old one. Zero values keep
// the old model's value. Heads and HeadDim never change (a head is carried
// whole); Hidden, Layers and Intermediate may only grow or stay, except
// Layers, which may also shrink (layers removed).
type UpgradeSpec struct {
	ModelType    string
	Hidden       int
	Layers       int
	KVHeads      int // must divide Heads; fewer than the old model's is MHA -> GQA
	Intermediate int
	ExtraVocab   int // new tokens appended after the old ones
	// Rotate carries a same-width model through a random orthogonal P instead
	// of the identity.
	Rotate bool
	// EmbedNoise is the std of noise added to carried embedding rows (0: exact).
	EmbedNoise float64
	// RandomLayers places the old layers at random increasing new positions
	// instead of the evenly spaced ones of lorasuite.LinearLayerMap.
	RandomLayers bool
	Seed         uint64
}

// Truth is what Upgrade planted.
type Truth struct {
	// P is d_o x d_n with orthonormal rows: an old hidden row x maps to x P.
	P *mat.Dense
	// Layers pairs each carried old layer with the new layer it became,
	// strictly increasing on both sides (the shape of lorasuite layer maps).
	Layers []lorasuite.LayerPair
	// HeadMap[i][b] is the old attention head that new head b of new layer
	// Layers[i].New carries.
	HeadMap [][]int
	// NewID[old id] is the token's id in the new vocabulary.
	NewID []int
}

// Upgrade derives a new model from old with a planted truth. Within each
// carried layer: Q_n[b] = Q_o[HeadMap[b]] P, O_n[:, b] = P^T O_o[:, HeadMap[b]],
// K_n/V_n[g] = the mean over the old KV heads feeding new group g, times P
// (exact when the KV head count is unchanged), MLP gate/up = [W_o P; new rows],
// down = [P^T W_o, 0]. Layers not carried are small random blocks.
// RMSNorm weights over the hidden size become sqrt(d_o/d_n) times the old
// mean weight, so that RMSNorm(x P) = RMSNorm_old(x) P whenever the old
// weights are constant (as Random makes them): carried layers then compute
// exactly what the old ones did, in the rotated space.
// Embedding rows move to their new ids: E_n[NewID[t]] = E_o[t] P (+ noise).
func Upgrade(old *Model, up UpgradeSpec) (*Model, *Truth, error) {
	op := old.Spec
	ns := op
	if up.ModelType != "" {
		ns.ModelType = up.ModelType
	}
	for _, f := range []struct {
		dst *int
		v   int
	}{{&ns.Hidden, up.Hidden}, {&ns.Layers, up.Layers}, {&ns.KVHeads, up.KVHeads}, {&ns.Intermediate, up.Intermediate}} {
		if f.v != 0 {
			*f.dst = f.v
		}
	}
	ns.Vocab = op.Vocab + up.ExtraVocab
	switch {
	case ns.Hidden < op.Hidden:
		return nil, nil, fmt.Errorf("synth: upgrade narrows hidden %d -> %d", op.Hidden, ns.Hidden)
	case ns.Intermediate < op.Intermediate:
		return nil, nil, fmt.Errorf("synth: upgrade narrows intermediate %d -> %d", op.Intermediate, ns.Intermediate)
	case ns.Heads%ns.KVHeads != 0:
		return nil, nil, fmt.Errorf("synth: %d heads not divisible by %d KV heads", ns.Heads, ns.KVHeads)
	}
	if old.Vocab == nil && up.ExtraVocab != 0 {
		return nil, nil, fmt.Errorf("synth: the old model has no tokenizer, so the upgrade cannot extend its vocabulary")
	}
	cfg, err := ns.Config()
	if err != nil {
		return nil, nil, err
	}
	rng := newRNG(up.Seed)
	nm := &Model{Spec: ns, Config: cfg, W: map[string][]float32{}}
	// Start from small random weights everywhere; carried tensors overwrite.
	for _, t := range cfg.Tensors() {
		v := randomTensor(rng, t)
		if len(t.Shape) == 2 && !isEmbedding(cfg, t.Name) {
			scale(v, 0.1)
		}
		nm.W[t.Name] = v
	}
	tr := &Truth{P: orthonormalRows(rng, op.Hidden, ns.Hidden, up.Rotate)}
	if tr.Layers, err = layerPlacement(rng, op.Layers, ns.Layers, up.RandomLayers); err != nil {
		return nil, nil, err
	}
	scaleNorms(old, nm)
	tr.NewID = carryVocab(rng, old, nm, up.ExtraVocab)
	c := carrier{old: old, new: nm, p: tr.P}
	c.embeddings(tr.NewID, up.EmbedNoise, rng)
	for _, lp := range tr.Layers {
		hm := headPlacement(rng, ns.Heads, op.KVHeads, ns.KVHeads)
		tr.HeadMap = append(tr.HeadMap, hm)
		c.layer(lp.Old, lp.New, hm)
	}
	return nm, tr, nil
}

func isEmbedding(c *arch.Config, name string) bool {
	return name == c.Embed() || name == c.LMHead()
}

// orthonormalRows returns d_o x d_n with orthonormal rows: the transpose of the
// thin-QR Q of a Gaussian d_n x d_o matrix, or the identity when the widths
// agree and rotate is false.
func orthonormalRows(rng interface{ NormFloat64() float64 }, dOld, dNew int, rotate bool) *mat.Dense {
	if dOld == dNew && !rotate {
		p := mat.NewDense(dOld, dNew, nil)
		for i := 0; i < dOld; i++ {
			p.Set(i, i, 1)
		}
		return p
	}
	g := mat.NewDense(dNew, dOld, nil)
	for i := 0; i < dNew; i++ {
		for j := 0; j < dOld; j++ {
			g.Set(i, j, rng.NormFloat64())
		}
	}
	q, _ := linalg.QR(g)
	return mat.DenseCopyOf(q.T())
}

// layerPlacement pairs old and new layers: the evenly spaced map of
// lorasuite.LinearLayerMap, or a random strictly increasing one.
func layerPlacement(rng interface{ Perm(int) []int }, lOld, lNew int, random bool) ([]lorasuite.LayerPair, error) {
	if !random {
		return lorasuite.LinearLayerMap(lOld, lNew)
	}
	short, long := min(lOld, lNew), max(lOld, lNew)
	picked := make([]bool, long)
	for _, j := range rng.Perm(long)[:short] {
		picked[j] = true
	}
	var targets []int
	for j, ok := range picked {
		if ok {
			targets = append(targets, j)
		}
	}
	return lorasuite.ExplicitLayerMap(lOld, lNew, targets)
}

// headPlacement returns hm[b] = the old head new head b carries. Query heads
// stay in groups of H/G_n: with an unchanged KV head count whole groups are
// permuted and heads permuted inside each; otherwise heads move only inside
// their new group.
func headPlacement(rng interface{ Perm(int) []int }, heads, kvOld, kvNew int) []int {
	per := heads / kvNew
	groups := make([]int, kvNew)
	for g := range groups {
		groups[g] = g
	}
	if kvOld == kvNew {
		groups = rng.Perm(kvNew)
	}
	hm := make([]int, heads)
	for g, src := range groups {
		for k, in := range rng.Perm(per) {
			hm[g*per+k] = src*per + in
		}
	}
	return hm
}

func scale(v []float32, s float32) {
	for i := range v {
		v[i] *= s
	}
}

// scaleNorms sets every hidden-size RMSNorm weight of nm to sqrt(d_o/d_n)
// times the mean of old's, which keeps RMSNorm equivariant under P (RMS over
// d_n of x P is sqrt(d_o/d_n) times the RMS over d_o of x).
func scaleNorms(old, nm *Model) {
	var sum float64
	var n int
	for _, t := range old.Config.Tensors() {
		if isHiddenNorm(old.Config, t) {
			for _, v := range old.W[t.Name] {
				sum += float64(v)
				n++
			}
		}
	}
	w := float32(sum / float64(n) * math.Sqrt(float64(old.Config.Hidden)/float64(nm.Config.Hidden)))
	for _, t := range nm.Config.Tensors() {
		if isHiddenNorm(nm.Config, t) {
			for i := range nm.W[t.Name] {
				nm.W[t.Name][i] = w
			}
		}
	}
}

func isHiddenNorm(c *arch.Config, t arch.TensorSpec) bool {
	return len(t.Shape) == 1 && t.Shape[0] == c.Hidden && strings.Contains(t.Name, "norm")
}
