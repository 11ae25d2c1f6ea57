package tokenizer

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSplitBehaviours(t *testing.T) {
	dash := pattern{lit: "-"}
	cases := []struct {
		name string
		p    preSplit
		in   string
		want []string
	}{
		{"isolated", preSplit{p: dash, behavior: splitIsolated}, "a-b--c", []string{"a", "-", "b", "-", "-", "c"}},
		{"removed", preSplit{p: dash, behavior: splitRemoved}, "a-b--c", []string{"a", "b", "c"}},
		{"merged-prev", preSplit{p: dash, behavior: splitMergedWithPrevious}, "a-b--c", []string{"a-", "b-", "-", "c"}},
		{"merged-next", preSplit{p: dash, behavior: splitMergedWithNext}, "a-b--c", []string{"a", "-b", "-", "-c"}},
		{"edges", preSplit{p: dash, behavior: splitIsolated}, "-a-", []string{"-", "a", "-"}},
	}
	re, err := compileRegex(`\d+`)
	if err != nil {
		t.Fatal(err)
	}
	cases = append(cases, struct {
		name string
		p    preSplit
		in   string
		want []string
	}{"invert", preSplit{p: pattern{re: re}, invert: true}, "ab12cd3", []string{"12", "3"}})
	for _, c := range cases {
		if got := c.p.split(nil, c.in, 0); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: split(%q) = %q, want %q", c.name, c.in, got, c.want)
		}
	}
}

// TestGPT2SplitLookahead checks the regexp2 translation of the lookahead in
// the GPT-2/Llama-3 patterns: "\s+(?!\S)" leaves the last space of a run for
// the following word.
func TestGPT2SplitLookahead(t *testing.T) {
	re, err := compileRegex(gpt2Pattern)
	if err != nil {
		t.Fatal(err)
	}
	p := preSplit{p: pattern{re: re}, invert: true}
	got := p.split(nil, "Hi   there, it's 42!\n\n", 0)
	want := []string{"Hi", "  ", " there", ",", " it", "'s", " 42", "!", "\n\n"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GPT-2 split = %q, want %q", got, want)
	}
}

// TestMetaspace checks Mistral-style Metaspace (prepend_scheme "first", no
// normalizer) by hand on testdata/metaspace.json, whose first merge is "▁ ▁".
func TestMetaspace(t *testing.T) {
	tk := load(t, "metaspace.json")
	cases := []struct {
		text string
		want []int
	}{
		{"the the", []int{1, 13, 13}},
		// "first": only section 0 gets the prefix, so the "the" after "<s>" is
		// the plain word (15), not "▁the" (13).
		{"<s>the", []int{1, 1, 15}},
		// "▁▁the" already starts with "▁", so nothing is prepended; "▁ ▁"
		// (rank 0) wins over "▁ t" (rank 1), leaving "t he" for the rest.
		{"  the", []int{1, 16, 15}},
	}
	for _, c := range cases {
		if got := tk.Encode(c.text); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Encode(%q) = %v, want %v (tokens %q)", c.text, got, c.want, tk.Tokens(c.text))
		}
	}
	if b, _ := tk.TokenBytes(13); string(b) != " the" {
		t.Errorf("Metaspace decoder: TokenBytes(13) = %q", b)
	}
	// With split on (the Rust default) every "▁" starts a word, so "▁▁" can
	// no longer merge across words: "▁", "▁the".
	data, err := os.ReadFile(filepath.Join("testdata", "metaspace.json"))
	if err != nil {
		t.Fatal(err)
	}
	split, err := Parse([]byte(strings.Replace(string(data), `"split": false`, `"split": true`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if got := split.Encode("  the"); !reflect.DeepEqual(got, []int{1, 7, 13}) {
		t.Errorf("split Metaspace: Encode(\"  the\") = %v, want [1 7 13]", got)
	}
}

func TestNormalizers(t *testing.T) {
	cases := []struct {
		json, in, want string
	}{
		{`{"type": "NFC"}`, "e\u0301", "\u00e9"},
		{`{"type": "NFKC"}`, "ﬁ①", "fi1"},
		{`{"type": "Lowercase"}`, "ÀB", "àb"},
		{`{"type": "Strip", "strip_left": true, "strip_right": false}`, "  a  ", "a  "},
		{`{"type": "StripAccents"}`, "e\u0301a", "ea"},
		{`{"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}`, "a   b  c", "a b c"},
		{`{"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}`, "a b", "▁a▁b"},
	}
	for _, c := range cases {
		n, err := parseNormalizer([]byte(c.json))
		if err != nil {
			t.Fatalf("%s: %v", c.json, err)
		}
		if got := n.normalize(c.in); got != c.want {
			t.Errorf("%s: normalize(%q) = %q, want %q", c.json, c.in, got, c.want)
		}
	}
}
