package peft

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/safetensors"
)

func TestLoad(t *testing.T) {
	ps := qvPairs(4)
	ps[1].adapterName = "default" // tolerated on read: lora_A.default.weight
	ps[0].dtype, ps[1].dtype = safetensors.BF16, safetensors.BF16
	dir := writeAdapter(t, baseConfig(), ps)
	a, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, m := range a.Modules {
		keys = append(keys, m.Key)
	}
	want := []string{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
		"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"}
	if !slices.Equal(keys, want) {
		t.Fatalf("modules %v, want %v (layer then role order)", keys, want)
	}
	m := a.Modules[1]
	if m.Layer != 0 || m.Role != arch.V || m.R != 4 || m.In != 64 || m.Out != 32 || m.Alpha != 16 || m.DType != safetensors.BF16 {
		t.Errorf("module %+v", *m)
	}
	if len(m.A) != 4*64 || len(m.B) != 32*4 {
		t.Errorf("A %d B %d values", len(m.A), len(m.B))
	}
	// Values equal what is in the file (read back independently).
	f, err := safetensors.Open(filepath.Join(dir, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	wantB, _ := f.Float32(tensorPrefix + "model.layers.1.self_attn.v_proj.lora_B.weight")
	if !slices.Equal(a.Modules[3].B, wantB) {
		t.Error("B of layer 1 v_proj differs from the file")
	}
	if m.Scale() != 4 { // 16 / 4
		t.Errorf("Scale = %v, want 4", m.Scale())
	}
	if err := a.Check(tinyBase(t)); err != nil {
		t.Errorf("Check: %v", err)
	}
	if a.Config.BaseModel != "old/tiny-llama" || a.Config.TaskType != "CAUSAL_LM" {
		t.Errorf("config %+v", a.Config)
	}
}

// Every refusal names the file (or directory) it concerns and says why.
func TestLoadRefuses(t *testing.T) {
	base := baseConfig
	qv := qvPairs(4)
	mutate := func(f func(ps []pair)) []pair {
		ps := qvPairs(4)
		f(ps)
		return ps
	}
	cases := []struct {
		name     string
		cfg      map[string]any
		pairs    []pair
		extra    []safetensors.Tensor
		file     string // file the error must name
		want     string
		sentinel error
	}{
		{"dora flag", with(base(), "use_dora", true), qv, nil, ConfigFile, "DoRA", ErrUnsupported},
		{"dora tensors", base(), qv, []safetensors.Tensor{safetensors.FromFloat32(tensorPrefix+"model.layers.0.self_attn.q_proj.lora_magnitude_vector", safetensors.F32, []int{64}, make([]float32, 64))},
			WeightsFile, "DoRA magnitude", ErrUnsupported},
		{"ia3", with(base(), "peft_type", "IA3"), qv, nil, ConfigFile, `peft_type "IA3"`, ErrUnsupported},
		{"fan_in_fan_out", with(base(), "fan_in_fan_out", true), qv, nil, ConfigFile, "unsupported for llama-family Linear layers", ErrUnsupported},
		{"bias all", with(base(), "bias", "all"), qv, nil, ConfigFile, `bias "all"`, ErrUnsupported},
		{"modules_to_save", with(base(), "modules_to_save", []string{"lm_head"}), qv, nil, ConfigFile, "modules_to_save", ErrUnsupported},
		{"missing r", with(base(), "r", nil), qv, nil, ConfigFile, "r is missing", ErrInvalid},
		{"fractional r", with(base(), "r", 4.5), qv, nil, ConfigFile, "not a positive integer", ErrInvalid},
		{"bad regex", with(base(), "target_modules", "(q_proj"), qv, nil, ConfigFile, "not a valid regular expression", ErrInvalid},
		{"missing B", base(), mutate(func(ps []pair) { ps[2].skipB = true }), nil, WeightsFile, "model.layers.1.self_attn.q_proj: lora_B is missing", ErrInvalid},
		{"missing A", base(), mutate(func(ps []pair) { ps[0].skipA = true }), nil, WeightsFile, "lora_A is missing", ErrInvalid},
		{"rank mismatch", base(), append(qvPairs(4)[:3], pair{key: "model.layers.1.self_attn.v_proj", r: 4, in: 64, out: 32, skipB: true}),
			[]safetensors.Tensor{safetensors.FromFloat32(tensorPrefix+"model.layers.1.self_attn.v_proj.lora_B.weight", safetensors.F32, []int{32, 3}, make([]float32, 96))},
			WeightsFile, "rank mismatch", ErrInvalid},
		{"rank vs config", with(base(), "r", 8), qv, nil, WeightsFile, "rank 4 in the tensors but 8 from the config", ErrInvalid},
		{"untargeted", base(), append(qvPairs(4), pair{key: "model.layers.0.self_attn.k_proj", r: 4, in: 64, out: 32}), nil,
			WeightsFile, "model.layers.0.self_attn.k_proj: has tensors but", ErrInvalid},
		{"unknown module", with(base(), "target_modules", []string{"q_proj", "v_proj", "qkv_proj"}),
			append(qvPairs(4), pair{key: "model.layers.0.self_attn.qkv_proj", r: 4, in: 64, out: 128}), nil,
			WeightsFile, "model.layers.0.self_attn.qkv_proj", ErrUnsupported},
		{"embedding lora", base(), qv, []safetensors.Tensor{safetensors.FromFloat32(tensorPrefix+"model.embed_tokens.lora_embedding_A", safetensors.F32, []int{4, 512}, make([]float32, 2048))},
			WeightsFile, "model.embed_tokens.lora_embedding_A", ErrUnsupported},
		{"no tensors", base(), nil, nil, WeightsFile, "no LoRA tensors", ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := writeAdapter(t, c.cfg, c.pairs, c.extra...)
			_, err := Load(dir)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			msg := err.Error()
			if !errors.Is(err, c.sentinel) || !strings.Contains(msg, filepath.Join(dir, c.file)) || !strings.Contains(msg, c.want) {
				t.Errorf("err = %s\nwant %v naming %s and containing %q", msg, c.sentinel, c.file, c.want)
			}
		})
	}
}

func TestLoadPickleOnly(t *testing.T) {
	dir := writeAdapter(t, baseConfig(), qvPairs(4))
	os.Remove(filepath.Join(dir, WeightsFile))
	if err := os.WriteFile(filepath.Join(dir, PickleFile), []byte("\x80\x02}q\x00."), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(dir)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), PickleFile) {
		t.Errorf("err = %v, want ErrUnsupported naming %s", err, PickleFile)
	}
}

