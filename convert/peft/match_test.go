package peft

import (
	"encoding/json"
	"math"
	"testing"
)

func parseCfg(t *testing.T, cfg map[string]any) *Config {
	t.Helper()
	b, _ := json.Marshal(cfg)
	c, err := ParseConfig("adapter_config.json", b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Hand-worked cases of PEFT's check_target_module_exists.
func TestTargets(t *testing.T) {
	q0, v0, k0 := "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.k_proj"
	q1, q12 := "model.layers.1.self_attn.q_proj", "model.layers.12.self_attn.q_proj"
	down3 := "model.layers.3.mlp.down_proj"
	cases := []struct {
		name string
		kv   []any
		yes  []string
		no   []string
	}{
		{"list suffix", []any{"target_modules", []string{"q_proj", "v_proj"}}, []string{q0, v0, q12}, []string{k0, down3}},
		{"list needs a dot boundary", []any{"target_modules", []string{"proj"}}, nil, []string{q0, down3}},
		{"list exact path", []any{"target_modules", []string{k0}}, []string{k0}, []string{q0, "model.layers.10.self_attn.k_proj"}},
		{"list multi-segment suffix", []any{"target_modules", []string{"mlp.down_proj"}}, []string{down3}, []string{q0}},
		{"regex full match", []any{"target_modules", `.*layers\.[01]\.self_attn\.(q|v)_proj`}, []string{q0, v0, q1}, []string{k0, q12}},
		{"regex is anchored", []any{"target_modules", `q_proj`}, nil, []string{q0}},
		{"regex lookahead (Python dialect)", []any{"target_modules", `.*\.(?!k_)[a-z]_proj`}, []string{q0, v0}, []string{k0}},
		{"all-linear", []any{"target_modules", "all-linear"}, []string{q0, down3}, []string{"lm_head"}},
		{"layers_to_transform", []any{"target_modules", []string{"q_proj"}, "layers_to_transform", []int{1, 12}}, []string{q1, q12}, []string{q0}},
		{"layers_to_transform int", []any{"target_modules", []string{"q_proj"}, "layers_to_transform", 0}, []string{q0}, []string{q1}},
		{"layers_pattern", []any{"target_modules", []string{"q_proj"}, "layers_to_transform", []int{0}, "layers_pattern", "layers"}, []string{q0}, []string{q1}},
		{"layers_pattern mismatch", []any{"target_modules", []string{"q_proj"}, "layers_to_transform", []int{0}, "layers_pattern", "h"}, nil, []string{q0}},
		// layers_to_transform is not consulted for regex targets or exact paths.
		{"layers ignored for regex", []any{"target_modules", `.*q_proj`, "layers_to_transform", []int{5}}, []string{q0}, nil},
		{"layers ignored for exact", []any{"target_modules", []string{q0}, "layers_to_transform", []int{5}}, []string{q0}, nil},
		{"exclude list", []any{"target_modules", []string{"q_proj"}, "exclude_modules", []string{q1}}, []string{q0}, []string{q1}},
		{"exclude regex", []any{"target_modules", []string{"q_proj"}, "exclude_modules", `.*\.1\..*`}, []string{q0, q12}, []string{q1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := parseCfg(t, with(baseConfig(), c.kv...))
			for _, k := range c.yes {
				if !cfg.Targets(k) {
					t.Errorf("Targets(%s) = false", k)
				}
			}
			for _, k := range c.no {
				if cfg.Targets(k) {
					t.Errorf("Targets(%s) = true", k)
				}
			}
		})
	}
}

// rank_pattern / alpha_pattern follow PEFT's get_pattern_key: the first key in
// file order whose regex matches a whole dot-separated suffix (or the whole
// name) wins.
func TestPatterns(t *testing.T) {
	raw := []byte(`{"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":["q_proj","v_proj","down_proj"],
		"rank_pattern":{"model.layers.1.self_attn.q_proj":2,"q_proj":4,"layers\\.[0-9]+\\.mlp\\.down_proj":32},
		"alpha_pattern":{"v_proj":64,"model.layers.0.self_attn.v_proj":1}}`)
	c, err := ParseConfig("adapter_config.json", raw)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		key   string
		r     int
		alpha float64
	}{
		{"model.layers.1.self_attn.q_proj", 2, 16}, // exact name, listed first
		{"model.layers.0.self_attn.q_proj", 4, 16}, // suffix "q_proj"
		{"model.layers.7.mlp.down_proj", 32, 16},   // multi-segment regex suffix
		{"model.layers.0.self_attn.v_proj", 8, 64}, // "v_proj" precedes the exact key: first match wins
		{"model.layers.0.self_attn.k_proj", 8, 16}, // no pattern: defaults
		{"model.layers.0.mlp.up_proj", 8, 16},      // "down_proj" regex does not match
		{"model.layers.0.self_attn.qq_proj", 8, 16},
	}
	for _, tc := range cases {
		if r := c.RankFor(tc.key); r != tc.r {
			t.Errorf("RankFor(%s) = %d, want %d", tc.key, r, tc.r)
		}
		if a := c.AlphaFor(tc.key); a != tc.alpha {
			t.Errorf("AlphaFor(%s) = %g, want %g", tc.key, a, tc.alpha)
		}
	}
	// Order survives a rewrite: the exact key stays ahead of "q_proj".
	b, err := c.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ParseConfig("rewritten", b)
	if err != nil {
		t.Fatal(err)
	}
	if c2.RankFor("model.layers.1.self_attn.q_proj") != 2 || len(c2.RankPattern) != 3 || c2.RankPattern[0].Key != "model.layers.1.self_attn.q_proj" {
		t.Errorf("rank_pattern after rewrite: %+v", c2.RankPattern)
	}
	if _, err := ParseConfig("dup", []byte(`{"peft_type":"LORA","r":8,"rank_pattern":{"q_proj":2,"q_proj":4}}`)); err == nil {
		t.Error("duplicate rank_pattern key accepted")
	}
}

func TestScale(t *testing.T) {
	// Hand-worked: alpha 16, r 4 -> 4; rsLoRA 16/sqrt(4) = 8; r 8 -> 16/sqrt(8).
	cases := []struct {
		alpha  float64
		r      int
		rslora bool
		want   float64
	}{
		{16, 4, false, 4}, {16, 4, true, 8}, {16, 8, true, 16 / math.Sqrt(8)}, {32, 16, false, 2},
	}
	for _, c := range cases {
		if got := Scale(c.alpha, c.r, c.rslora); math.Abs(got-c.want) > 1e-15 {
			t.Errorf("Scale(%g, %d, %v) = %v, want %v", c.alpha, c.r, c.rslora, got, c.want)
		}
	}
	// use_rslora flows from the config into each module.
	dir := writeAdapter(t, with(baseConfig(), "use_rslora", true), qvPairs(4))
	a, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s := a.Modules[0].Scale(); s != 8 {
		t.Errorf("rsLoRA module scale %v, want 16/sqrt(4) = 8", s)
	}
}
