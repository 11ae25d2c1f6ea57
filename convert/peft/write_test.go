package peft

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/safetensors"
)

type provenance struct {
	Method string  `json:"method"`
	Fit    float64 `json:"fit"`
}

// Load -> Write -> Load keeps every value (same dtype), keeps unknown config
// keys, names the new base, and adds the card and provenance.
func TestWriteRoundTrip(t *testing.T) {
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.BF16, safetensors.F16} {
		t.Run(string(dt), func(t *testing.T) {
			ps := qvPairs(4)
			for i := range ps {
				ps[i].dtype = dt
			}
			a, err := Load(writeAdapter(t, baseConfig(), ps))
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "migrated")
			opts := WriteOptions{BaseModel: "new/tiny-llama-v2", Revision: "0123abcd", Card: "# Migrated\n\nBody text.",
				Tags: []string{"llama", "lora"}, Provenance: provenance{"lstsq", 0.25}}
			if err := Write(out, a, opts); err != nil {
				t.Fatal(err)
			}
			b, err := Load(out)
			if err != nil {
				t.Fatal(err)
			}
			if len(b.Modules) != len(a.Modules) {
				t.Fatalf("%d modules, want %d", len(b.Modules), len(a.Modules))
			}
			for i, m := range a.Modules {
				n := b.Modules[i]
				// Bitwise equal: values were decoded from dt and are re-encoded to dt.
				if n.Key != m.Key || n.DType != dt || !slices.Equal(n.A, m.A) || !slices.Equal(n.B, m.B) || n.Alpha != m.Alpha || n.R != m.R {
					t.Errorf("module %s changed in the round trip", m.Key)
				}
			}
			if b.Config.BaseModel != "new/tiny-llama-v2" || b.Config.Revision != "0123abcd" {
				t.Errorf("base %q revision %q", b.Config.BaseModel, b.Config.Revision)
			}
			var raw map[string]any
			cfgBytes, _ := os.ReadFile(filepath.Join(out, ConfigFile))
			if err := json.Unmarshal(cfgBytes, &raw); err != nil {
				t.Fatal(err)
			}
			if _, ok := raw["x_custom_key"].(map[string]any)["kept"]; !ok || raw["lora_dropout"] != 0.05 || raw["init_lora_weights"] != true {
				t.Errorf("unknown keys not preserved: %v", raw)
			}
			if !strings.Contains(string(cfgBytes), "\n  \"alpha_pattern\": {},\n") {
				t.Errorf("config not written with 2-space indent and sorted keys:\n%s", cfgBytes)
			}
			card, _ := os.ReadFile(filepath.Join(out, CardFile))
			wantCard := "---\nbase_model: new/tiny-llama-v2\nlibrary_name: peft\ntags:\n- lora\n- lorasync\n- llama\n---\n\n# Migrated\n\nBody text.\n"
			if string(card) != wantCard {
				t.Errorf("README.md:\n%s\nwant:\n%s", card, wantCard)
			}
			var prov provenance
			pb, _ := os.ReadFile(filepath.Join(out, ProvenanceFile))
			if err := json.Unmarshal(pb, &prov); err != nil || prov.Method != "lstsq" || !strings.Contains(string(pb), "\n  \"fit\"") {
				t.Errorf("lorasync.json = %s (%v)", pb, err)
			}
		})
	}
}

// Writing over an existing adapter replaces it wholesale and leaves no temp or
// aside directories; a refused write leaves the old one untouched.
func TestWriteReplacesAtomically(t *testing.T) {
	a, err := Load(writeAdapter(t, baseConfig(), qvPairs(4)))
	if err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	out := filepath.Join(parent, "adapter")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(out, "stale.txt"), []byte("old"), 0o644)
	opts := WriteOptions{BaseModel: "new/base", Provenance: map[string]string{"k": "v"}}
	if err := Write(out, a, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, "stale.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Error("old directory content survived the replace")
	}
	entries, _ := os.ReadDir(parent)
	if len(entries) != 1 {
		t.Errorf("parent holds %d entries, want only the adapter", len(entries))
	}
	// An inconsistent adapter (module not targeted) is refused before any write.
	bad := *a
	bad.Config = a.Config.Clone()
	bad.Config.TargetModules = []string{"k_proj"}
	err = Write(out, &bad, opts)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "Retarget") || !strings.Contains(err.Error(), out) {
		t.Errorf("err = %v", err)
	}
	if _, err := Load(out); err != nil {
		t.Errorf("previous adapter damaged: %v", err)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 1 {
		t.Errorf("failed write left %d entries", len(entries))
	}
	for _, o := range []WriteOptions{{Provenance: 1}, {BaseModel: "x"}} {
		if err := Write(out, a, o); err == nil {
			t.Errorf("Write with %+v succeeded", o)
		}
	}
}

