package lorasuite_test

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/lorasync/lorasync/convert/lorasuite"
)

// layers serves whole layers from memory; a real caller reads one layer at a
// time from mmap'ed safetensors and converts bf16 to float32.
type layers []*lorasuite.LayerWeights

func (l layers) Layer(_ context.Context, i int) (*lorasuite.LayerWeights, error) { return l[i], nil }

func randSlice(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// The two phases: Analyze once per (old, new) base pair, then Project each
// adapter. Here the "new" model is the old one with its 4 heads reordered, so
// the analysis finds the permutation and the migrated q_proj delta is the old
// one with its head blocks reordered.
func Example() {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	d := lorasuite.Dims{Hidden: 8, Layers: 1, Heads: 4, KVHeads: 4, HeadDim: 2}
	old := &lorasuite.LayerWeights{Q: randSlice(rng, 8*8), K: randSlice(rng, 8*8), V: randSlice(rng, 8*8), O: randSlice(rng, 8*8)}
	perm := []int{2, 0, 3, 1} // new head b is old head perm[b]
	nw := &lorasuite.LayerWeights{Q: make([]float32, 64), K: make([]float32, 64), V: make([]float32, 64), O: make([]float32, 64)}
	for b, a := range perm {
		copy(nw.Q[b*16:(b+1)*16], old.Q[a*16:(a+1)*16]) // rows of head b: 2 rows x 8
		copy(nw.K[b*16:(b+1)*16], old.K[a*16:(a+1)*16])
		copy(nw.V[b*16:(b+1)*16], old.V[a*16:(a+1)*16])
		for row := 0; row < 8; row++ { // o_proj columns of head b
			copy(nw.O[row*8+b*2:row*8+b*2+2], old.O[row*8+a*2:row*8+a*2+2])
		}
	}
	layerMap, _ := lorasuite.LinearLayerMap(1, 1)
	pa, err := lorasuite.Analyze(ctx, d, d, lorasuite.IdentityTransfer(8), layerMap,
		layers{old}, layers{nw}, lorasuite.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("head map:", pa.Layers[0].HeadMap)

	q := lorasuite.Module{Layer: 0, Role: lorasuite.RoleQ, R: 2, A: randSlice(rng, 2*8), B: randSlice(rng, 8*2)}
	res, err := lorasuite.Project(ctx, pa, []lorasuite.Module{q}, lorasuite.ProjectOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	m := res.Modules[0]
	fmt.Printf("migrated %s of new layer %d, rank %d: A %d values, B %d values\n", m.Role, m.Layer, m.R, len(m.A), len(m.B))
	// Output:
	// head map: [2 0 3 1]
	// migrated q_proj of new layer 0, rank 2: A 16 values, B 16 values
}
