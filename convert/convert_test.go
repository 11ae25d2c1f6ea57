package convert

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/lorasuite"
	"github.com/lorasync/lorasync/convert/peft"
	"github.com/lorasync/lorasync/convert/safetensors"
	"github.com/lorasync/lorasync/convert/synth"
)

// exactTol: models and adapters are stored in F32 here, so a planted truth is
// recovered up to float32 rounding through a few products of width <= 64
// (~1e-7 each) and the 1e-5 of the acceptance criteria holds with margin.
const exactTol = 1e-5

var oldSpec = synth.Spec{ModelType: "llama", Hidden: 32, Layers: 3, Heads: 4, Intermediate: 48, Vocab: 600, DType: safetensors.F32}

// fixture writes an old base, a planted upgrade of it and an adapter on the old base.
func fixture(t *testing.T, up synth.UpgradeSpec) (dir string, old, nw *synth.Model, truth *synth.Truth) {
	t.Helper()
	dir = t.TempDir()
	old, err := synth.Random(oldSpec, 11)
	if err != nil {
		t.Fatal(err)
	}
	nw, truth, err = synth.Upgrade(old, up)
	if err != nil {
		t.Fatal(err)
	}
	for name, m := range map[string]*synth.Model{"old": old, "new": nw} {
		if err := m.Write(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := synth.WriteAdapter(filepath.Join(dir, "adapter"), old.Config, "synth/old", synth.AdapterSpec{R: 4, Seed: 12}); err != nil {
		t.Fatal(err)
	}
	return dir, old, nw, truth
}

func opts(dir string) Options {
	return Options{
		OldBase: filepath.Join(dir, "old"), NewBase: filepath.Join(dir, "new"),
		Adapter: filepath.Join(dir, "adapter"), Out: filepath.Join(dir, "out"),
		CacheDir: filepath.Join(dir, "cache"), NewBaseName: "synth/new",
		LayerMap: LayerMapLinear, // the planted placement; cka has its own tests
	}
}

// delta returns a module's dense dW = s B A (out x in).
func delta(m *peft.Module) *mat.Dense {
	var d mat.Dense
	d.Mul(mat.NewDense(m.Out, m.R, f64(m.B)), mat.NewDense(m.R, m.In, f64(m.A)))
	d.Scale(m.Scale(), &d)
	return &d
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func relErr(got, want mat.Matrix) float64 {
	var d mat.Dense
	d.Sub(got, want)
	return mat.Norm(&d, 2) / mat.Norm(want, 2)
}

func modulesByKey(a *peft.Adapter) map[string]*peft.Module {
	m := map[string]*peft.Module{}
	for _, x := range a.Modules {
		m[x.Key] = x
	}
	return m
}

// plantedDelta carries an old module's dW to the new model the way the
// upgrade carried the base weights: q/k/v rows of head hm[b] then x P; o
// columns of head hm[b] after P^T x.
func plantedDelta(role arch.Role, dOld *mat.Dense, hm []int, headDim int, p *mat.Dense, kvPer int) *mat.Dense {
	_, dn := p.Dims()
	switch role {
	case arch.O:
		var left mat.Dense
		left.Mul(p.T(), dOld) // d_n x (H h)
		out := mat.NewDense(dn, len(hm)*headDim, nil)
		for b, a := range hm {
			out.Slice(0, dn, b*headDim, (b+1)*headDim).(*mat.Dense).Copy(left.Slice(0, dn, a*headDim, (a+1)*headDim))
		}
		return out
	default:
		var right mat.Dense
		right.Mul(dOld, p) // rows x d_n
		src := hm
		if role != arch.Q { // KV heads: new group g takes old KV head hm[g*per]/per
			src = nil
			for g := 0; g < len(hm)/kvPer; g++ {
				src = append(src, hm[g*kvPer]/kvPer)
			}
		}
		out := mat.NewDense(len(src)*headDim, dn, nil)
		for b, a := range src {
			out.Slice(b*headDim, (b+1)*headDim, 0, dn).(*mat.Dense).Copy(right.Slice(a*headDim, (a+1)*headDim, 0, dn))
		}
		return out
	}
}

func TestPlantedUpgradeRecovered(t *testing.T) {
	dir, old, nw, truth := fixture(t, synth.UpgradeSpec{Hidden: 48, Layers: 5, Intermediate: 64, ExtraVocab: 40, Seed: 13})
	res, err := Convert(context.Background(), opts(dir))
	if err != nil {
		t.Fatal(err)
	}
	p := res.Provenance
	if p.Vocabulary.Method != VocabBytes || p.Vocabulary.SharedTokens != oldSpec.Vocab-1 {
		t.Fatalf("vocabulary %+v, want %d tokens matched by bytes", p.Vocabulary, oldSpec.Vocab-1)
	}
	if r := float64(p.Transfer.Residual); !(r < 1e-5) {
		t.Fatalf("transfer residual %g: W_x = P should fit exactly", r)
	}
	if !slices.Equal(p.LayerMap, truth.Layers) {
		t.Fatalf("layer map %v, planted %v", p.LayerMap, truth.Layers)
	}
	for i, h := range p.Heads {
		if !slices.Equal(h.HeadMap, truth.HeadMap[i]) {
			t.Fatalf("layer %d -> %d: head map %v, planted %v", h.OldLayer, h.NewLayer, h.HeadMap, truth.HeadMap[i])
		}
	}
	// The fit residuals come from float32 products (lorasuite: accurate to
	// ~3e-4), so "~0" means below 1e-3.
	if !p.Lineage.Related || p.Lineage.MeanResidual > 1e-3 {
		t.Fatalf("lineage %+v: a planted upgrade is one lineage with ~0 fit residual", p.Lineage)
	}
	in, err := peft.Load(filepath.Join(dir, "adapter"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := peft.Load(res.Out)
	if err != nil {
		t.Fatal(err)
	}
	if out.Config.BaseModel != "synth/new" {
		t.Fatalf("base_model_name_or_path %q", out.Config.BaseModel)
	}
	got := modulesByKey(out)
	for _, m := range in.Modules {
		li := slices.IndexFunc(truth.Layers, func(lp lorasuite.LayerPair) bool { return lp.Old == m.Layer })
		lp := truth.Layers[li]
		nm := got[nw.Config.Module(lp.New, m.Role)]
		if nm == nil {
			t.Fatalf("%s: no migrated module in new layer %d", m.Key, lp.New)
		}
		want := plantedDelta(m.Role, delta(m), truth.HeadMap[li], old.Config.HeadDim, truth.P, 1)
		if e := relErr(delta(nm), want); e > exactTol {
			t.Errorf("%s -> %s: dW off the planted truth by %.2g relative", m.Key, nm.Key, e)
		}
	}
	// The card and provenance are written beside the weights.
	card, err := os.ReadFile(filepath.Join(res.Out, "README.md"))
	if err != nil || !strings.Contains(string(card), "base_model: synth/new") {
		t.Fatalf("model card: %v\n%s", err, card)
	}
	if _, err := os.Stat(filepath.Join(res.Out, "lorasync.json")); err != nil {
		t.Fatal(err)
	}
}