func TestModelCardQuoting(t *testing.T) {
	card, err := modelCard(WriteOptions{BaseModel: "org/model: v2", Tags: []string{"yes", "a#b"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`base_model: "org/model: v2"`, `- "yes"`, `- "a#b"`} {
		if !strings.Contains(string(card), want) {
			t.Errorf("card lacks %s:\n%s", want, card)
		}
	}
	if _, err := modelCard(WriteOptions{BaseModel: "a\nb"}); err == nil {
		t.Error("newline in base model accepted")
	}
}

// Retarget after a layer mapping: the config must describe exactly the modules.
func TestRetarget(t *testing.T) {
	base := tinyBase(t)
	load := func() *Adapter {
		a, err := Load(writeAdapter(t, baseConfig(), qvPairs(4)))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	keys := func(a *Adapter) (targeted []string) {
		for l := 0; l < base.Layers; l++ {
			for _, r := range arch.Roles {
				if k := base.Module(l, r); a.Config.Targets(k) {
					targeted = append(targeted, k)
				}
			}
		}
		return targeted
	}

	a := load()
	if a.Retarget(base) {
		t.Error("Retarget changed an exact config")
	}

	// Drop layer 1: a grid {0} x {q, v} -> layers_to_transform [0].
	a = load()
	a.Modules = a.Modules[:2]
	if !a.Retarget(base) {
		t.Fatal("Retarget reported no change")
	}
	if !slices.Equal(a.Config.TargetModules, []string{"q_proj", "v_proj"}) || !slices.Equal(a.Config.LayersToTransform, []int{0}) {
		t.Errorf("target_modules %v layers %v", a.Config.TargetModules, a.Config.LayersToTransform)
	}
	if got := keys(a); !slices.Equal(got, []string{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"}) {
		t.Errorf("targets %v", got)
	}

	// Not a grid (q on layer 0, v on layer 1) and a different rank on one
	// module: exact paths and an exact-path rank_pattern.
	a = load()
	a.Modules = []*Module{a.Modules[0], a.Modules[3]}
	m := a.Modules[1]
	m.R, m.A, m.B = 2, m.A[:2*m.In], m.B[:m.Out*2]
	a.Retarget(base)
	if got := keys(a); !slices.Equal(got, []string{"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj"}) {
		t.Errorf("targets %v", got)
	}
	if a.Config.R != 2 && a.Config.R != 4 || a.Config.RankFor(m.Key) != 2 || a.Config.RankFor(a.Modules[0].Key) != 4 {
		t.Errorf("r %d rank_pattern %+v", a.Config.R, a.Config.RankPattern)
	}
	// The result survives a write and a load.
	out := filepath.Join(t.TempDir(), "out")
	if err := Write(out, a, WriteOptions{BaseModel: "b", Provenance: struct{}{}}); err != nil {
		t.Fatal(err)
	}
	b, err := Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Modules) != 2 || b.Modules[1].R != 2 {
		t.Errorf("reloaded %d modules", len(b.Modules))
	}
}

// Extra files land beside the adapter; names that would clobber the adapter's
// own files or leave the directory are refused before anything is written.
func TestWriteExtraFiles(t *testing.T) {
	a, err := Load(writeAdapter(t, baseConfig(), qvPairs(4)))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "migrated")
	opts := WriteOptions{BaseModel: "b", Provenance: provenance{}, Extra: map[string][]byte{"heatmap.png": []byte("png")}}
	if err := Write(out, a, opts); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(out, "heatmap.png")); err != nil || string(got) != "png" {
		t.Fatalf("extra file: %q, %v", got, err)
	}
	for _, bad := range []string{ConfigFile, WeightsFile, CardFile, ProvenanceFile, "../escape", "sub/file", ".."} {
		opts.Extra = map[string][]byte{bad: nil}
		target := filepath.Join(dir, "bad")
		if err := Write(target, a, opts); err == nil || !strings.Contains(err.Error(), "not allowed") {
			t.Errorf("extra %q: err = %v", bad, err)
		}
		if _, err := os.Stat(target); err == nil {
			t.Errorf("extra %q: the refused write created %s", bad, target)
		}
	}
}
