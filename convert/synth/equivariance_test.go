package synth

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/forward"
	"github.com/lorasync/lorasync/convert/safetensors"
)

// TestUpgradeIsFunctionPreserving runs the real forward pass on an old model
// and on a wider, rotated, head-permuted upgrade of it with the same depth and
// KV heads: every carried layer must produce the old hidden state carried by
// P (h_new = h_old P), which is what makes the planted truth a truth.
func TestUpgradeIsFunctionPreserving(t *testing.T) {
	spec := Spec{ModelType: "qwen2", Hidden: 32, Layers: 2, Heads: 4, KVHeads: 2, Intermediate: 40, Vocab: 300, DType: safetensors.F32}
	old, err := Random(spec, 5)
	if err != nil {
		t.Fatal(err)
	}
	nm, tr, err := Upgrade(old, UpgradeSpec{Hidden: 48, Intermediate: 56, Rotate: true, Seed: 6})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	states := map[string]map[string][]float32{}
	ids := []int{3, 17, 200, 42, 42, 7}
	newIDs := make([]int, len(ids))
	for i, id := range ids {
		newIDs[i] = tr.NewID[id]
	}
	for name, m := range map[string]*Model{"old": old, "new": nm} {
		if err := m.Write(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		fm, err := forward.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		seq := ids
		if name == "new" {
			seq = newIDs
		}
		states[name] = map[string][]float32{}
		err = fm.Walk(context.Background(), [][]int{seq}, forward.Options{}, func(stage string, s [][]float32) error {
			states[name][stage] = append([]float32(nil), s[0]...)
			return nil
		})
		fm.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Tolerance: float32 forward passes of width <= 56 agree to ~1e-6
	// relative; 1e-4 leaves room for the softmax and SiLU amplifying it.
	for _, stage := range []string{forward.Embeddings, forward.LayerName(0), forward.LayerName(1)} {
		o := mat.NewDense(len(ids), 32, f64(states["old"][stage]))
		var want mat.Dense
		want.Mul(o, tr.P)
		got := mat.NewDense(len(ids), 48, f64(states["new"][stage]))
		var d mat.Dense
		d.Sub(got, &want)
		if e := mat.Norm(&d, 2) / mat.Norm(&want, 2); e > 1e-4 || math.IsNaN(e) {
			t.Errorf("%s: new hidden state off old x P by %.2g relative", stage, e)
		}
	}
}
