// Package convert migrates a PEFT LoRA adapter from the base model it was
// trained on to an upgraded base model, with the LoRASuite method (see
// docs/lorasuite-method.md in the shared docs, and package lorasuite for the
// math).
//
// Convert takes directories (old base, new base, adapter) and writes a new
// adapter directory. The work splits in two, as the method does:
//
//   - the pair analysis depends only on the two base models (transfer matrix
//     W_x from the shared vocabulary, layer map, head maps and per-head
//     transfer blocks). It is computed once per (old, new, options) and cached
//     on disk under Options.CacheDir, keyed by both models' content — a Hub
//     commit when the model directory is a Hub snapshot, else the sha256 of
//     its files — so migrating N adapters of one pair costs one analysis and N
//     cheap projections;
//   - the projection maps one adapter through the analysis, keeps every delta
//     factored (rank <= r exactly) and writes it with a model card and a
//     provenance record (lorasync.json).
//
// Weights are streamed layer by layer from mmap'ed safetensors files: no step
// holds a whole model in float32. File formats live in sub-packages
// (safetensors, arch, peft, tokenizer); nothing here imports net/http.
package convert
