package convert

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/lorasuite"
	"github.com/lorasync/lorasync/convert/peft"
	"github.com/lorasync/lorasync/convert/synth"
)

// checkAgainstTruth compares every migrated module of the given roles with
// the planted truth and returns the worst relative error; tol > 0 fails above it.
func checkAgainstTruth(t *testing.T, dir string, out string, old, nw *synth.Model, truth *synth.Truth, roles []arch.Role, tol float64) (worst float64) {
	t.Helper()
	in, err := peft.Load(filepath.Join(dir, "adapter"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := peft.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	got := modulesByKey(res)
	kvPer := nw.Config.Heads / nw.Config.KVHeads
	for _, m := range in.Modules {
		if !slices.Contains(roles, m.Role) {
			continue
		}
		li := slices.IndexFunc(truth.Layers, func(lp lorasuite.LayerPair) bool { return lp.Old == m.Layer })
		if li < 0 {
			if got[m.Key] != nil && nw.Config.Layers <= m.Layer {
				t.Errorf("%s: migrated although its layer is dropped", m.Key)
			}
			continue
		}
		nm := got[nw.Config.Module(truth.Layers[li].New, m.Role)]
		if nm == nil {
			t.Fatalf("%s: not migrated", m.Key)
		}
		want := plantedDelta(m.Role, delta(m), truth.HeadMap[li], old.Config.HeadDim, truth.P, kvPer)
		e := relErr(delta(nm), want)
		worst = max(worst, e)
		if tol > 0 && e > tol {
			t.Errorf("%s -> %s: dW off the planted truth by %.2g relative", m.Key, nm.Key, e)
		}
	}
	return worst
}

var attentionRoles = []arch.Role{arch.Q, arch.K, arch.V, arch.O}

func TestGramHeadTransferRecorded(t *testing.T) {
	dir, old, nw, truth := fixture(t, synth.UpgradeSpec{Hidden: 48, Layers: 5, Intermediate: 64, ExtraVocab: 40, Seed: 13})
	o := opts(dir)
	o.HeadTransfer = lorasuite.HeadGram
	if _, err := Convert(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	// Random Gaussian head blocks are not orthonormal, so the paper's formula
	// misses the planted truth; record by how much.
	worst := checkAgainstTruth(t, dir, o.Out, old, nw, truth, []arch.Role{arch.Q, arch.K, arch.V, arch.O}, 0)
	t.Logf("gram head transfer: worst relative dW error vs planted truth %.3g", worst)
	if worst < 1e-3 {
		t.Errorf("gram matched the planted truth to %.2g; with non-orthonormal heads it should not", worst)
	}
}

func TestSelfMigrationIsIdentity(t *testing.T) {
	dir, _, _, _ := fixture(t, synth.UpgradeSpec{Seed: 1})
	o := opts(dir)
	o.NewBase = o.OldBase
	res, err := Convert(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Provenance.Lineage.Related {
		t.Errorf("self-migration judged unrelated: %+v", res.Provenance.Lineage)
	}
	in, _ := peft.Load(o.Adapter)
	out, err := peft.Load(o.Out)
	if err != nil {
		t.Fatal(err)
	}
	got := modulesByKey(out)
	for _, m := range in.Modules {
		if e := relErr(delta(got[m.Key]), delta(m)); e > exactTol {
			t.Errorf("%s changed by %.2g relative migrating to its own base", m.Key, e)
		}
	}
	// The paper's gram transfer does not have this property: record it.
	o.HeadTransfer, o.Out = lorasuite.HeadGram, filepath.Join(dir, "out-gram")
	if _, err := Convert(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	gram, _ := peft.Load(o.Out)
	worst := 0.0
	for _, m := range gram.Modules {
		worst = max(worst, relErr(delta(m), delta(modulesByKey(in)[m.Key])))
	}
	t.Logf("gram self-migration: worst relative change %.3g (lstsq: < %g)", worst, exactTol)
}

func TestMHAToGQAAndWider(t *testing.T) {
	dir, old, nw, truth := fixture(t, synth.UpgradeSpec{Hidden: 40, Layers: 4, KVHeads: 2, Intermediate: 48, ExtraVocab: 10, Rotate: true, Seed: 21})
	res, err := Convert(context.Background(), opts(dir))
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range res.Provenance.Heads {
		if !slices.Equal(h.HeadMap, truth.HeadMap[i]) {
			t.Fatalf("layer %d: head map %v, planted %v", h.OldLayer, h.HeadMap, truth.HeadMap[i])
		}
	}
	// q and o are carried exactly; the planted k/v are means of two old heads,
	// which no per-head map recovers exactly, so they are only checked for shape.
	checkAgainstTruth(t, dir, res.Out, old, nw, truth, []arch.Role{arch.Q, arch.O}, exactTol)
	out, _ := peft.Load(res.Out)
	for _, m := range out.Modules {
		if m.Role == arch.K && m.Out != 2*old.Config.HeadDim {
			t.Fatalf("%s: out %d, want 2 KV heads of %d", m.Key, m.Out, old.Config.HeadDim)
		}
	}
}

func TestShallowerNewDropsAndReports(t *testing.T) {
	dir, old, nw, truth := fixture(t, synth.UpgradeSpec{Layers: 2, Seed: 5})
	res, err := Convert(context.Background(), opts(dir))
	if err != nil {
		t.Fatal(err)
	}
	// 3 -> 2 layers: the linear map keeps old layers 0 and 2; layer 1's four modules are reported.
	if n := len(res.Provenance.Modules.Dropped); n != 4 {
		t.Fatalf("%d modules reported dropped, want 4: %+v", n, res.Provenance.Modules.Dropped)
	}
	for _, d := range res.Provenance.Modules.Dropped {
		if !strings.Contains(d.Module, "layers.1.") {
			t.Errorf("dropped %s, expected only layer 1", d.Module)
		}
	}
	checkAgainstTruth(t, dir, res.Out, old, nw, truth, []arch.Role{arch.Q, arch.K, arch.V, arch.O}, exactTol)
}

func TestPairAnalysisIsCached(t *testing.T) {
	dir, _, _, _ := fixture(t, synth.UpgradeSpec{Hidden: 48, Layers: 4, Seed: 3})
	o := opts(dir)
	first, err := Convert(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if first.Provenance.Timings.PairCached {
		t.Fatal("first migration claims a cached pair analysis")
	}
	entries, _ := filepath.Glob(filepath.Join(o.CacheDir, "pairs", "*"+pairExt))
	if len(entries) != 1 {
		t.Fatalf("cache holds %v", entries)
	}
	o.Out = filepath.Join(dir, "out2")
	second, err := Convert(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !second.Provenance.Timings.PairCached || second.Provenance.PairKey != first.Provenance.PairKey {
		t.Fatalf("second migration did not reuse the analysis: %+v", second.Provenance.Timings)
	}
	a, _ := peft.Load(filepath.Join(dir, "out"))
	b, _ := peft.Load(o.Out)
	for i := range a.Modules {
		if !slices.Equal(a.Modules[i].A, b.Modules[i].A) || !slices.Equal(a.Modules[i].B, b.Modules[i].B) {
			t.Fatalf("%s differs between fresh and cached analysis", a.Modules[i].Key)
		}
	}
	// Another head transfer is another analysis.
	o.HeadTransfer, o.Out = lorasuite.HeadGram, filepath.Join(dir, "out3")
	third, err := Convert(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if third.Provenance.Timings.PairCached {
		t.Fatal("a gram analysis was served from the lstsq cache entry")
	}
}

func TestConvertRefusesBadInput(t *testing.T) {
	dir, _, _, _ := fixture(t, synth.UpgradeSpec{Hidden: 48, Seed: 9})
	other, err := synth.Random(synth.Spec{Hidden: 16, Layers: 2, Heads: 2, Intermediate: 24, Vocab: 300}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := synth.WriteAdapter(filepath.Join(dir, "foreign"), other.Config, "x", synth.AdapterSpec{R: 2}); err != nil {
		t.Fatal(err)
	}
	noTok := filepath.Join(dir, "notok")
	copyDir(t, filepath.Join(dir, "new"), noTok)
	os.Remove(filepath.Join(noTok, "tokenizer.json"))
	cases := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"foreign adapter", func(o *Options) { o.Adapter = filepath.Join(dir, "foreign") }, "does not fit the old base"},
		{"unknown layer map", func(o *Options) { o.LayerMap = "zigzag" }, "want auto, cka, linear"},
		{"bad explicit map", func(o *Options) { o.LayerMap = "explicit:2,1,0" }, "layer map"},
		{"identity across widths", func(o *Options) { o.Transfer = TransferIdentity }, "equal hidden sizes"},
		{"bad head transfer", func(o *Options) { o.HeadTransfer = "magic" }, "head transfer"},
		{"missing tokenizer", func(o *Options) { o.NewBase = noTok }, "no tokenizer.json"},
		{"missing new base", func(o *Options) { o.NewBase = filepath.Join(dir, "nope") }, "nope"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := opts(dir)
			c.edit(&o)
			_, err := Convert(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
			if _, statErr := os.Stat(o.Out); statErr == nil {
				t.Fatalf("a failed migration wrote %s", o.Out)
			}
		})
	}
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTinyLlamaCheckpoint migrates an adapter from the real transformers
// checkpoint in shared/fixtures to a planted upgrade of it (no tokenizer ships
// with it, so the vocabulary is matched by id).
func TestTinyLlamaCheckpoint(t *testing.T) {
	fix := filepath.Join("..", "..", "shared", "fixtures", "tiny-llama")
	if _, err := os.Stat(filepath.Join(fix, "model.safetensors")); err != nil {
		t.Fatalf("fixture missing: %v", err)
	}
	old, err := synth.Load(fix)
	if err != nil {
		t.Fatal(err)
	}
	nw, truth, err := synth.Upgrade(old, synth.UpgradeSpec{Hidden: 96, Layers: 3, Intermediate: 200, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := nw.Write(filepath.Join(dir, "new")); err != nil {
		t.Fatal(err)
	}
	if _, err := synth.WriteAdapter(filepath.Join(dir, "adapter"), old.Config, "tiny-llama", synth.AdapterSpec{R: 8, Seed: 8}); err != nil {
		t.Fatal(err)
	}
	o := opts(dir)
	o.OldBase = fix
	res, err := Convert(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Provenance.Vocabulary.Method != VocabIDs {
		t.Fatalf("vocabulary matched by %q, want ids", res.Provenance.Vocabulary.Method)
	}
	checkAgainstTruth(t, dir, res.Out, old, nw, truth, []arch.Role{arch.Q, arch.K, arch.V, arch.O}, exactTol)
}

// --transfer identity on a same-width pair: W_x = I with its residual
// measured over the shared vocabulary (0 for a model and itself), and the
// self-migration leaves the adapter unchanged.
func TestIdentityTransfer(t *testing.T) {
	dir, _, _, _ := fixture(t, synth.UpgradeSpec{Seed: 1})
	o := opts(dir)
	o.NewBase, o.Transfer = o.OldBase, TransferIdentity
	res, err := Convert(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	p := res.Provenance
	if !p.Transfer.Identity || float64(p.Transfer.Residual) != 0 || p.Vocabulary.SharedTokens != oldSpec.Vocab-1 {
		t.Fatalf("identity transfer %+v over %+v", p.Transfer, p.Vocabulary)
	}
	in, _ := peft.Load(o.Adapter)
	out, err := peft.Load(o.Out)
	if err != nil {
		t.Fatal(err)
	}
	got := modulesByKey(out)
	for _, m := range in.Modules {
		if e := relErr(delta(got[m.Key]), delta(m)); e > exactTol {
			t.Errorf("%s changed by %.2g relative", m.Key, e)
		}
	}
}

// The lineage thresholds were measured on lstsq transfers: a gram migration
// gets no verdict rather than one judged against the wrong residual.
func TestLineageNotJudgedForGram(t *testing.T) {
	dir, _, _, _ := fixture(t, synth.UpgradeSpec{Hidden: 40, Seed: 2})
	o := opts(dir)
	o.HeadTransfer = lorasuite.HeadGram
	res, err := Convert(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	l := res.Provenance.Lineage
	if l.Judged || l.Warning != "" || !strings.Contains(l.Note, "lstsq") {
		t.Fatalf("gram lineage %+v", l)
	}
	var b strings.Builder
	WriteSummary(&b, &res.Provenance)
	if !strings.Contains(b.String(), "no lineage verdict") {
		t.Fatalf("summary does not say there is no verdict:\n%s", b.String())
	}
}

// VerifyAdapter refuses a non-finite value and an adapter for another base,
// naming the module or the base.
func TestVerifyAdapter(t *testing.T) {
	dir, old, nw, _ := fixture(t, synth.UpgradeSpec{Hidden: 40, Seed: 4})
	if _, err := VerifyAdapter(filepath.Join(dir, "adapter"), old.Config); err != nil {
		t.Fatalf("a good adapter: %v", err)
	}
	if _, err := VerifyAdapter(filepath.Join(dir, "adapter"), nw.Config); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Fatalf("adapter checked against another base: %v", err)
	}
	a, err := peft.Load(filepath.Join(dir, "adapter"))
	if err != nil {
		t.Fatal(err)
	}
	a.Modules[1].B[3] = float32(math.Inf(1))
	bad := filepath.Join(dir, "bad")
	if err := peft.Write(bad, a, peft.WriteOptions{BaseModel: "synth/old", Provenance: map[string]string{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyAdapter(bad, old.Config); err == nil || !strings.Contains(err.Error(), a.Modules[1].Key+" lora_B[3]") {
		t.Fatalf("non-finite value: %v", err)
	}
}
