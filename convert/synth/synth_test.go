package synth

import (
	"bytes"
	"math"
	"path/filepath"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/peft"
	"github.com/lorasync/lorasync/convert/safetensors"
	"github.com/lorasync/lorasync/convert/tokenizer"
)

var small = Spec{ModelType: "llama", Hidden: 32, Layers: 3, Heads: 4, KVHeads: 4, Intermediate: 48, Vocab: 400}

// bf16Tol: bf16 keeps 8 significant bits, so a round trip is exact to 2^-8 relative.
const bf16Tol = 1.0 / 256

func TestRandomModelReadsBack(t *testing.T) {
	m, err := Random(small, 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := m.Write(dir); err != nil {
		t.Fatal(err)
	}
	cfg, err := arch.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hidden != 32 || cfg.Layers != 3 || cfg.HeadDim != 8 || cfg.Vocab != 400 {
		t.Fatalf("config read back as %+v", cfg)
	}
	st, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := cfg.CheckWeights(st); err != nil {
		t.Fatal(err)
	}
	name := cfg.Weight(1, arch.Q)
	got, err := st.Float32(name)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range m.W[name] {
		if d := math.Abs(float64(got[i] - w)); d > bf16Tol*math.Abs(float64(w))+1e-30 {
			t.Fatalf("%s[%d] = %g, wrote %g", name, i, got[i], w)
		}
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range m.Vocab {
		got, ok := tok.TokenBytes(id)
		if !ok || !bytes.Equal(got, want) {
			t.Fatalf("token %d decodes to %q, generated %q", id, got, want)
		}
	}
	// The merges are well formed: a generated word encodes to its own token.
	word := string(m.Vocab[300])
	if ids := tok.Encode(word); len(ids) != 1 || ids[0] != 300 {
		t.Fatalf("Encode(%q) = %v, want [300]", word, ids)
	}
}

func TestUpgradePlantsTruth(t *testing.T) {
	old, err := Random(small, 2)
	if err != nil {
		t.Fatal(err)
	}
	nm, tr, err := Upgrade(old, UpgradeSpec{Hidden: 48, Layers: 5, KVHeads: 2, Intermediate: 64, ExtraVocab: 50, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	// P has orthonormal rows: P P^T = I.
	var ppt mat.Dense
	ppt.Mul(tr.P, tr.P.T())
	for i := 0; i < 32; i++ {
		for j := 0; j < 32; j++ {
			want := 0.0
			if i == j {
				want = 1
			}
			if math.Abs(ppt.At(i, j)-want) > 1e-12 {
				t.Fatalf("(P P^T)[%d,%d] = %g", i, j, ppt.At(i, j))
			}
		}
	}
	if len(tr.Layers) != 3 || tr.Layers[0].New != 0 || tr.Layers[2].New != 4 {
		t.Fatalf("layer placement %v", tr.Layers)
	}
	// Q_n[b] = Q_o[hm[b]] P, checked on one carried layer against a dense product.
	lp, hm := tr.Layers[1], tr.HeadMap[1]
	qo := mat.NewDense(32, 32, f64(old.W[old.Config.Weight(lp.Old, arch.Q)]))
	var want mat.Dense
	want.Mul(qo, tr.P)
	qn := nm.W[nm.Config.Weight(lp.New, arch.Q)]
	for b, a := range hm {
		for r := 0; r < 8; r++ {
			for c := 0; c < 48; c++ {
				if d := math.Abs(float64(qn[(b*8+r)*48+c]) - want.At(a*8+r, c)); d > 1e-5 {
					t.Fatalf("head %d <- %d: Q_n differs by %g", b, a, d)
				}
			}
		}
	}
	// The written tokenizers share exactly the old vocabulary, matched by bytes,
	// at the ids the upgrade planted (the special token never matches).
	dir := t.TempDir()
	if err := old.Write(filepath.Join(dir, "old")); err != nil {
		t.Fatal(err)
	}
	if err := nm.Write(filepath.Join(dir, "new")); err != nil {
		t.Fatal(err)
	}
	to, err := tokenizer.Load(filepath.Join(dir, "old", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	tn, err := tokenizer.Load(filepath.Join(dir, "new", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	oi, ni := tokenizer.SharedVocab(to, tn)
	if len(oi) != small.Vocab-1 {
		t.Fatalf("shared vocabulary %d tokens, want %d", len(oi), small.Vocab-1)
	}
	for k := range oi {
		if tr.NewID[oi[k]] != ni[k] {
			t.Fatalf("token %d matched to %d, planted at %d", oi[k], ni[k], tr.NewID[oi[k]])
		}
	}
}

func TestAdapterLoadsAndFitsItsBase(t *testing.T) {
	base, err := Random(small, 4)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "adapter")
	if _, err := WriteAdapter(dir, base.Config, "synth/base", AdapterSpec{R: 4, Seed: 5, Targets: []arch.Role{arch.Q, arch.V, arch.Down}}); err != nil {
		t.Fatal(err)
	}
	a, err := peft.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Check(base.Config); err != nil {
		t.Fatal(err)
	}
	if got := len(a.Modules); got != 3*3 {
		t.Fatalf("%d modules, want 9", got)
	}
	if a.Config.BaseModel != "synth/base" {
		t.Fatalf("base model %q", a.Config.BaseModel)
	}
}
