// Package arch reads a Hugging Face config.json and describes the decoder-only
// transformer it configures: sizes, normalisation and rotary settings, and the
// name and shape of every weight tensor.
//
// Supported families (model_type): llama, mistral, qwen2 (biases on q/k/v),
// qwen3 (q_norm/k_norm, explicit head_dim) and minicpm in its llama-format
// checkpoint (whose muP scales scale_emb, dim_model_base and scale_depth are kept
// in [Config] for the forward pass).
//
// Each family is one [Descriptor] in a table: tensor name templates for every
// role, which biases and norms exist, and the family's defaults. Algorithms ask a
// [Config] for names (Weight, Bias, QNorm, ...) and shapes ([Config.Shape]), so a
// new family (gemma, a fused-QKV model) is a new table entry, not a code change.
//
// Shapes follow PyTorch nn.Linear: a weight is out x in, row-major. With hidden
// size d, H attention heads, G key/value heads, head_dim h and intermediate size
// I: q_proj is H*h x d, k_proj and v_proj G*h x d, o_proj d x H*h, gate_proj and
// up_proj I x d, down_proj d x I.
package arch
