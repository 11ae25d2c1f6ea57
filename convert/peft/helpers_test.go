package peft

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/safetensors"
)

const fixtureDir = "/work/shared/fixtures/tiny-llama"

// tinyBase is the fixture's config: hidden 64, 2 layers, 4 heads, 2 KV heads,
// head_dim 16, intermediate 176.
func tinyBase(t *testing.T) *arch.Config {
	t.Helper()
	c, err := arch.Load(fixtureDir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// baseConfig is an adapter_config.json as PEFT 0.13 writes it for a causal LM,
// plus one key lorasync does not know.
func baseConfig() map[string]any {
	return map[string]any{
		"alpha_pattern": map[string]any{}, "auto_mapping": nil,
		"base_model_name_or_path": "old/tiny-llama", "bias": "none", "fan_in_fan_out": false,
		"inference_mode": true, "init_lora_weights": true, "layer_replication": nil,
		"layers_pattern": nil, "layers_to_transform": nil, "loftq_config": map[string]any{},
		"lora_alpha": 16, "lora_dropout": 0.05, "megatron_config": nil, "megatron_core": "megatron.core",
		"modules_to_save": nil, "peft_type": "LORA", "r": 4, "rank_pattern": map[string]any{},
		"revision": nil, "target_modules": []string{"q_proj", "v_proj"}, "task_type": "CAUSAL_LM",
		"use_dora": false, "use_rslora": false, "x_custom_key": map[string]any{"kept": []int{1, 2}},
	}
}

// pair is one LoRA pair to write: A (r x in), B (out x r).
type pair struct {
	key          string
	r, in, out   int
	adapterName  string // "" or e.g. "default"
	dtype        safetensors.DType
	skipA, skipB bool
}

// writeAdapter writes cfg and random pairs into a fresh directory and returns it.
func writeAdapter(t *testing.T, cfg map[string]any, pairs []pair, extra ...safetensors.Tensor) string {
	t.Helper()
	dir := t.TempDir()
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 13))
	var ts []safetensors.Tensor
	for _, p := range pairs {
		dt := p.dtype
		if dt == "" {
			dt = safetensors.F32
		}
		seg := ""
		if p.adapterName != "" {
			seg = "." + p.adapterName
		}
		if !p.skipA {
			ts = append(ts, safetensors.FromFloat32(tensorPrefix+p.key+".lora_A"+seg+".weight", dt, []int{p.r, p.in}, randVec(rng, p.r*p.in)))
		}
		if !p.skipB {
			ts = append(ts, safetensors.FromFloat32(tensorPrefix+p.key+".lora_B"+seg+".weight", dt, []int{p.out, p.r}, randVec(rng, p.out*p.r)))
		}
	}
	ts = append(ts, extra...)
	if err := safetensors.WriteFile(filepath.Join(dir, WeightsFile), ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func randVec(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

// qvPairs are q_proj (64 x 64) and v_proj (32 x 64) pairs of rank r on both
// layers of the fixture.
func qvPairs(r int) []pair {
	var ps []pair
	for _, l := range []string{"0", "1"} {
		ps = append(ps,
			pair{key: "model.layers." + l + ".self_attn.q_proj", r: r, in: 64, out: 64},
			pair{key: "model.layers." + l + ".self_attn.v_proj", r: r, in: 64, out: 32})
	}
	return ps
}

func with(cfg map[string]any, kv ...any) map[string]any {
	for i := 0; i < len(kv); i += 2 {
		cfg[kv[i].(string)] = kv[i+1]
	}
	return cfg
}
