package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
)

// Tokenizer is a loaded tokenizer.json. It is read-only after Load and safe for
// concurrent use.
type Tokenizer struct {
	path string

	// vocab maps a token string (model vocabulary and added tokens, as the
	// JavaScript port does) to its id; tokens holds the inverse, "" where an id
	// is unused.
	vocab  map[string]int
	tokens []string

	added     []AddedToken
	addedByID map[int]int    // id -> index into added
	addedByS  map[string]int // content (and normalized content) -> index into added

	byteLevel    bool   // tokens are stored with the GPT-2 byte-to-unicode table
	metaspace    string // SentencePiece space replacement, usually "▁"
	byteFallback bool   // "<0xNN>" tokens stand for raw bytes

	model        *bpeModel
	norm         normalizer   // nil when the file has none
	pre          preTokenizer // nil when the file has none
	post         postProcessor
	rawSplitter  *splitter // added tokens matched on raw text
	normSplitter *splitter // added tokens matched on normalized text
}

// AddedToken is one entry of tokenizer.json "added_tokens".
type AddedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized *bool  `json:"normalized"`
	Special    bool   `json:"special"`
}

// normalized reports whether the token is matched on normalized text; like
// the tokenizers library it defaults to !Special.
func (a AddedToken) normalized() bool {
	if a.Normalized != nil {
		return *a.Normalized
	}
	return !a.Special
}

// fileJSON is the subset of tokenizer.json that lorasync reads. Pipeline
// components stay raw until their constructors parse them.
type fileJSON struct {
	AddedTokens   []AddedToken    `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         json.RawMessage `json:"model"`
}

// Load reads and validates a tokenizer.json file. Every error names the file.
func Load(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	t.path = path
	return t, nil
}

// Parse builds a Tokenizer from the contents of a tokenizer.json file.
func Parse(data []byte) (*Tokenizer, error) {
	var f fileJSON
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parse tokenizer.json: %w", err)
	}
	if isNull(f.Model) {
		return nil, fmt.Errorf("no \"model\" section")
	}
	m, err := parseBPE(f.Model)
	if err != nil {
		return nil, err
	}
	t := &Tokenizer{
		model:        m,
		byteFallback: m.byteFallback,
		metaspace:    "▁",
		addedByID:    make(map[int]int),
		addedByS:     make(map[string]int),
	}
	if t.norm, err = parseNormalizer(f.Normalizer); err != nil {
		return nil, fmt.Errorf("normalizer: %w", err)
	}
	if t.pre, err = parsePreTokenizer(f.PreTokenizer); err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	if t.post, err = parsePostProcessor(f.PostProcessor); err != nil {
		return nil, fmt.Errorf("post_processor: %w", err)
	}
	dec, err := parseDecoder(f.Decoder)
	if err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	t.byteLevel = dec.byteLevel || preIsByteLevel(t.pre)
	if dec.metaspace != "" {
		t.metaspace = dec.metaspace
	}
	t.byteFallback = t.byteFallback || dec.byteFallback

	t.vocab = make(map[string]int, len(m.vocab)+len(f.AddedTokens))
	maxID := -1
	for s, id := range m.vocab {
		if id < 0 {
			return nil, fmt.Errorf("model.vocab: token %q has negative id %d", s, id)
		}
		t.vocab[s] = id
		maxID = max(maxID, id)
	}
	var rawAdded, normAdded []string
	for i, a := range f.AddedTokens {
		if a.ID < 0 || a.Content == "" {
			return nil, fmt.Errorf("added_tokens[%d]: bad token %q with id %d", i, a.Content, a.ID)
		}
		t.added = append(t.added, a)
		t.addedByID[a.ID] = i
		t.addedByS[a.Content] = i
		t.vocab[a.Content] = a.ID
		maxID = max(maxID, a.ID)
		if a.normalized() && t.norm != nil {
			nc := t.norm.normalize(a.Content)
			t.addedByS[nc] = i
			normAdded = append(normAdded, nc)
		} else {
			rawAdded = append(rawAdded, a.Content)
		}
	}
	t.tokens = make([]string, maxID+1)
	for s, id := range m.vocab {
		t.tokens[id] = s
	}
	for _, a := range t.added {
		t.tokens[a.ID] = a.Content
	}
	t.rawSplitter = newSplitter(rawAdded)
	t.normSplitter = newSplitter(normAdded)
	if err := t.post.resolve(t.vocab); err != nil {
		return nil, fmt.Errorf("post_processor: %w", err)
	}
	return t, nil
}

// Path is the file the tokenizer was loaded from ("" after Parse).
func (t *Tokenizer) Path() string { return t.path }

// VocabSize is one more than the largest token id, counting added tokens (the
// tokenizers library's get_vocab_size(with_added_tokens=true)). An embedding
// matrix may have more rows than this (padding), never fewer.
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// Token is the stored string of id (as in tokenizer.json, "Ġthe" or "▁the").
func (t *Tokenizer) Token(id int) (string, bool) {
	if id < 0 || id >= len(t.tokens) || t.tokens[id] == "" {
		return "", false
	}
	return t.tokens[id], true
}

// ID is the id of a stored token string.
func (t *Tokenizer) ID(token string) (int, bool) {
	id, ok := t.vocab[token]
	return id, ok
}

// ByteLevel reports whether tokens are stored with the GPT-2 byte-to-unicode
// table (otherwise SentencePiece-style "▁" and "<0xNN>").
func (t *Tokenizer) ByteLevel() bool { return t.byteLevel }

// IsSpecial reports whether id is an added token marked special.
func (t *Tokenizer) IsSpecial(id int) bool {
	i, ok := t.addedByID[id]
	return ok && t.added[i].Special
}

// AddedTokens returns the added tokens sorted by id.
func (t *Tokenizer) AddedTokens() []AddedToken {
	out := append([]AddedToken(nil), t.added...)
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// isNull reports whether a raw JSON value is absent or null.
func isNull(r json.RawMessage) bool {
	return len(r) == 0 || string(r) == "null"
}

// parseSequence parses the steps of a {"type": "Sequence", key: [...]}
// pipeline component with parse, dropping steps that parse to nil (null).
// Errors name the failing step's index.
func parseSequence[T any](r json.RawMessage, key string, parse func(json.RawMessage) (T, error)) ([]T, error) {
	var c map[string]json.RawMessage
	if err := json.Unmarshal(r, &c); err != nil {
		return nil, fmt.Errorf("Sequence: %w", err)
	}
	var steps []json.RawMessage
	if err := json.Unmarshal(c[key], &steps); err != nil && !isNull(c[key]) {
		return nil, fmt.Errorf("Sequence: %s: %w", key, err)
	}
	var out []T
	for i, sub := range steps {
		x, err := parse(sub)
		if err != nil {
			return nil, fmt.Errorf("Sequence[%d]: %w", i, err)
		}
		if any(x) != nil {
			out = append(out, x)
		}
	}
	return out, nil
}

// typeOf reads the "type" field of a pipeline component.
func typeOf(r json.RawMessage) (string, error) {
	var h struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(r, &h); err != nil {
		return "", err
	}
	if h.Type == "" {
		return "", fmt.Errorf("component without \"type\": %.80s", r)
	}
	return h.Type, nil
}
