package tokenizer

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// byteToRune is the GPT-2 byte-to-unicode table (openai/gpt-2 encoder.py
// bytes_to_unicode): printable Latin-1 bytes map to themselves, the other 68
// bytes to U+0100 upwards in byte order, so " " is "Ġ" (U+0120) and "\n" is
// "Ċ" (U+010A). runeToByte is its inverse.
var (
	byteToRune [256]rune
	runeToByte = make(map[rune]byte, 256)
)

func init() {
	n := 0
	for b := 0; b < 256; b++ {
		printable := (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
		if printable {
			byteToRune[b] = rune(b)
		} else {
			byteToRune[b] = rune(256 + n)
			n++
		}
		runeToByte[byteToRune[b]] = byte(b)
	}
}

// byteLevelEncode writes every byte of s as its byte-to-unicode rune.
func byteLevelEncode(s string) string {
	var sb strings.Builder
	sb.Grow(2 * len(s))
	for i := 0; i < len(s); i++ {
		sb.WriteRune(byteToRune[s[i]])
	}
	return sb.String()
}

// byteLevelDecode inverts byteLevelEncode; ok is false when s holds a rune
// outside the table.
func byteLevelDecode(s string) ([]byte, bool) {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		b, ok := runeToByte[r]
		if !ok {
			return nil, false
		}
		out = append(out, b)
	}
	return out, true
}

// parseByteFallback reads a "<0xNN>" token.
func parseByteFallback(s string) (byte, bool) {
	if len(s) != 6 || !strings.HasPrefix(s, "<0x") || s[5] != '>' {
		return 0, false
	}
	var v byte
	for _, c := range s[3:5] {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = byte(c - '0')
		case c >= 'A' && c <= 'F':
			d = byte(c-'A') + 10
		case c >= 'a' && c <= 'f':
			d = byte(c-'a') + 10
		default:
			return 0, false
		}
		v = v<<4 | d
	}
	return v, true
}

// TokenBytes returns the bytes token id decodes to on its own: byte-level
// tokens through the inverse GPT-2 table, SentencePiece tokens with "▁" read
// as a space and "<0xNN>" as that byte, added tokens as their content. ok is
// false for an unused id and for a byte-level token with a rune outside the
// table. The leading-space strip that SentencePiece decoders apply to the
// first token of a text is not applied: "▁the" is " the".
func (t *Tokenizer) TokenBytes(id int) ([]byte, bool) {
	s, ok := t.Token(id)
	if !ok {
		return nil, false
	}
	if _, added := t.addedByID[id]; added {
		return []byte(s), true
	}
	return t.decodeToken(s)
}

// decodeToken is TokenBytes for a model-vocabulary string.
func (t *Tokenizer) decodeToken(s string) ([]byte, bool) {
	if t.byteLevel {
		return byteLevelDecode(s)
	}
	if t.byteFallback {
		if b, ok := parseByteFallback(s); ok {
			return []byte{b}, true
		}
	}
	if !utf8.ValidString(s) {
		return nil, false
	}
	return []byte(strings.ReplaceAll(s, t.metaspace, " ")), true
}

// isByteFallback reports whether id is a "<0xNN>" byte-fallback token.
func (t *Tokenizer) isByteFallback(id int) bool {
	if t.byteLevel || !t.byteFallback {
		return false
	}
	_, ok := parseByteFallback(t.tokens[id])
	return ok
}

// SharedVocab matches the vocabularies of old and new by decoded bytes
// (TokenBytes) and returns the matched ids, one-to-one, ordered by old id:
// oldIDs[k] in old and newIDs[k] in new decode to the same bytes. Special added
// tokens and tokens without bytes never match.
//
// When several tokens of one vocabulary decode to the same bytes (Llama-2's
// "<0x41>" and "A"), the representative is the token the encoder emits for
// those bytes in ordinary text: a regular token is preferred over a
// byte-fallback token, and among equals the lowest id wins.
func SharedVocab(old, new *Tokenizer) (oldIDs, newIDs []int) {
	om := old.bytesIndex()
	nm := new.bytesIndex()
	pairs := make([][2]int, 0, min(len(om), len(nm)))
	for b, oid := range om {
		if nid, ok := nm[b]; ok {
			pairs = append(pairs, [2]int{oid, nid})
		}
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i][0] < pairs[j][0] })
	oldIDs = make([]int, len(pairs))
	newIDs = make([]int, len(pairs))
	for k, p := range pairs {
		oldIDs[k], newIDs[k] = p[0], p[1]
	}
	return oldIDs, newIDs
}

// bytesIndex maps decoded bytes to the representative id (see SharedVocab).
func (t *Tokenizer) bytesIndex() map[string]int {
	idx := make(map[string]int, len(t.tokens))
	for id := range t.tokens {
		if t.IsSpecial(id) {
			continue
		}
		b, ok := t.TokenBytes(id)
		if !ok || len(b) == 0 {
			continue
		}
		key := string(b)
		prev, seen := idx[key]
		if !seen || t.prefer(id, prev) {
			idx[key] = id
		}
	}
	return idx
}

// prefer reports whether id a is a better representative than b for the same
// bytes: regular before byte-fallback, then lower id.
func (t *Tokenizer) prefer(a, b int) bool {
	fa, fb := t.isByteFallback(a), t.isByteFallback(b)
	if fa != fb {
		return fb
	}
	return a < b
}

// decoderInfo is what TokenBytes needs from the "decoder" section.
type decoderInfo struct {
	byteLevel    bool
	byteFallback bool
	metaspace    string // replacement char of a Metaspace or Replace("▁"," ") step
}

// parseDecoder walks the decoder section (recursing into Sequence). Decoding
// whole sequences is not implemented; unknown decoder types are accepted
// because only the token-level facts above matter here.
func parseDecoder(r json.RawMessage) (decoderInfo, error) {
	var d decoderInfo
	if isNull(r) {
		return d, nil
	}
	var walk func(json.RawMessage) error
	walk = func(r json.RawMessage) error {
		typ, err := typeOf(r)
		if err != nil {
			return err
		}
		switch typ {
		case "ByteLevel":
			d.byteLevel = true
		case "ByteFallback":
			d.byteFallback = true
		case "Metaspace":
			var c struct {
				Replacement string `json:"replacement"`
			}
			if err := json.Unmarshal(r, &c); err != nil {
				return fmt.Errorf("Metaspace: %w", err)
			}
			if c.Replacement != "" {
				d.metaspace = c.Replacement
			}
		case "Replace":
			var c struct {
				Pattern struct {
					String *string `json:"String"`
				} `json:"pattern"`
				Content string `json:"content"`
			}
			if err := json.Unmarshal(r, &c); err != nil {
				return fmt.Errorf("Replace: %w", err)
			}
			if c.Pattern.String != nil && c.Content == " " && *c.Pattern.String != "" {
				d.metaspace = *c.Pattern.String
			}
		case "Sequence":
			var c struct {
				Decoders []json.RawMessage `json:"decoders"`
			}
			if err := json.Unmarshal(r, &c); err != nil {
				return fmt.Errorf("Sequence: %w", err)
			}
			for _, sub := range c.Decoders {
				if err := walk(sub); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return d, walk(r)
}
