package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/dlclark/regexp2"
)

// pattern is a tokenizer.json pattern: {"String": "..."} (a literal) or
// {"Regex": "..."} (Oniguruma syntax; the patterns real tokenizers use, with
// lookahead and \p{L}/\p{N} classes, mean the same in regexp2's default
// .NET-style syntax, where \s is Unicode White_Space as in Oniguruma).
type pattern struct {
	lit     string
	re      *regexp2.Regexp
	content string // replacement text (Replace components only)
}

func parsePattern(r json.RawMessage, content string) (pattern, error) {
	var c struct {
		String *string `json:"String"`
		Regex  *string `json:"Regex"`
	}
	if err := json.Unmarshal(r, &c); err != nil {
		return pattern{}, fmt.Errorf("pattern: %w", err)
	}
	switch {
	case c.String != nil:
		if *c.String == "" {
			return pattern{}, fmt.Errorf("empty String pattern")
		}
		return pattern{lit: *c.String, content: content}, nil
	case c.Regex != nil:
		re, err := compileRegex(*c.Regex)
		if err != nil {
			return pattern{}, err
		}
		return pattern{re: re, content: content}, nil
	default:
		return pattern{}, fmt.Errorf("pattern %.80s is neither String nor Regex", r)
	}
}

// compileRegex compiles an Oniguruma pattern with regexp2.
func compileRegex(expr string) (*regexp2.Regexp, error) {
	re, err := regexp2.Compile(expr, regexp2.None)
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", expr, err)
	}
	return re, nil
}

// findAll returns the [start, end) rune ranges of the non-overlapping matches
// in rs, left to right. An empty match advances by one rune.
func (p pattern) findAll(rs []rune) [][2]int {
	var out [][2]int
	if p.re == nil {
		lit := []rune(p.lit)
		for i := 0; i+len(lit) <= len(rs); {
			if runesHavePrefix(rs[i:], lit) {
				out = append(out, [2]int{i, i + len(lit)})
				i += len(lit)
			} else {
				i++
			}
		}
		return out
	}
	m, err := p.re.FindRunesMatch(rs)
	for err == nil && m != nil {
		out = append(out, [2]int{m.Index, m.Index + m.Length})
		m, err = p.re.FindNextMatch(m)
	}
	// regexp2 only errors on a match timeout, and none is set.
	return out
}

func runesHavePrefix(rs, prefix []rune) bool {
	if len(rs) < len(prefix) {
		return false
	}
	for i, r := range prefix {
		if rs[i] != r {
			return false
		}
	}
	return true
}

// replaceAll replaces every match with p.content.
func (p pattern) replaceAll(s string) string {
	if p.re == nil {
		return strings.ReplaceAll(s, p.lit, p.content)
	}
	rs := []rune(s)
	var sb strings.Builder
	prev := 0
	for _, m := range p.findAll(rs) {
		sb.WriteString(string(rs[prev:m[0]]))
		sb.WriteString(p.content)
		prev = m[1]
	}
	sb.WriteString(string(rs[prev:]))
	return sb.String()
}
