package synth

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/lorasync/lorasync/convert/tokenizer"
	"github.com/lorasync/lorasync/internal/atomicfile"
)

// EndOfText is the one special token every generated vocabulary ends with.
const EndOfText = "<|endoftext|>"

// letters orders the alphabet roughly by English frequency, so the first
// generated words look a little like text.
const letters = "etaoinshrdlucmfwypvbgkqjxz"

// Vocabulary returns n distinct tokens as raw bytes: the 256 single bytes,
// then words grown breadth-first (" e", " t", ..., "ee", "et", ..., " ee", ...)
// so that every multi-byte token's prefix is an earlier token — which makes
// the merges of a BPE tokenizer well formed. The last token is EndOfText.
// n must be at least 257.
func Vocabulary(n int) [][]byte {
	if n < 257 {
		panic(fmt.Sprintf("synth: vocabulary of %d tokens, need at least 257", n))
	}
	vocab := make([][]byte, 0, n)
	for b := 0; b < 256; b++ {
		vocab = append(vocab, []byte{byte(b)})
	}
	var frontier [][]byte
	for _, c := range []byte(" " + letters) {
		frontier = append(frontier, []byte{c})
	}
	for len(vocab) < n-1 {
		var next [][]byte
		for _, p := range frontier {
			for _, c := range []byte(letters) {
				if len(vocab) == n-1 {
					break
				}
				w := append(append([]byte{}, p...), c)
				vocab = append(vocab, w)
				next = append(next, w)
			}
		}
		frontier = next
	}
	return append(vocab, []byte(EndOfText))
}

// WriteTokenizer writes a byte-level BPE tokenizer.json (the Qwen2/GPT-2
// layout) whose id i is vocab[i]. The last token is registered as a special
// added token. Merges join each multi-byte token's prefix with its last byte,
// in generation order (see Vocabulary), whatever the ids.
func WriteTokenizer(path string, vocab [][]byte) error {
	n := len(vocab)
	ids := make(map[string]int, n)
	var words [][]byte
	for id, tok := range vocab[:n-1] {
		s := tokenizer.ByteLevelString(tok)
		if _, dup := ids[s]; dup {
			return fmt.Errorf("synth: %s: token %q appears twice", path, tok)
		}
		ids[s] = id
		if len(tok) > 1 {
			words = append(words, tok)
		}
	}
	// Merge ranks follow the canonical generation order, not the ids, so a
	// renumbered vocabulary (an upgrade) still splits text the same way.
	rank := map[string]int{}
	for i, w := range Vocabulary(n + 1) {
		rank[string(w)] = i
	}
	sort.SliceStable(words, func(i, j int) bool { return rank[string(words[i])] < rank[string(words[j])] })
	merges := make([][2]string, 0, len(words))
	for _, tok := range words {
		merges = append(merges, [2]string{
			tokenizer.ByteLevelString(tok[:len(tok)-1]),
			tokenizer.ByteLevelString(tok[len(tok)-1:]),
		})
	}
	special := string(vocab[n-1])
	ids[special] = n - 1
	byteLevel := map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
	doc := map[string]any{
		"version":    "1.0",
		"truncation": nil,
		"padding":    nil,
		"added_tokens": []map[string]any{{
			"id": n - 1, "content": special, "single_word": false, "lstrip": false,
			"rstrip": false, "normalized": false, "special": true,
		}},
		"normalizer":     nil,
		"pre_tokenizer":  byteLevel,
		"post_processor": byteLevel,
		"decoder":        byteLevel,
		"model": map[string]any{
			"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": nil,
			"end_of_word_suffix": nil, "fuse_unk": false, "byte_fallback": false,
			"ignore_merges": false, "vocab": ids, "merges": merges,
		},
	}
	return writeJSON(path, doc)
}

// writeJSON writes v as indented JSON, atomically (temp file + rename).
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("synth: %s: %w", path, err)
	}
	if err := atomicfile.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	return nil
}

func jsonBytes(v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("synth: %w", err)
	}
	return data, nil
}
