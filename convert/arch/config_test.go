package arch

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

const fixtureDir = "/work/shared/fixtures/tiny-llama"

func TestLoadFixture(t *testing.T) {
	c, err := Load(fixtureDir)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{ModelType: "llama", Hidden: 64, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 16,
		Intermediate: 176, Vocab: 512, RMSNormEps: 1e-5, RopeTheta: 10000, MaxPositions: 128,
		HiddenAct: "silu", TorchDType: "bfloat16", ScaleEmb: 1}
	checkConfig(t, c, want)
	if c.Path != filepath.Join(fixtureDir, "config.json") {
		t.Errorf("Path = %q", c.Path)
	}
}

// checkConfig compares the scalar fields of got with want.
func checkConfig(t *testing.T, got *Config, want Config) {
	t.Helper()
	type sizes struct {
		Type                                                       string
		Hidden, Layers, Heads, KVHeads, HeadDim, Intermediate, Voc int
		Tied, AttnBias, MLPBias, QKNorm                            bool
		Eps, Theta                                                 float64
		MaxPos, Window                                             int
		Act, DType                                                 string
		ScaleEmb, ScaleDepth                                       float64
		DimBase                                                    int
	}
	pick := func(c *Config) sizes {
		return sizes{c.ModelType, c.Hidden, c.Layers, c.Heads, c.KVHeads, c.HeadDim, c.Intermediate, c.Vocab,
			c.TiedEmbeddings, c.AttentionBias, c.MLPBias, c.QKNorm, c.RMSNormEps, c.RopeTheta,
			c.MaxPositions, c.SlidingWindow, c.HiddenAct, c.TorchDType, c.ScaleEmb, c.ScaleDepth, c.DimModelBase}
	}
	if g, w := pick(got), pick(&want); g != w {
		t.Errorf("config\n got %+v\nwant %+v", g, w)
	}
}

// The published configs of each family, with values read off the JSON by hand.
func TestParsePublishedConfigs(t *testing.T) {
	cases := []struct {
		file string
		want Config
	}{
		{"qwen2.5-1.5b.json", Config{ModelType: "qwen2", Hidden: 1536, Layers: 28, Heads: 12, KVHeads: 2, HeadDim: 128,
			Intermediate: 8960, Vocab: 151936, TiedEmbeddings: true, RMSNormEps: 1e-6, RopeTheta: 1e6,
			MaxPositions: 131072, HiddenAct: "silu", TorchDType: "bfloat16", ScaleEmb: 1}}, // sliding window off: use_sliding_window false
		{"qwen3-1.7b.json", Config{ModelType: "qwen3", Hidden: 2048, Layers: 28, Heads: 16, KVHeads: 8, HeadDim: 128,
			Intermediate: 6144, Vocab: 151936, TiedEmbeddings: true, QKNorm: true, RMSNormEps: 1e-6, RopeTheta: 1e6,
			MaxPositions: 40960, HiddenAct: "silu", TorchDType: "bfloat16", ScaleEmb: 1}},
		{"llama-3-8b.json", Config{ModelType: "llama", Hidden: 4096, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128,
			Intermediate: 14336, Vocab: 128256, RMSNormEps: 1e-5, RopeTheta: 500000,
			MaxPositions: 8192, HiddenAct: "silu", TorchDType: "bfloat16", ScaleEmb: 1}},
		{"llama-3.1-8b.json", Config{ModelType: "llama", Hidden: 4096, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128,
			Intermediate: 14336, Vocab: 128256, RMSNormEps: 1e-5, RopeTheta: 500000,
			MaxPositions: 131072, HiddenAct: "silu", TorchDType: "bfloat16", ScaleEmb: 1}},
		{"mistral-7b.json", Config{ModelType: "mistral", Hidden: 4096, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128,
			Intermediate: 14336, Vocab: 32000, RMSNormEps: 1e-5, RopeTheta: 10000,
			MaxPositions: 32768, SlidingWindow: 4096, HiddenAct: "silu", TorchDType: "bfloat16", ScaleEmb: 1}},
		{"minicpm-2b.json", Config{ModelType: "minicpm", Hidden: 2304, Layers: 40, Heads: 36, KVHeads: 36, HeadDim: 64,
			Intermediate: 5760, Vocab: 122753, TiedEmbeddings: true, RMSNormEps: 1e-5, RopeTheta: 10000,
			MaxPositions: 4096, HiddenAct: "silu", TorchDType: "bfloat16", ScaleEmb: 12, ScaleDepth: 1.4, DimModelBase: 256}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			got, err := Parse(c.file, readTestdata(t, c.file))
			if err != nil {
				t.Fatal(err)
			}
			checkConfig(t, got, c.want)
		})
	}
}

