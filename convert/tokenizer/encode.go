package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
)

// Encode tokenizes text the way @huggingface/tokenizers' encode(text) does by
// default (special tokens added by the post-processor): see the package doc
// for the pipeline. Text that spells an added token, such as "<|im_start|>",
// encodes to that token.
func (t *Tokenizer) Encode(text string) []int {
	toks := t.encodeText(text)
	ids := make([]int, 0, len(toks)+2)
	for _, s := range toks {
		if id, ok := t.vocab[s]; ok {
			ids = append(ids, id)
		} else if id, ok := t.vocab[t.model.unk]; ok {
			ids = append(ids, id)
		}
	}
	return t.post.apply(ids)
}

// Tokens is Encode without the post-processor, as token strings.
func (t *Tokenizer) Tokens(text string) []string {
	return t.encodeText(text)
}

// encodeText runs added-token splitting, normalization, pre-tokenization and
// the model, and returns token strings.
func (t *Tokenizer) encodeText(text string) []string {
	var out []string
	sections := t.stripAround(t.rawSplitter.split(text))
	for si, sec := range sections {
		if sec == "" {
			continue
		}
		if _, ok := t.addedByS[sec]; ok {
			out = append(out, sec)
			continue
		}
		if t.norm != nil {
			sec = t.norm.normalize(sec)
		}
		if sec == "" {
			continue
		}
		for _, sub := range t.stripAround(t.normSplitter.split(sec)) {
			if sub == "" {
				continue
			}
			if _, ok := t.addedByS[sub]; ok {
				out = append(out, sub)
				continue
			}
			words := []string{sub}
			if t.pre != nil {
				words = t.pre.split(nil, sub, si)
			}
			out = t.model.encodeWords(out, words, t.vocab)
		}
	}
	return out
}

// stripAround trims whitespace next to added tokens marked lstrip / rstrip.
func (t *Tokenizer) stripAround(parts []string) []string {
	for i, p := range parts {
		k, ok := t.addedByS[p]
		if !ok {
			continue
		}
		a := t.added[k]
		if a.LStrip && i > 0 {
			parts[i-1] = strings.TrimRightFunc(parts[i-1], unicode.IsSpace)
		}
		if a.RStrip && i < len(parts)-1 {
			parts[i+1] = strings.TrimLeftFunc(parts[i+1], unicode.IsSpace)
		}
	}
	return parts
}

// splitter finds added tokens in text: at each position the longest token
// starting there, scanning left to right (a trie over runes).
type splitter struct {
	root *trieNode
}

type trieNode struct {
	next map[rune]*trieNode
	end  string // the token ending here, "" if none
}

func newSplitter(words []string) *splitter {
	root := &trieNode{}
	for _, w := range words {
		n := root
		for _, r := range w {
			if n.next == nil {
				n.next = make(map[rune]*trieNode)
			}
			c := n.next[r]
			if c == nil {
				c = &trieNode{}
				n.next[r] = c
			}
			n = c
		}
		n.end = w
	}
	return &splitter{root: root}
}

// split cuts text into the tokens found and the text between them, in order;
// no part is empty.
func (s *splitter) split(text string) []string {
	if s.root.next == nil {
		return []string{text}
	}
	rs := []rune(text)
	var out []string
	start := 0
	for i := 0; i < len(rs); {
		n, match, mlen := s.root, "", 0
		for j := i; j < len(rs); j++ {
			n = n.next[rs[j]]
			if n == nil {
				break
			}
			if n.end != "" {
				match, mlen = n.end, j-i+1
			}
		}
		if match == "" {
			i++
			continue
		}
		if i > start {
			out = append(out, string(rs[start:i]))
		}
		out = append(out, match)
		i += mlen
		start = i
	}
	if start < len(rs) {
		out = append(out, string(rs[start:]))
	}
	return out
}

// postProcessor adds special tokens around one encoded sequence.
type postProcessor struct {
	prefix, suffix []string // token strings, resolved to ids by resolve
	pre, suf       []int
}

