package arch

import (
	"slices"
	"strconv"
	"strings"
)

// Role names one of the seven linear layers of a decoder block; the string is the
// module's last path segment, as PEFT target_modules spell it.
type Role string

// The linear-layer roles of a llama-style decoder block.
const (
	Q    Role = "q_proj"
	K    Role = "k_proj"
	V    Role = "v_proj"
	O    Role = "o_proj"
	Gate Role = "gate_proj"
	Up   Role = "up_proj"
	Down Role = "down_proj"
)

// Roles lists every role in block order.
var Roles = []Role{Q, K, V, O, Gate, Up, Down}

// Attention reports whether r belongs to self-attention (q/k/v/o).
func (r Role) Attention() bool { return r == Q || r == K || r == V || r == O }

// Valid reports whether r is one of Roles.
func (r Role) Valid() bool { return slices.Contains(Roles, r) }

// LayerPlaceholder is replaced by the decimal layer index in name templates.
const LayerPlaceholder = "{layer}"

// Descriptor describes one architecture family: how its tensors are named and
// which optional parts exist. Templates contain LayerPlaceholder where the layer
// index goes. Module templates name an nn.Linear module without the ".weight" /
// ".bias" suffix (the form PEFT adapter keys use).
type Descriptor struct {
	ModelType string

	Embed     string // input embedding, Vocab x Hidden
	LMHead    string // output projection, Vocab x Hidden (absent when tied)
	FinalNorm string // final RMSNorm weight, Hidden

	InputNorm    string // per-layer RMSNorm before attention, Hidden
	PostAttnNorm string // per-layer RMSNorm before the MLP, Hidden
	QNorm, KNorm string // per-head RMSNorm on q and k, HeadDim; empty when absent

	Modules map[Role]string // per-layer linear modules

	// AlwaysBias lists roles that carry a bias regardless of config (qwen2 q/k/v).
	AlwaysBias []Role
	// AttentionBiasKey: the family honours config "attention_bias" (bias on q/k/v/o).
	AttentionBiasKey bool
	// MLPBiasKey: the family honours config "mlp_bias" (bias on gate/up/down).
	MLPBiasKey bool

	// Defaults applied when config.json omits the field, as the family's
	// transformers Config class does.
	TiedDefault  bool
	EpsDefault   float64
	ThetaDefault float64

	// MuP: the family reads MiniCPM's scale_emb, dim_model_base and scale_depth.
	MuP bool
	// Ignore lists name suffixes of checkpoint tensors that carry no weights
	// (e.g. rotary inv_freq buffers saved by old transformers).
	Ignore []string
}

// llamaModules are the module templates shared by every llama-format family.
var llamaModules = map[Role]string{
	Q:    "model.layers.{layer}.self_attn.q_proj",
	K:    "model.layers.{layer}.self_attn.k_proj",
	V:    "model.layers.{layer}.self_attn.v_proj",
	O:    "model.layers.{layer}.self_attn.o_proj",
	Gate: "model.layers.{layer}.mlp.gate_proj",
	Up:   "model.layers.{layer}.mlp.up_proj",
	Down: "model.layers.{layer}.mlp.down_proj",
}

// llamaLike returns a descriptor with llama tensor names and defaults.
func llamaLike(modelType string) *Descriptor {
	return &Descriptor{
		ModelType:    modelType,
		Embed:        "model.embed_tokens.weight",
		LMHead:       "lm_head.weight",
		FinalNorm:    "model.norm.weight",
		InputNorm:    "model.layers.{layer}.input_layernorm.weight",
		PostAttnNorm: "model.layers.{layer}.post_attention_layernorm.weight",
		Modules:      llamaModules,
		EpsDefault:   1e-6,
		ThetaDefault: 10000,
		Ignore:       []string{".rotary_emb.inv_freq"},
	}
}

// descriptors is the table of supported families, keyed by model_type.
var descriptors = func() map[string]*Descriptor {
	llama := llamaLike("llama")
	llama.AttentionBiasKey = true // LlamaAttention: bias=config.attention_bias on q/k/v/o
	llama.MLPBiasKey = true       // LlamaMLP: bias=config.mlp_bias

	mistral := llamaLike("mistral") // MistralAttention/MLP: never biased

	qwen2 := llamaLike("qwen2")
	qwen2.AlwaysBias = []Role{Q, K, V} // Qwen2Attention: q/k/v bias=True, o bias=False

	qwen3 := llamaLike("qwen3")
	qwen3.QNorm = "model.layers.{layer}.self_attn.q_norm.weight"
	qwen3.KNorm = "model.layers.{layer}.self_attn.k_norm.weight"
	qwen3.AttentionBiasKey = true // Qwen3Attention: bias=config.attention_bias

	minicpm := llamaLike("minicpm")
	minicpm.AttentionBiasKey = true
	minicpm.TiedDefault = true // MiniCPMConfig(tie_word_embeddings=True)
	minicpm.MuP = true

	m := map[string]*Descriptor{}
	for _, d := range []*Descriptor{llama, mistral, qwen2, qwen3, minicpm} {
		m[d.ModelType] = d
	}
	return m
}()

// Lookup returns the descriptor for a config.json model_type.
func Lookup(modelType string) (*Descriptor, bool) {
	d, ok := descriptors[modelType]
	return d, ok
}

// Supported lists the supported model_type values, sorted.
func Supported() []string {
	out := make([]string, 0, len(descriptors))
	for k := range descriptors {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// expand substitutes the layer index into a template.
func expand(tmpl string, layer int) string {
	return strings.ReplaceAll(tmpl, LayerPlaceholder, strconv.Itoa(layer))
}

// Module is the module path of a linear layer, e.g.
// "model.layers.3.self_attn.q_proj". It panics on an unknown role.
func (d *Descriptor) Module(layer int, role Role) string {
	tmpl, ok := d.Modules[role]
	if !ok {
		panic("arch: descriptor " + d.ModelType + " has no role " + string(role))
	}
	return expand(tmpl, layer)
}

// ParseModule maps a module path (as produced by Module) back to its layer and
// role. ok is false when the path matches no role template of d.
func (d *Descriptor) ParseModule(path string) (layer int, role Role, ok bool) {
	for _, r := range Roles {
		tmpl, has := d.Modules[r]
		if !has {
			continue
		}
		pre, post, found := strings.Cut(tmpl, LayerPlaceholder)
		if !found || !strings.HasPrefix(path, pre) || !strings.HasSuffix(path, post) || len(path) < len(pre)+len(post)+1 {
			continue
		}
		mid := path[len(pre) : len(path)-len(post)]
		n, err := strconv.Atoi(mid)
		if err != nil || n < 0 || strconv.Itoa(n) != mid { // reject "+3", "03"
			continue
		}
		return n, r, true
	}
	return 0, "", false
}

// hasBias reports whether role r carries a bias under the given config flags.
func (d *Descriptor) hasBias(r Role, attentionBias, mlpBias bool) bool {
	switch {
	case slices.Contains(d.AlwaysBias, r):
		return true
	case r.Attention():
		return d.AttentionBiasKey && attentionBias
	default:
		return d.MLPBiasKey && mlpBias
	}
}
