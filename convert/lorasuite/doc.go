// Package lorasuite implements the LoRASuite migration of a LoRA adapter from an
// old base model to an upgraded one (Li et al., arXiv 2505.13515), as restated
// in docs/lorasuite-method.md, on in-memory matrices. Nothing here reads files:
// the caller (package convert) streams weights in and persists results.
//
// The work splits in two:
//
//   - Analyze computes a PairAnalysis from the two base models only: the hidden
//     transfer matrix W_x (step 1, FitTransfer or TransferAccumulator), the
//     layer pairs (step 2: LinearLayerMap, ExplicitLayerMap, DPLayerMap), and
//     per layer pair the attention-head assignment (step 3: factored
//     similarity + Assign) and the per-head transfer blocks with their fit
//     residuals and gains (step 4). It is the expensive part (O(d^3) per
//     layer) and reads one old and one new layer at a time from a
//     LayerSource. A PairAnalysis is plain exported data: persist it with gob.
//   - Project maps one adapter's attention modules through a PairAnalysis. It
//     reads no base weights and keeps every delta factored (rank <= r
//     exactly), finishing with Refactor (thin QRs + an r x r SVD). MLP modules
//     need the base MLP weights and go through ProjectMLP.
//
// Conventions: weights are PyTorch/safetensors layout, out x in, row-major.
// Hidden states are row vectors; W_x (d_o x d_n) maps an old hidden row x_o to
// x_n ~ x_o W_x. A LoRA delta is dW = s B A with A (r x in), B (out x r); s is
// never changed here, so an adapter written with the same r and lora_alpha
// reproduces the migrated delta. "(step k)" refers to docs/lorasuite-method.md.
//
// Precision: base weights and adapter factors arrive as float32 (bf16 in the
// files). The few O(d^3) products run in float32 by default (Options.Float64
// and ProjectOptions.Float64 switch them to float64); Gram matrices, h x h
// blocks, solves and the transfer-matrix fit always use float64.
//
// Threads: the big products run on the BLAS thread pool; the phases made of
// many small calls (Analyze's per-head solves, Project's per-module head
// blocks and Refactor) fan out over goroutines under linalg.SerialBLAS, so
// that OpenBLAS does not spread each 128 x 128 call over threads that spin
// against the other goroutines' calls.
//
// Programmer errors (shape mismatches between matrices this package built)
// panic with a "lorasuite:" prefix; bad input data (wrong tensor sizes,
// invalid layer maps, non-finite values, singular systems) returns errors that
// name the layer, role or head concerned.
package lorasuite