func TestRopeScalingLlama3(t *testing.T) {
	c, err := Parse("llama-3.1-8b.json", readTestdata(t, "llama-3.1-8b.json"))
	if err != nil {
		t.Fatal(err)
	}
	rs := c.RopeScaling
	if rs == nil || rs.Type != "llama3" || rs.Factor != 8 || rs.LowFreqFactor != 1 || rs.HighFreqFactor != 4 || rs.OriginalMaxPositions != 8192 {
		t.Fatalf("RopeScaling = %+v", rs)
	}
	// Other types keep their raw JSON; "default" (transformers v5) means none.
	c, err = Parse("yarn", []byte(`{"model_type":"qwen2","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,
		"intermediate_size":16,"vocab_size":10,"rope_scaling":{"type":"yarn","factor":4.0,"original_max_position_embeddings":32768}}`))
	if err != nil {
		t.Fatal(err)
	}
	if rs := c.RopeScaling; rs == nil || rs.Type != "yarn" || rs.Factor != 4 || !strings.Contains(string(rs.Raw), "32768") {
		t.Errorf("yarn RopeScaling = %+v", rs)
	}
	c, err = Parse("v5", []byte(`{"model_type":"llama","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,
		"intermediate_size":16,"vocab_size":10,"rope_parameters":{"rope_type":"default","rope_theta":250000.0}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.RopeScaling != nil || c.RopeTheta != 250000 {
		t.Errorf("v5 rope_parameters: scaling %+v theta %g", c.RopeScaling, c.RopeTheta)
	}
}

// Defaults: num_key_value_heads defaults to num_attention_heads, head_dim to
// hidden/heads, eps and theta to the family's transformers defaults.
func TestDefaults(t *testing.T) {
	c, err := Parse("d", []byte(`{"model_type":"mistral","hidden_size":96,"num_hidden_layers":1,"num_attention_heads":6,"intermediate_size":16,"vocab_size":10}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.KVHeads != 6 || c.HeadDim != 16 || c.RMSNormEps != 1e-6 || c.RopeTheta != 10000 || c.TiedEmbeddings || c.SlidingWindow != 0 {
		t.Errorf("defaults: %+v", c)
	}
	c, err = Parse("m", []byte(`{"model_type":"minicpm","hidden_size":96,"num_hidden_layers":1,"num_attention_heads":6,"intermediate_size":16,"vocab_size":10}`))
	if err != nil {
		t.Fatal(err)
	}
	if !c.TiedEmbeddings || c.ScaleEmb != 1 || c.ScaleDepth != 0 || c.DimModelBase != 0 {
		t.Errorf("minicpm defaults: %+v", c)
	}
}

func TestParseBad(t *testing.T) {
	base := `"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128,"vocab_size":100`
	cases := []struct {
		name, json, want string
		sentinel         error
	}{
		{"not json", `{`, "unexpected end", ErrInvalid},
		{"unsupported", `{"model_type":"gpt2",` + base + `}`, `"gpt2"`, ErrUnsupported},
		{"missing model_type", `{` + base + `}`, `model_type ""`, ErrUnsupported},
		{"missing hidden", `{"model_type":"llama","num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128,"vocab_size":100}`, "hidden_size is missing", ErrInvalid},
		{"zero layers", `{"model_type":"llama",` + strings.Replace(base, `"num_hidden_layers":2`, `"num_hidden_layers":0`, 1) + `}`, "num_hidden_layers must be positive", ErrInvalid},
		{"negative vocab", `{"model_type":"llama",` + strings.Replace(base, `"vocab_size":100`, `"vocab_size":-5`, 1) + `}`, "vocab_size must be positive", ErrInvalid},
		{"gqa mismatch", `{"model_type":"llama",` + base + `,"num_key_value_heads":3}`, "not a multiple of num_key_value_heads 3", ErrInvalid},
		{"indivisible heads", `{"model_type":"llama",` + strings.Replace(base, `"num_attention_heads":4`, `"num_attention_heads":5`, 1) + `}`, "not divisible", ErrInvalid},
		{"zero head_dim", `{"model_type":"qwen3",` + base + `,"head_dim":0}`, "head_dim must be positive", ErrInvalid},
		{"zero eps", `{"model_type":"llama",` + base + `,"rms_norm_eps":0}`, "rms_norm_eps", ErrInvalid},
		{"negative theta", `{"model_type":"llama",` + base + `,"rope_theta":-1}`, "rope_theta", ErrInvalid},
		{"string size", `{"model_type":"llama",` + strings.Replace(base, `"vocab_size":100`, `"vocab_size":"100"`, 1) + `}`, "vocab_size", ErrInvalid},
		{"llama3 incomplete", `{"model_type":"llama",` + base + `,"rope_scaling":{"rope_type":"llama3","factor":8}}`, "llama3 needs", ErrInvalid},
		{"llama3 inverted", `{"model_type":"llama",` + base + `,"rope_scaling":{"rope_type":"llama3","factor":8,"low_freq_factor":4,"high_freq_factor":1,"original_max_position_embeddings":8192}}`, "low_freq_factor < high_freq_factor", ErrInvalid},
		{"minicpm bad scale", `{"model_type":"minicpm",` + base + `,"scale_emb":0}`, "scale_emb", ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("cfg/config.json", []byte(c.json))
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			msg := err.Error()
			if !errors.Is(err, c.sentinel) || !strings.Contains(msg, "cfg/config.json") || !strings.Contains(msg, c.want) {
				t.Errorf("err = %q; want %v naming the file and containing %q", msg, c.sentinel, c.want)
			}
			if c.sentinel == ErrUnsupported {
				for _, mt := range Supported() {
					if !strings.Contains(msg, mt) {
						t.Errorf("unsupported error does not list %q: %s", mt, msg)
					}
				}
			}
		})
	}
}
