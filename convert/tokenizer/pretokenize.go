package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
)

// preTokenizer splits one normalized section into words. section is the
// index of the section among the added-token splits of the input (Metaspace's
// prepend_scheme "first" prepends only in section 0).
type preTokenizer interface {
	split(dst []string, s string, section int) []string
}

// gpt2Pattern is the GPT-2 split that ByteLevel applies when use_regex is on.
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

type preSeq []preTokenizer

func (q preSeq) split(dst []string, s string, section int) []string {
	words := []string{s}
	for _, p := range q {
		var next []string
		for _, w := range words {
			next = p.split(next, w, section)
		}
		words = next
	}
	return append(dst, words...)
}

// preByteLevel maps bytes through the GPT-2 table, after an optional GPT-2
// regex split and prefix space.
type preByteLevel struct {
	addPrefixSpace bool
	re             *pattern // nil when use_regex is off
}

func (p preByteLevel) split(dst []string, s string, _ int) []string {
	if p.addPrefixSpace && !strings.HasPrefix(s, " ") {
		s = " " + s
	}
	if p.re == nil {
		return append(dst, byteLevelEncode(s))
	}
	rs := []rune(s)
	for _, m := range p.re.findAll(rs) {
		if m[1] > m[0] {
			dst = append(dst, byteLevelEncode(string(rs[m[0]:m[1]])))
		}
	}
	return dst
}

// splitBehavior is what a Split pre-tokenizer does with the matches.
type splitBehavior int

const (
	splitIsolated splitBehavior = iota
	splitRemoved
	splitMergedWithPrevious
	splitMergedWithNext
)

type preSplit struct {
	p        pattern
	behavior splitBehavior
	invert   bool
}

func (p preSplit) split(dst []string, s string, _ int) []string {
	rs := []rune(s)
	ms := p.p.findAll(rs)
	if p.invert {
		// The pattern describes the words themselves.
		for _, m := range ms {
			if m[1] > m[0] {
				dst = append(dst, string(rs[m[0]:m[1]]))
			}
		}
		return dst
	}
	// pieces alternates gaps and matches, dropping empty ones.
	type piece struct {
		lo, hi int
		match  bool
	}
	var pieces []piece
	prev := 0
	for _, m := range ms {
		if m[0] > prev {
			pieces = append(pieces, piece{prev, m[0], false})
		}
		if m[1] > m[0] {
			pieces = append(pieces, piece{m[0], m[1], true})
		}
		prev = m[1]
	}
	if prev < len(rs) {
		pieces = append(pieces, piece{prev, len(rs), false})
	}
	switch p.behavior {
	case splitRemoved:
		for _, q := range pieces {
			if !q.match {
				dst = append(dst, string(rs[q.lo:q.hi]))
			}
		}
	case splitMergedWithPrevious:
		var cur []rune
		for _, q := range pieces {
			cur = append(cur, rs[q.lo:q.hi]...)
			if q.match {
				dst = append(dst, string(cur))
				cur = cur[:0]
			}
		}
		if len(cur) > 0 {
			dst = append(dst, string(cur))
		}
	case splitMergedWithNext:
		var cur []rune
		for _, q := range pieces {
			if q.match && len(cur) > 0 {
				dst = append(dst, string(cur))
				cur = cur[:0]
			}
			cur = append(cur, rs[q.lo:q.hi]...)
		}
		if len(cur) > 0 {
			dst = append(dst, string(cur))
		}
	default:
		for _, q := range pieces {
			dst = append(dst, string(rs[q.lo:q.hi]))
		}
	}
	return dst
}

// preMetaspace replaces spaces with the replacement rune, prepends one per
// prepend_scheme, and (when split is on, as in the Rust crate) starts a new
// word at every replacement rune. The JavaScript port never splits; splitting
// changes nothing for vocabularies without merges across "▁".
type preMetaspace struct {
	repl          string
	prependScheme string // always, first, never
	splitWords    bool
}

func (p preMetaspace) split(dst []string, s string, section int) []string {
	s = strings.ReplaceAll(s, " ", p.repl)
	if !strings.HasPrefix(s, p.repl) && (p.prependScheme == "always" || p.prependScheme == "first" && section == 0) {
		s = p.repl + s
	}
	if !p.splitWords {
		return append(dst, s)
	}
	sp := preSplit{p: pattern{lit: p.repl}, behavior: splitMergedWithNext}
	return sp.split(dst, s, section)
}

