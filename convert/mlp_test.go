package convert

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/peft"
	"github.com/lorasync/lorasync/convert/synth"
)

// TestMLPModulesCarried migrates gate/up/down modules across a wider, deeper
// planted upgrade. The paper's MLP formulas (step 4) are exact for the part of
// B (gate/up) in the range of the old base weight and of A (down) in its row
// space, so the adapter is built that way; the carried neurons (the first
// I_o rows of gate/up, columns of down) must then equal the planted truth
// dW P (gate/up) and P^T dW (down). New neurons receive whatever the formula
// gives them and are not checked.
func TestMLPModulesCarried(t *testing.T) {
	dir, old, nw, truth := fixture(t, synth.UpgradeSpec{Hidden: 48, Layers: 4, Intermediate: 64, ExtraVocab: 5, Seed: 31})
	ad, err := synth.RandomAdapter(old.Config, synth.AdapterSpec{R: 3, Seed: 32, Targets: []arch.Role{arch.Gate, arch.Up, arch.Down, arch.Q}})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	d, io := old.Config.Hidden, old.Config.Intermediate
	for _, m := range ad.Modules {
		switch m.Role {
		case arch.Gate, arch.Up: // B = W_o C, C: d x r
			w := mat.NewDense(io, d, f64(old.W[old.Config.Weight(m.Layer, m.Role)]))
			var b mat.Dense
			b.Mul(w, randDense(rng, d, m.R))
			m.B = f32(b.RawMatrix().Data)
		case arch.Down: // A = C W_o, C: r x d
			w := mat.NewDense(d, io, f64(old.W[old.Config.Weight(m.Layer, m.Role)]))
			var a mat.Dense
			a.Mul(randDense(rng, m.R, d), w)
			m.A = f32(a.RawMatrix().Data)
		}
	}
	adDir := filepath.Join(dir, "adapter-mlp")
	if err := peft.Write(adDir, ad, peft.WriteOptions{BaseModel: "synth/old", Provenance: map[string]string{"test": "mlp"}}); err != nil {
		t.Fatal(err)
	}
	o := opts(dir)
	o.Adapter = adDir
	res, err := Convert(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Provenance.Modules.Migrated != len(ad.Modules) {
		t.Fatalf("%d of %d modules migrated", res.Provenance.Modules.Migrated, len(ad.Modules))
	}
	out, err := peft.Load(res.Out)
	if err != nil {
		t.Fatal(err)
	}
	got := modulesByKey(out)
	for _, lp := range truth.Layers {
		for _, role := range []arch.Role{arch.Gate, arch.Up, arch.Down} {
			src := modulesByKey(ad)[old.Config.Module(lp.Old, role)]
			mig := got[nw.Config.Module(lp.New, role)]
			dOld, dNew := delta(src), delta(mig)
			var want, carried mat.Dense
			if role == arch.Down {
				want.Mul(truth.P.T(), dOld)
				carried.CloneFrom(dNew.Slice(0, nw.Config.Hidden, 0, io))
			} else {
				want.Mul(dOld, truth.P)
				carried.CloneFrom(dNew.Slice(0, io, 0, nw.Config.Hidden))
			}
			if e := relErr(&carried, &want); e > exactTol {
				t.Errorf("layer %d -> %d %s: carried neurons off the planted truth by %.2g", lp.Old, lp.New, role, e)
			}
		}
	}
}

func randDense(rng *rand.Rand, r, c int) *mat.Dense {
	m := mat.NewDense(r, c, nil)
	for i := 0; i < r; i++ {
		for j := 0; j < c; j++ {
			m.Set(i, j, rng.NormFloat64())
		}
	}
	return m
}

func f32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}
