package arch

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/convert/safetensors"
)

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustParse(t *testing.T, file string) *Config {
	t.Helper()
	c, err := Parse(file, readTestdata(t, file))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The tensor list derived from the fixture's config equals the names actually
// stored in its checkpoint (written by transformers).
func TestTensorsMatchFixtureCheckpoint(t *testing.T) {
	c, err := Load(fixtureDir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(filepath.Join(fixtureDir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	for _, s := range c.Tensors() {
		names = append(names, s.Name)
		in, ok := f.Info(s.Name)
		if !ok || !slices.Equal(in.Shape, s.Shape) {
			t.Errorf("%s: checkpoint %v %v, config %v", s.Name, in.Shape, ok, s.Shape)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, f.Names()) {
		t.Errorf("Tensors()\n %v\ncheckpoint\n %v", names, f.Names())
	}
	if err := c.CheckWeights(f); err != nil {
		t.Error(err)
	}
}

// Shapes hand-computed from the published configs.
func TestShape(t *testing.T) {
	cases := []struct {
		file    string
		role    Role
		out, in int
	}{
		{"llama-3-8b.json", Q, 4096, 4096},
		{"llama-3-8b.json", K, 1024, 4096}, // 8 KV heads x 128
		{"llama-3-8b.json", O, 4096, 4096},
		{"llama-3-8b.json", Gate, 14336, 4096},
		{"llama-3-8b.json", Down, 4096, 14336},
		{"qwen3-1.7b.json", Q, 2048, 2048}, // 16 heads x explicit head_dim 128
		{"qwen3-1.7b.json", V, 1024, 2048}, // 8 x 128
		{"qwen3-1.7b.json", O, 2048, 2048},
		{"qwen2.5-1.5b.json", K, 256, 1536}, // 2 x 128
		{"qwen2.5-1.5b.json", Up, 8960, 1536},
		{"minicpm-2b.json", V, 2304, 2304}, // MHA, 36 x 64
		{"mistral-7b.json", V, 1024, 4096},
	}
	for _, c := range cases {
		out, in := mustParse(t, c.file).Shape(c.role)
		if out != c.out || in != c.in {
			t.Errorf("%s %s: (%d, %d), want (%d, %d)", c.file, c.role, out, in, c.out, c.in)
		}
	}
	// A head_dim that is not hidden/heads changes q/k/v/o but not the MLP.
	c, err := Parse("hd", []byte(`{"model_type":"qwen3","hidden_size":64,"num_hidden_layers":1,"num_attention_heads":4,
		"num_key_value_heads":2,"head_dim":32,"intermediate_size":96,"vocab_size":10}`))
	if err != nil {
		t.Fatal(err)
	}
	for role, want := range map[Role][2]int{Q: {128, 64}, K: {64, 64}, O: {64, 128}, Gate: {96, 64}} {
		if out, in := c.Shape(role); out != want[0] || in != want[1] {
			t.Errorf("head_dim 32 %s: (%d, %d), want %v", role, out, in, want)
		}
	}
}

// Names for one layer of each family, written out by hand.
func TestNames(t *testing.T) {
	q3 := mustParse(t, "qwen3-1.7b.json")
	if got := q3.Weight(27, Q); got != "model.layers.27.self_attn.q_proj.weight" {
		t.Errorf("Weight = %q", got)
	}
	if got := q3.QNorm(3); got != "model.layers.3.self_attn.q_norm.weight" {
		t.Errorf("QNorm = %q", got)
	}
	if got := q3.KNorm(3); got != "model.layers.3.self_attn.k_norm.weight" {
		t.Errorf("KNorm = %q", got)
	}
	if q3.Bias(0, Q) != "" || q3.LMHead() != "model.embed_tokens.weight" {
		t.Errorf("qwen3: bias %q, tied lm_head %q", q3.Bias(0, Q), q3.LMHead())
	}
	q2 := mustParse(t, "qwen2.5-1.5b.json")
	for role, want := range map[Role]string{
		Q: "model.layers.5.self_attn.q_proj.bias", K: "model.layers.5.self_attn.k_proj.bias",
		V: "model.layers.5.self_attn.v_proj.bias", O: "", Gate: "", Down: "",
	} {
		if got := q2.Bias(5, role); got != want {
			t.Errorf("qwen2 Bias(5, %s) = %q, want %q", role, got, want)
		}
	}
	if q2.QNorm(0) != "" {
		t.Error("qwen2 has no q_norm")
	}
	l3 := mustParse(t, "llama-3-8b.json")
	if l3.LMHead() != "lm_head.weight" || l3.InputNorm(1) != "model.layers.1.input_layernorm.weight" ||
		l3.PostAttnNorm(1) != "model.layers.1.post_attention_layernorm.weight" || l3.FinalNorm() != "model.norm.weight" {
		t.Error("llama global names wrong")
	}
	if got := l3.Weight(0, Down); got != "model.layers.0.mlp.down_proj.weight" {
		t.Errorf("Weight(0, down) = %q", got)
	}
	// attention_bias turns on q/k/v/o biases for llama, but not for mistral.
	lb, _ := Parse("lb", []byte(`{"model_type":"llama","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":16,"vocab_size":10,"attention_bias":true,"mlp_bias":true}`))
	mb, _ := Parse("mb", []byte(`{"model_type":"mistral","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":16,"vocab_size":10,"attention_bias":true}`))
	for _, r := range Roles {
		if !lb.HasBias(r) {
			t.Errorf("llama attention_bias+mlp_bias: no bias on %s", r)
		}
		if mb.HasBias(r) {
			t.Errorf("mistral: bias on %s", r)
		}
	}
}

// ParseModule inverts Module for every layer and role, and rejects near misses.
func TestParseModule(t *testing.T) {
	c := mustParse(t, "qwen2.5-1.5b.json")
	for l := 0; l < c.Layers; l++ {
		for _, r := range Roles {
			gl, gr, ok := c.ParseModule(c.Module(l, r))
			if !ok || gl != l || gr != r {
				t.Fatalf("ParseModule(Module(%d, %s)) = %d, %s, %v", l, r, gl, gr, ok)
			}
		}
	}
	for _, bad := range []string{
		"model.layers.03.self_attn.q_proj", "model.layers.-1.self_attn.q_proj", "model.layers.+1.self_attn.q_proj",
		"model.layers.28.self_attn.q_proj", // out of range: 28 layers
		"model.layers..self_attn.q_proj", "model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.q_proj",
		"model.embed_tokens", "lm_head", "model.layers.1.self_attn.qkv_proj", "",
	} {
		if l, r, ok := c.ParseModule(bad); ok {
			t.Errorf("ParseModule(%q) = %d, %s, true", bad, l, r)
		}
	}
}

func TestNamesPanicOnBadLayer(t *testing.T) {
	c := mustParse(t, "mistral-7b.json")
	defer func() {
		if r := recover(); r == nil || !strings.HasPrefix(r.(string), "arch:") {
			t.Errorf("recover() = %v, want arch: panic", r)
		}
	}()
	c.Weight(32, Q)
}

func TestSupported(t *testing.T) {
	if got := Supported(); !slices.Equal(got, []string{"llama", "minicpm", "mistral", "qwen2", "qwen3"}) {
		t.Errorf("Supported = %v", got)
	}
}
