// Package peft reads, validates and writes PEFT LoRA adapters in the Hugging
// Face format: adapter_config.json plus adapter_model.safetensors.
//
// # Layout
//
// For a linear layer W (out x in) of the base model at module path key (e.g.
// "model.layers.3.self_attn.q_proj"), the adapter stores
// "base_model.model.<key>.lora_A.weight" A (r x in) and
// "base_model.model.<key>.lora_B.weight" B (out x r); the layer's update is
// dW = s B A with s = lora_alpha/r, or lora_alpha/sqrt(r) with use_rslora.
// rank_pattern and alpha_pattern override r and lora_alpha per module, matched as
// PEFT matches them (see [Config.RankFor]).
//
// # Reading
//
// [Load] parses the config (preserving keys it does not know, so a rewrite keeps
// them), reads every LoRA pair as float32, and refuses what it cannot migrate
// faithfully, with an error naming the file and the module: DoRA, peft types
// other than LORA, pickle-only adapter_model.bin, fan_in_fan_out, bias training,
// modules_to_save, tensors of modules no architecture descriptor knows, A/B rank
// mismatches and missing halves. [Adapter.Check] then verifies every module
// against a base model's shapes.
//
// # Writing
//
// [Write] writes an adapter directory atomically: all files (config, weights,
// lorasync.json provenance, README.md model card) go to a temp directory next to
// the target, are fsynced, and the directory is renamed into place (an existing
// target is moved aside first and removed after).
package peft
