package synth

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/safetensors"
)

// Spec is the shape of a generated model. Zero KVHeads means Heads (MHA);
// zero HeadDim means Hidden/Heads; empty DType means BF16.
type Spec struct {
	ModelType    string // "llama", "mistral", "qwen2" or "qwen3"
	Hidden       int
	Layers       int
	Heads        int
	KVHeads      int
	HeadDim      int
	Intermediate int
	Vocab        int // including the final special token; at least 257
	Tied         bool
	DType        safetensors.DType
}

var architectures = map[string]string{
	"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
	"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
}

func (s Spec) withDefaults() Spec {
	if s.ModelType == "" {
		s.ModelType = "llama"
	}
	if s.KVHeads == 0 {
		s.KVHeads = s.Heads
	}
	if s.HeadDim == 0 && s.Heads > 0 {
		s.HeadDim = s.Hidden / s.Heads
	}
	if s.DType == "" {
		s.DType = safetensors.BF16
	}
	return s
}

// ConfigJSON is the config.json transformers would write for s.
func (s Spec) ConfigJSON() map[string]any {
	s = s.withDefaults()
	dtype := map[safetensors.DType]string{safetensors.BF16: "bfloat16", safetensors.F16: "float16", safetensors.F32: "float32"}[s.DType]
	return map[string]any{
		"architectures":           []string{architectures[s.ModelType]},
		"model_type":              s.ModelType,
		"hidden_size":             s.Hidden,
		"intermediate_size":       s.Intermediate,
		"num_hidden_layers":       s.Layers,
		"num_attention_heads":     s.Heads,
		"num_key_value_heads":     s.KVHeads,
		"head_dim":                s.HeadDim,
		"vocab_size":              s.Vocab,
		"tie_word_embeddings":     s.Tied,
		"rms_norm_eps":            1e-6,
		"rope_theta":              10000.0,
		"max_position_embeddings": 4096,
		"hidden_act":              "silu",
		"attention_bias":          false,
		"bos_token_id":            s.Vocab - 1,
		"eos_token_id":            s.Vocab - 1,
		"torch_dtype":             dtype,
	}
}

// Config parses s's config.json with the project's own parser, so that every
// tensor name synth uses comes from the architecture descriptors.
func (s Spec) Config() (*arch.Config, error) {
	s = s.withDefaults()
	if _, ok := architectures[s.ModelType]; !ok {
		return nil, fmt.Errorf("synth: model type %q not generated (have llama, mistral, qwen2, qwen3)", s.ModelType)
	}
	if s.Vocab < 257 {
		return nil, fmt.Errorf("synth: vocab %d < 257", s.Vocab)
	}
	data, err := jsonBytes(s.ConfigJSON())
	if err != nil {
		return nil, err
	}
	return arch.Parse("synth config.json", data)
}

// Model is a generated checkpoint held in memory as float32, for small shapes.
// (Benchmark-sized models are streamed to disk by WriteRandomSharded.)
type Model struct {
	Spec   Spec
	Config *arch.Config
	Vocab  [][]byte             // token bytes by id (len Spec.Vocab); nil: no tokenizer
	W      map[string][]float32 // every tensor of Config.Tensors(), row-major
}

// Random generates a model with independent random weights: linear layers
// N(0, 1/in) (the scale of a trained layer's typical singular values),
// embeddings N(0, 1), biases N(0, 0.02^2), norm weights 1.
func Random(spec Spec, seed uint64) (*Model, error) {
	spec = spec.withDefaults()
	cfg, err := spec.Config()
	if err != nil {
		return nil, err
	}
	rng := newRNG(seed)
	m := &Model{Spec: spec, Config: cfg, Vocab: Vocabulary(spec.Vocab), W: map[string][]float32{}}
	for _, t := range cfg.Tensors() {
		m.W[t.Name] = randomTensor(rng, t)
	}
	return m, nil
}

// randomTensor fills one tensor by its role, read off its name and shape.
func randomTensor(rng *rand.Rand, t arch.TensorSpec) []float32 {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	v := make([]float32, n)
	switch {
	case len(t.Shape) == 1 && strings.Contains(t.Name, "norm"):
		for i := range v {
			v[i] = 1
		}
	case len(t.Shape) == 1: // bias
		gaussian(rng, v, 0.02)
	case strings.Contains(t.Name, "embed") || strings.Contains(t.Name, "lm_head"):
		gaussian(rng, v, 1)
	default:
		gaussian(rng, v, 1/math.Sqrt(float64(t.Shape[1])))
	}
	return v
}

// Write stores the model in dir: config.json, tokenizer.json and
// model.safetensors in Spec.DType. dir is created if needed.
func (m *Model) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	if err := writeJSON(filepath.Join(dir, "config.json"), m.Spec.ConfigJSON()); err != nil {
		return err
	}
	if m.Vocab != nil {
		if err := WriteTokenizer(filepath.Join(dir, "tokenizer.json"), m.Vocab); err != nil {
			return err
		}
	}
	tensors := make([]safetensors.Tensor, 0, len(m.W))
	for _, t := range m.Config.Tensors() {
		tensors = append(tensors, safetensors.FromFloat32(t.Name, m.Spec.DType, t.Shape, m.W[t.Name]))
	}
	return safetensors.WriteFile(filepath.Join(dir, safetensors.SingleFile), tensors, map[string]string{"format": "pt"})
}

// Rows returns tensor name as rows x cols, sharing storage.
func (m *Model) shape(name string) (rows, cols int) {
	for _, t := range m.Config.Tensors() {
		if t.Name == name {
			if len(t.Shape) == 1 {
				return 1, t.Shape[0]
			}
			return t.Shape[0], t.Shape[1]
		}
	}
	panic("synth: no tensor " + name)
}

func newRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }

func gaussian(rng *rand.Rand, v []float32, std float64) {
	for i := range v {
		v[i] = float32(rng.NormFloat64() * std)
	}
}

// Load reads a checkpoint directory into memory (small models only): its
// config.json and weights. Vocab stays nil: a loaded model keeps whatever
// tokenizer its directory has, and Write writes none.
func Load(dir string) (*Model, error) {
	cfg, err := arch.Load(dir)
	if err != nil {
		return nil, err
	}
	st, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	spec := Spec{ModelType: cfg.ModelType, Hidden: cfg.Hidden, Layers: cfg.Layers, Heads: cfg.Heads, KVHeads: cfg.KVHeads,
		HeadDim: cfg.HeadDim, Intermediate: cfg.Intermediate, Vocab: cfg.Vocab, Tied: cfg.TiedEmbeddings, DType: safetensors.F32}
	m := &Model{Spec: spec, Config: cfg, W: map[string][]float32{}}
	for _, t := range cfg.Tensors() {
		if m.W[t.Name], err = st.Float32(t.Name); err != nil {
			return nil, err
		}
	}
	return m, nil
}
