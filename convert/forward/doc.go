// Package forward is a CPU forward pass for the decoder-only families lorasync
// migrates (llama, mistral, qwen2, qwen3, minicpm), used to collect the
// per-layer hidden states that CKA layer mapping (LoRASuite step 2) compares.
//
// It computes in float32 from F32/F16/BF16 safetensors weights, converting one
// decoder layer at a time (Walk runs every sequence through a layer before
// loading the next, into one buffer reused by every layer), so a model never
// sits in memory whole. Matrix products go through gonum's blas32 (Sgemm),
// which the openblas build tag routes to OpenBLAS via convert/linalg, on all
// token rows of a batch at once; they are nearly all of a pass's time. The
// rest runs on every core too: RMSNorm and SwiGLU split by rows, attention by
// sequence (with single-threaded BLAS), weight conversion by tensor. SwiGLU's
// exponential is exp32, a float32 exp within 1 ulp; the openblas build
// evaluates it in a vectorised C loop.
//
// The math follows Hugging Face transformers' eager implementation:
// RMSNorm x * rsqrt(mean(x^2) + eps) * weight in float32; rotary embeddings
// with the rotate_half convention, rope_theta and rope_scaling (linear,
// llama3); grouped-query attention (repeat_kv); causal mask and Mistral's
// sliding window; SwiGLU MLP; qwen2 q/k/v biases; qwen3 per-head q_norm/k_norm
// before RoPE; tied embeddings; MiniCPM's muP scales. On the tiny-llama fixture
// written by transformers it agrees to better than 1e-5 (max-abs-diff over
// max-abs-reference) at every stage.
//
// Weight matrices are out x in, row-major (PyTorch layout); activations are
// s x d, row-major, one row per token.
package forward
