package tokenizer

// ByteLevelString writes b in the GPT-2 byte-to-unicode alphabet, the form in
// which byte-level BPE vocabularies store tokens (" the" -> "Ġthe"). Tools
// that generate tokenizer.json files (package synth) use it.
func ByteLevelString(b []byte) string { return byteLevelEncode(string(b)) }