// An adapter trained for a bigger model does not fit the fixture.
func TestCheckMismatch(t *testing.T) {
	ps := []pair{
		{key: "model.layers.0.self_attn.q_proj", r: 4, in: 128, out: 128}, // hidden 128, not 64
		{key: "model.layers.5.self_attn.v_proj", r: 4, in: 64, out: 32},   // layer 5 of 2
	}
	dir := writeAdapter(t, baseConfig(), ps)
	a, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	err = a.Check(tinyBase(t))
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("err = %v, want ErrMismatch", err)
	}
	for _, want := range []string{filepath.Join(dir, WeightsFile), "config.json",
		"model.layers.0.self_attn.q_proj is 128 x 128 (out x in), base q_proj is 64 x 64",
		"model.layers.5.self_attn.v_proj is not a linear layer of this 2-layer llama model"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err %q lacks %q", err, want)
		}
	}
}

// target_modules as a regex string selects modules by full-path match; a list
// selects by name suffix. Both forms load the same tensors when they agree.
func TestLoadTargetForms(t *testing.T) {
	for name, target := range map[string]any{
		"list":  []string{"q_proj", "v_proj"},
		"regex": `model\.layers\.\d+\.self_attn\.(q|v)_proj`,
	} {
		a, err := Load(writeAdapter(t, with(baseConfig(), "target_modules", target), qvPairs(4)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(a.Modules) != 4 {
			t.Errorf("%s: %d modules", name, len(a.Modules))
		}
	}
	// A regex that misses v_proj makes the v_proj tensors unexplained.
	_, err := Load(writeAdapter(t, with(baseConfig(), "target_modules", `.*\.q_proj`), qvPairs(4)))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "v_proj: has tensors but") {
		t.Errorf("err = %v", err)
	}
}
