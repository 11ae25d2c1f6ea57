// Package synth generates small but structurally real checkpoints, tokenizers
// and PEFT adapters for tests, benchmarks and `lorasync demo`.
//
// Everything it writes goes through the project's own writers and is read
// back by the same code that reads real Hugging Face files: config.json as
// transformers writes it, model.safetensors (or shards with an index),
// a byte-level BPE tokenizer.json, and adapter_config.json +
// adapter_model.safetensors.
//
// Upgrade derives a NEW base from an OLD one with a planted truth — the hidden
// space carried by a matrix P with orthonormal rows (a wider model), heads
// permuted inside layers, layers inserted, KV heads merged (MHA -> GQA), the
// vocabulary reordered and extended — so tests can check that LoRASuite
// recovers what was planted.
//
// All randomness comes from a seeded PCG, so the same seed gives the same
// bytes on every machine.
package synth
