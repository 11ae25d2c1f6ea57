package arch

import "fmt"

// Tensor names and shapes of a configured model. Layer indices run 0..Layers-1;
// the methods panic (with an "arch:" message) on an index out of range or an
// unknown role, both programmer errors.

func (c *Config) checkLayer(layer int) {
	if layer < 0 || layer >= c.Layers {
		panic(fmt.Sprintf("arch: layer %d out of range [0, %d)", layer, c.Layers))
	}
}

// Module is the module path of a linear layer, "model.layers.3.self_attn.q_proj".
func (c *Config) Module(layer int, role Role) string {
	c.checkLayer(layer)
	return c.Desc.Module(layer, role)
}

// Weight is the weight tensor of a linear layer (Shape(role), out x in), e.g.
// "model.layers.3.self_attn.q_proj.weight".
func (c *Config) Weight(layer int, role Role) string { return c.Module(layer, role) + ".weight" }

// Bias is the bias tensor of a linear layer (length out), or "" when the
// layer has none in this config.
func (c *Config) Bias(layer int, role Role) string {
	if !c.HasBias(role) {
		c.checkLayer(layer)
		return ""
	}
	return c.Module(layer, role) + ".bias"
}

// HasBias reports whether the linear layers of role carry a bias.
func (c *Config) HasBias(role Role) bool {
	if !role.Valid() {
		panic("arch: unknown role " + string(role))
	}
	return c.Desc.hasBias(role, c.AttentionBias, c.MLPBias)
}

// Embed is the input embedding tensor, Vocab x Hidden.
func (c *Config) Embed() string { return c.Desc.Embed }

// LMHead is the tensor the output logits use, Vocab x Hidden: the embedding
// itself when TiedEmbeddings.
func (c *Config) LMHead() string {
	if c.TiedEmbeddings {
		return c.Desc.Embed
	}
	return c.Desc.LMHead
}

// FinalNorm is the final RMSNorm weight, length Hidden.
func (c *Config) FinalNorm() string { return c.Desc.FinalNorm }

// InputNorm is the RMSNorm weight applied before attention, length Hidden.
func (c *Config) InputNorm(layer int) string {
	c.checkLayer(layer)
	return expand(c.Desc.InputNorm, layer)
}

// PostAttnNorm is the RMSNorm weight applied before the MLP, length Hidden.
func (c *Config) PostAttnNorm(layer int) string {
	c.checkLayer(layer)
	return expand(c.Desc.PostAttnNorm, layer)
}

// QNorm is the per-head RMSNorm weight on queries (length HeadDim), or "" when
// the family has none (all but qwen3).
func (c *Config) QNorm(layer int) string {
	c.checkLayer(layer)
	if !c.QKNorm {
		return ""
	}
	return expand(c.Desc.QNorm, layer)
}

// KNorm is the per-head RMSNorm weight on keys (length HeadDim), or "".
func (c *Config) KNorm(layer int) string {
	c.checkLayer(layer)
	if !c.QKNorm {
		return ""
	}
	return expand(c.Desc.KNorm, layer)
}

// ParseModule maps a module path such as "model.layers.3.self_attn.q_proj" to
// its layer and role; ok is false for paths that are not a linear layer of this
// model (unknown template or layer out of range).
func (c *Config) ParseModule(path string) (layer int, role Role, ok bool) {
	layer, role, ok = c.Desc.ParseModule(path)
	if !ok || layer >= c.Layers {
		return 0, "", false
	}
	return layer, role, true
}

// Shape is the (out, in) shape of the weight of role:
// q_proj Heads*HeadDim x Hidden; k_proj, v_proj KVHeads*HeadDim x Hidden;
// o_proj Hidden x Heads*HeadDim; gate_proj, up_proj Intermediate x Hidden;
// down_proj Hidden x Intermediate.
func (c *Config) Shape(role Role) (out, in int) {
	switch role {
	case Q:
		return c.Heads * c.HeadDim, c.Hidden
	case K, V:
		return c.KVHeads * c.HeadDim, c.Hidden
	case O:
		return c.Hidden, c.Heads * c.HeadDim
	case Gate, Up:
		return c.Intermediate, c.Hidden
	case Down:
		return c.Hidden, c.Intermediate
	}
	panic("arch: unknown role " + string(role))
}

// TensorSpec is one tensor a checkpoint of this config must hold.
type TensorSpec struct {
	Name  string
	Shape []int
}

// Tensors lists every tensor the checkpoint must contain, in a stable order:
// embedding, then per layer the norms, linear weights and biases, then the final
// norm and (unless tied) lm_head.
func (c *Config) Tensors() []TensorSpec {
	specs := []TensorSpec{{c.Embed(), []int{c.Vocab, c.Hidden}}}
	for l := 0; l < c.Layers; l++ {
		specs = append(specs,
			TensorSpec{c.InputNorm(l), []int{c.Hidden}},
			TensorSpec{c.PostAttnNorm(l), []int{c.Hidden}})
		if c.QKNorm {
			specs = append(specs,
				TensorSpec{c.QNorm(l), []int{c.HeadDim}},
				TensorSpec{c.KNorm(l), []int{c.HeadDim}})
		}
		for _, r := range Roles {
			out, in := c.Shape(r)
			specs = append(specs, TensorSpec{c.Weight(l, r), []int{out, in}})
			if b := c.Bias(l, r); b != "" {
				specs = append(specs, TensorSpec{b, []int{out}})
			}
		}
	}
	specs = append(specs, TensorSpec{c.FinalNorm(), []int{c.Hidden}})
	if !c.TiedEmbeddings {
		specs = append(specs, TensorSpec{c.Desc.LMHead, []int{c.Vocab, c.Hidden}})
	}
	return specs
}
