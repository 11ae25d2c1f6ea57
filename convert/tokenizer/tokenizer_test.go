package tokenizer

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func load(t *testing.T, name string) *Tokenizer {
	t.Helper()
	tk, err := Load(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestTokenBytes(t *testing.T) {
	sp := load(t, "sentencepiece.json")
	bl := load(t, "bytelevel.json")
	if sp.ByteLevel() || !bl.ByteLevel() {
		t.Fatalf("ByteLevel(): sentencepiece %v, bytelevel %v", sp.ByteLevel(), bl.ByteLevel())
	}
	cases := []struct {
		tk    *Tokenizer
		token string
		want  string
	}{
		{sp, "▁the", " the"},
		{sp, "<0x0A>", "\n"},
		{sp, "<0x41>", "A"},
		{sp, "<0xC3>", "\xc3"},
		{sp, "▁▁", "  "},
		{sp, "<s>", "<s>"}, // added tokens are literal content
		{bl, "Ġthe", " the"},
		{bl, "Ċ", "\n"},
		{bl, "ĠĠ", "  "},
		{bl, "é", "\xe9"}, // U+00E9 is the table's own rune for byte 0xE9
		{bl, "<|endoftext|>", "<|endoftext|>"},
	}
	for _, c := range cases {
		id, ok := c.tk.ID(c.token)
		if !ok {
			t.Fatalf("%s: token %q missing", c.tk.Path(), c.token)
		}
		got, ok := c.tk.TokenBytes(id)
		if !ok || string(got) != c.want {
			t.Errorf("%s: TokenBytes(%q) = %q, %v; want %q", c.tk.Path(), c.token, got, ok, c.want)
		}
	}
	if _, ok := bl.TokenBytes(bl.VocabSize()); ok {
		t.Error("TokenBytes(VocabSize()) ok, want false")
	}
	if _, ok := bl.TokenBytes(-1); ok {
		t.Error("TokenBytes(-1) ok, want false")
	}
}

func TestVocabSizeAndSpecial(t *testing.T) {
	sp := load(t, "sentencepiece.json")
	bl := load(t, "bytelevel.json")
	if got := sp.VocabSize(); got != 17 {
		t.Errorf("sentencepiece VocabSize = %d, want 17", got)
	}
	if got := bl.VocabSize(); got != 13 {
		t.Errorf("bytelevel VocabSize = %d, want 13 (12 model tokens + 1 added)", got)
	}
	if !sp.IsSpecial(1) || sp.IsSpecial(13) || !bl.IsSpecial(12) {
		t.Error("IsSpecial wrong")
	}
}

// TestByteLevelTableRoundTrip checks the GPT-2 table is a bijection on bytes
// and keeps printable ASCII as itself.
func TestByteLevelTableRoundTrip(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	enc := byteLevelEncode(string(all))
	dec, ok := byteLevelDecode(enc)
	if !ok || !bytes.Equal(dec, all) {
		t.Fatalf("round trip failed: %v", ok)
	}
	if byteToRune[' '] != 'Ġ' || byteToRune['\n'] != 'Ċ' || byteToRune['a'] != 'a' {
		t.Errorf("table: ' '->%q '\\n'->%q 'a'->%q", byteToRune[' '], byteToRune['\n'], byteToRune['a'])
	}
}

func TestSharedVocab(t *testing.T) {
	sp := load(t, "sentencepiece.json")
	bl := load(t, "bytelevel.json")
	oldIDs, newIDs := SharedVocab(sp, bl)
	// Worked by hand from the two testdata vocabularies: specials never match,
	// "A" (14) wins over "<0x41>" (4), "é" (one byte 0xE9) has no partner.
	wantOld := []int{3, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	wantNew := []int{4, 3, 0, 1, 2, 5, 6, 7, 9, 8, 10}
	if !reflect.DeepEqual(oldIDs, wantOld) || !reflect.DeepEqual(newIDs, wantNew) {
		t.Fatalf("SharedVocab = %v, %v\nwant %v, %v", oldIDs, newIDs, wantOld, wantNew)
	}
	// Every pair decodes to the same bytes and the match is one-to-one.
	seen := map[int]bool{}
	for k := range oldIDs {
		a, _ := sp.TokenBytes(oldIDs[k])
		b, _ := bl.TokenBytes(newIDs[k])
		if !bytes.Equal(a, b) {
			t.Errorf("pair %d: %q vs %q", k, a, b)
		}
		if seen[newIDs[k]] {
			t.Errorf("new id %d matched twice", newIDs[k])
		}
		seen[newIDs[k]] = true
	}
	// Swapping the arguments gives the same pairs, ordered by the other side.
	n2, o2 := SharedVocab(bl, sp)
	got := map[[2]int]bool{}
	for k := range o2 {
		got[[2]int{o2[k], n2[k]}] = true
	}
	for k := range oldIDs {
		if !got[[2]int{oldIDs[k], newIDs[k]}] {
			t.Errorf("pair (%d,%d) missing when arguments are swapped", oldIDs[k], newIDs[k])
		}
	}
	// Self-match: every non-special token with bytes maps to itself.
	o, n := SharedVocab(bl, bl)
	if len(o) != 12 || !reflect.DeepEqual(o, n) {
		t.Errorf("SharedVocab(bl, bl) = %v, %v; want the 12 regular ids twice", o, n)
	}
}

func TestEncodeHandWorked(t *testing.T) {
	sp := load(t, "sentencepiece.json")
	bl := load(t, "bytelevel.json")
	cases := []struct {
		tk   *Tokenizer
		text string
		want []int
	}{
		// "▁the▁the": "▁ t" (rank 0) then "h e", then "▁t he".
		{sp, "the the", []int{1, 13, 13}},
		// "\n" is not a token: byte fallback to <0x0A>.
		{sp, "\nA", []int{1, 7, 3, 14}},
		{sp, "é", []int{1, 7, 5, 6}},
		// "▁▁▁the": "▁ t" at position 2 first, "▁ ▁" (rank 4) last.
		{sp, "  the", []int{1, 16, 13}},
		// The added token is split out; the rest is normalized on its own.
		{sp, "<s>the", []int{1, 1, 13}},
		// "x" has neither a token nor a byte token: unk.
		{sp, "x", []int{1, 7, 0}},
		{sp, "", []int{1}},
		{bl, "the the\n", []int{8, 7, 4}},
		// GPT-2 regex: "A", " " (\s+(?!\S) backs off one space), " the".
		{bl, "A  the", []int{9, 3, 7}},
		{bl, "<|endoftext|>the", []int{12, 8}},
		{bl, "", nil},
	}
	for _, c := range cases {
		got := c.tk.Encode(c.text)
		if len(got) == 0 && len(c.want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: Encode(%q) = %v, want %v (tokens %q)", c.tk.Path(), c.text, got, c.want, c.tk.Tokens(c.text))
		}
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"notjson.json":   `{"model": `,
		"wordpiece.json": `{"model": {"type": "WordPiece", "vocab": {"a": 0}}}`,
		"nomodel.json":   `{"added_tokens": []}`,
		"badmerge.json":  `{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["ab"]}}`,
		"badnorm.json":   `{"normalizer": {"type": "Precompiled"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}`,
		"badpost.json":   `{"post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}]}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}`,
	}
	for name, body := range cases {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p)
		if err == nil {
			t.Errorf("%s: Load succeeded", name)
			continue
		}
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %q does not name the file", name, err)
		}
	}
	if _, err := Load(filepath.Join(dir, "missing.json")); err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("missing file: %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}
