package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// normalizer rewrites one section of text before pre-tokenization.
type normalizer interface {
	normalize(s string) string
}

type normSeq []normalizer

func (q normSeq) normalize(s string) string {
	for _, n := range q {
		s = n.normalize(s)
	}
	return s
}

type normForm struct{ f norm.Form }

func (n normForm) normalize(s string) string { return n.f.String(s) }

// normPrepend prepends a string. The JavaScript port prepends even to an
// empty section; empty sections never reach it (Encode skips them first).
type normPrepend struct{ s string }

func (n normPrepend) normalize(s string) string { return n.s + s }

type normReplace struct{ p pattern }

func (n normReplace) normalize(s string) string { return n.p.replaceAll(s) }

type normLower struct{}

func (normLower) normalize(s string) string { return strings.ToLower(s) }

type normStrip struct{ left, right bool }

func (n normStrip) normalize(s string) string {
	if n.left {
		s = strings.TrimLeftFunc(s, unicode.IsSpace)
	}
	if n.right {
		s = strings.TrimRightFunc(s, unicode.IsSpace)
	}
	return s
}

// normStripAccents removes combining marks (Unicode category M).
type normStripAccents struct{}

func (normStripAccents) normalize(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.Is(unicode.M, r) {
			return -1
		}
		return r
	}, s)
}

// parseNormalizer builds the normalizer section; nil for none.
func parseNormalizer(r json.RawMessage) (normalizer, error) {
	if isNull(r) {
		return nil, nil
	}
	typ, err := typeOf(r)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "Sequence":
		q, err := parseSequence(r, "normalizers", parseNormalizer)
		return normSeq(q), err
	case "NFC":
		return normForm{norm.NFC}, nil
	case "NFD":
		return normForm{norm.NFD}, nil
	case "NFKC":
		return normForm{norm.NFKC}, nil
	case "NFKD":
		return normForm{norm.NFKD}, nil
	case "Lowercase":
		return normLower{}, nil
	case "StripAccents":
		return normStripAccents{}, nil
	case "Strip":
		var c struct {
			Left  bool `json:"strip_left"`
			Right bool `json:"strip_right"`
		}
		if err := json.Unmarshal(r, &c); err != nil {
			return nil, fmt.Errorf("Strip: %w", err)
		}
		return normStrip{c.Left, c.Right}, nil
	case "Prepend":
		var c struct {
			Prepend string `json:"prepend"`
		}
		if err := json.Unmarshal(r, &c); err != nil {
			return nil, fmt.Errorf("Prepend: %w", err)
		}
		return normPrepend{c.Prepend}, nil
	case "Replace":
		var c struct {
			Pattern json.RawMessage `json:"pattern"`
			Content string          `json:"content"`
		}
		if err := json.Unmarshal(r, &c); err != nil {
			return nil, fmt.Errorf("Replace: %w", err)
		}
		p, err := parsePattern(c.Pattern, c.Content)
		if err != nil {
			return nil, fmt.Errorf("Replace: %w", err)
		}
		return normReplace{p}, nil
	default:
		return nil, fmt.Errorf("normalizer type %q is not supported", typ)
	}
}