func (p postProcessor) apply(ids []int) []int {
	if len(p.pre) == 0 && len(p.suf) == 0 {
		return ids
	}
	out := make([]int, 0, len(p.pre)+len(ids)+len(p.suf))
	out = append(out, p.pre...)
	out = append(out, ids...)
	return append(out, p.suf...)
}

// resolve turns the post-processor's token strings into ids.
func (p *postProcessor) resolve(vocab map[string]int) error {
	look := func(ss []string) ([]int, error) {
		var ids []int
		for _, s := range ss {
			id, ok := vocab[s]
			if !ok {
				return nil, fmt.Errorf("special token %q is not in the vocabulary", s)
			}
			ids = append(ids, id)
		}
		return ids, nil
	}
	var err error
	if p.pre, err = look(p.prefix); err != nil {
		return err
	}
	p.suf, err = look(p.suffix)
	return err
}

// parsePostProcessor reads the single-sequence behaviour of the
// post_processor section. TemplateProcessing's special tokens may expand to
// several ids; those are taken from its "special_tokens" map.
func parsePostProcessor(r json.RawMessage) (postProcessor, error) {
	var p postProcessor
	if isNull(r) {
		return p, nil
	}
	typ, err := typeOf(r)
	if err != nil {
		return p, err
	}
	switch typ {
	case "ByteLevel":
		return p, nil
	case "Sequence":
		var c struct {
			Processors []json.RawMessage `json:"processors"`
		}
		if err := json.Unmarshal(r, &c); err != nil {
			return p, fmt.Errorf("Sequence: %w", err)
		}
		for i, sub := range c.Processors {
			q, err := parsePostProcessor(sub)
			if err != nil {
				return p, fmt.Errorf("Sequence[%d]: %w", i, err)
			}
			p.prefix = append(q.prefix, p.prefix...)
			p.suffix = append(p.suffix, q.suffix...)
		}
		return p, nil
	case "BertProcessing", "RobertaProcessing":
		var c struct {
			Sep []json.RawMessage `json:"sep"`
			Cls []json.RawMessage `json:"cls"`
		}
		if err := json.Unmarshal(r, &c); err != nil || len(c.Sep) != 2 || len(c.Cls) != 2 {
			return p, fmt.Errorf("%s: want \"cls\" and \"sep\" as [token, id] pairs", typ)
		}
		var cls, sep string
		if json.Unmarshal(c.Cls[0], &cls) != nil || json.Unmarshal(c.Sep[0], &sep) != nil {
			return p, fmt.Errorf("%s: cls/sep token is not a string", typ)
		}
		p.prefix, p.suffix = []string{cls}, []string{sep}
		return p, nil
	case "TemplateProcessing":
		var c struct {
			Single []struct {
				SpecialToken *struct {
					ID string `json:"id"`
				} `json:"SpecialToken"`
				Sequence *struct {
					ID string `json:"id"`
				} `json:"Sequence"`
			} `json:"single"`
			SpecialTokens map[string]struct {
				Tokens []string `json:"tokens"`
			} `json:"special_tokens"`
		}
		if err := json.Unmarshal(r, &c); err != nil {
			return p, fmt.Errorf("TemplateProcessing: %w", err)
		}
		seen := false
		for _, item := range c.Single {
			switch {
			case item.Sequence != nil:
				seen = true
			case item.SpecialToken != nil:
				toks := []string{item.SpecialToken.ID}
				if st, ok := c.SpecialTokens[item.SpecialToken.ID]; ok && len(st.Tokens) > 0 {
					toks = st.Tokens
				}
				if seen {
					p.suffix = append(p.suffix, toks...)
				} else {
					p.prefix = append(p.prefix, toks...)
				}
			}
		}
		return p, nil
	default:
		return p, fmt.Errorf("post-processor type %q is not supported", typ)
	}
}