// parsePreTokenizer builds the pre_tokenizer section; nil for none.
func parsePreTokenizer(r json.RawMessage) (preTokenizer, error) {
	if isNull(r) {
		return nil, nil
	}
	typ, err := typeOf(r)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "Sequence":
		q, err := parseSequence(r, "pretokenizers", parsePreTokenizer)
		return preSeq(q), err
	case "ByteLevel":
		c := struct {
			AddPrefixSpace bool  `json:"add_prefix_space"`
			UseRegex       *bool `json:"use_regex"`
		}{}
		if err := json.Unmarshal(r, &c); err != nil {
			return nil, fmt.Errorf("ByteLevel: %w", err)
		}
		p := preByteLevel{addPrefixSpace: c.AddPrefixSpace}
		if c.UseRegex == nil || *c.UseRegex {
			re, err := compileRegex(gpt2Pattern)
			if err != nil {
				return nil, fmt.Errorf("ByteLevel: %w", err)
			}
			p.re = &pattern{re: re}
		}
		return p, nil
	case "Split":
		var c struct {
			Pattern  json.RawMessage `json:"pattern"`
			Behavior string          `json:"behavior"`
			Invert   bool            `json:"invert"`
		}
		if err := json.Unmarshal(r, &c); err != nil {
			return nil, fmt.Errorf("Split: %w", err)
		}
		pt, err := parsePattern(c.Pattern, "")
		if err != nil {
			return nil, fmt.Errorf("Split: %w", err)
		}
		p := preSplit{p: pt, invert: c.Invert}
		switch strings.ToLower(c.Behavior) {
		case "isolated", "":
			p.behavior = splitIsolated
		case "removed":
			p.behavior = splitRemoved
		case "mergedwithprevious":
			p.behavior = splitMergedWithPrevious
		case "mergedwithnext":
			p.behavior = splitMergedWithNext
		default:
			return nil, fmt.Errorf("Split: behavior %q is not supported", c.Behavior)
		}
		return p, nil
	case "Metaspace":
		c := struct {
			Replacement    string `json:"replacement"`
			PrependScheme  string `json:"prepend_scheme"`
			AddPrefixSpace *bool  `json:"add_prefix_space"`
			Split          *bool  `json:"split"`
		}{Replacement: "▁", PrependScheme: "always"}
		if err := json.Unmarshal(r, &c); err != nil {
			return nil, fmt.Errorf("Metaspace: %w", err)
		}
		if c.AddPrefixSpace != nil && !*c.AddPrefixSpace {
			c.PrependScheme = "never" // pre-0.15 spelling
		}
		return preMetaspace{repl: c.Replacement, prependScheme: c.PrependScheme, splitWords: c.Split == nil || *c.Split}, nil
	case "Digits":
		var c struct {
			Individual bool `json:"individual_digits"`
		}
		if err := json.Unmarshal(r, &c); err != nil {
			return nil, fmt.Errorf("Digits: %w", err)
		}
		expr := `[^0-9]+|[0-9]+`
		if c.Individual {
			expr = `[^0-9]+|[0-9]`
		}
		return mustSplitInvert(expr), nil
	case "Punctuation":
		const punct = `\p{P}\u0021-\u002F\u003A-\u0040\u005B-\u0060\u007B-\u007E`
		return mustSplitInvert(`[^` + punct + `]+|[` + punct + `]+`), nil
	case "Whitespace":
		return mustSplitInvert(`[A-Za-z0-9_]+|[^A-Za-z0-9_\s]+`), nil
	case "WhitespaceSplit":
		return mustSplitInvert(`\S+`), nil
	default:
		return nil, fmt.Errorf("pre-tokenizer type %q is not supported", typ)
	}
}

// mustSplitInvert is a Split whose constant pattern matches the words.
func mustSplitInvert(expr string) preTokenizer {
	re, err := compileRegex(expr)
	if err != nil {
		panic("tokenizer: built-in pattern: " + err.Error())
	}
	return preSplit{p: pattern{re: re}, invert: true}
}

// preIsByteLevel reports whether a pre-tokenizer contains a ByteLevel step.
func preIsByteLevel(p preTokenizer) bool {
	switch p := p.(type) {
	case preByteLevel:
		return true
	case preSeq:
		for _, q := range p {
			if preIsByteLevel(q) {
				return true
			}
		}
	}
	return false
}
