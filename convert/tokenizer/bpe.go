package tokenizer

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// bpeModel is a tokenizer.json "model" of type BPE.
type bpeModel struct {
	vocab        map[string]int
	ranks        map[[2]string]int // merge pair -> rank (its index in "merges")
	unk          string            // "" when the model has no unk token
	byteFallback bool
	ignoreMerges bool
	contPrefix   string // continuing_subword_prefix
	eowSuffix    string // end_of_word_suffix
}

// parseBPE reads the model section. Merges come in two spellings: "a b"
// strings (older files) and ["a","b"] pairs (newer files, which allow spaces
// inside tokens).
func parseBPE(r json.RawMessage) (*bpeModel, error) {
	var c struct {
		Type                    string            `json:"type"`
		Vocab                   map[string]int    `json:"vocab"`
		Merges                  []json.RawMessage `json:"merges"`
		UnkToken                *string           `json:"unk_token"`
		ByteFallback            bool              `json:"byte_fallback"`
		IgnoreMerges            bool              `json:"ignore_merges"`
		ContinuingSubwordPrefix *string           `json:"continuing_subword_prefix"`
		EndOfWordSuffix         *string           `json:"end_of_word_suffix"`
		Dropout                 *float64          `json:"dropout"`
	}
	if err := json.Unmarshal(r, &c); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	if c.Type != "BPE" && !(c.Type == "" && c.Merges != nil) {
		return nil, fmt.Errorf("model type %q is not supported (only BPE)", c.Type)
	}
	if len(c.Vocab) == 0 {
		return nil, fmt.Errorf("model: empty vocab")
	}
	if c.Dropout != nil && *c.Dropout > 0 {
		return nil, fmt.Errorf("model: BPE dropout %g is not supported (encoding would be random)", *c.Dropout)
	}
	m := &bpeModel{
		vocab:        c.Vocab,
		ranks:        make(map[[2]string]int, len(c.Merges)),
		byteFallback: c.ByteFallback,
		ignoreMerges: c.IgnoreMerges,
	}
	if c.UnkToken != nil {
		m.unk = *c.UnkToken
	}
	if c.ContinuingSubwordPrefix != nil {
		m.contPrefix = *c.ContinuingSubwordPrefix
	}
	if c.EndOfWordSuffix != nil {
		m.eowSuffix = *c.EndOfWordSuffix
	}
	for i, raw := range c.Merges {
		var pair [2]string
		var s string
		if err := json.Unmarshal(raw, &s); err == nil {
			a, b, ok := strings.Cut(s, " ")
			if !ok {
				return nil, fmt.Errorf("model.merges[%d]: %q is not two tokens", i, s)
			}
			pair = [2]string{a, b}
		} else {
			var p []string
			if err := json.Unmarshal(raw, &p); err != nil || len(p) != 2 {
				return nil, fmt.Errorf("model.merges[%d]: %.60s is not a pair of tokens", i, raw)
			}
			pair = [2]string{p[0], p[1]}
		}
		if _, dup := m.ranks[pair]; !dup {
			m.ranks[pair] = i
		}
	}
	return m, nil
}

// symbol is one node of the doubly linked list a word is merged in.
type symbol struct {
	s          string
	prev, next int // indices into the symbol slice, -1 at the ends
	pos        int // position of the leftmost original rune: the tie-break
	gone       bool
}

// candidate is a mergeable adjacent pair in the heap.
type candidate struct {
	rank, pos int
	left      int    // index of the left symbol
	l, r      string // the pair as it was when queued (stale entries are skipped)
}

type candHeap []candidate

func (h candHeap) Len() int { return len(h) }
func (h candHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].pos < h[j].pos
}
func (h candHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *candHeap) Push(x any)   { *h = append(*h, x.(candidate)) }
func (h *candHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// bpe splits word into runes and applies merges, lowest rank first and
// leftmost first among equal ranks, until no adjacent pair has a rank. This
// is the order of both the Rust crate and the JavaScript port.
func (m *bpeModel) bpe(word string) []string {
	n := utf8.RuneCountInString(word)
	if n == 0 {
		return nil
	}
	syms := make([]symbol, 0, n)
	for i, r := range []rune(word) {
		syms = append(syms, symbol{s: string(r), prev: i - 1, next: i + 1, pos: i})
	}
	syms[n-1].next = -1
	if m.eowSuffix != "" {
		syms[n-1].s += m.eowSuffix
	}
	h := &candHeap{}
	push := func(i int) {
		j := syms[i].next
		if j < 0 {
			return
		}
		if rank, ok := m.ranks[[2]string{syms[i].s, syms[j].s}]; ok {
			heap.Push(h, candidate{rank: rank, pos: syms[i].pos, left: i, l: syms[i].s, r: syms[j].s})
		}
	}
	for i := 0; i < n-1; i++ {
		push(i)
	}
	for h.Len() > 0 {
		c := heap.Pop(h).(candidate)
		i := c.left
		j := syms[i].next
		if syms[i].gone || j < 0 || syms[i].s != c.l || syms[j].s != c.r {
			continue // stale: a neighbour merged since this pair was queued
		}
		syms[i].s += syms[j].s
		syms[j].gone = true
		syms[i].next = syms[j].next
		if k := syms[j].next; k >= 0 {
			syms[k].prev = i
		}
		if p := syms[i].prev; p >= 0 {
			push(p)
		}
		push(i)
	}
	out := make([]string, 0, n)
	for i := 0; i >= 0; i = syms[i].next {
		out = append(out, syms[i].s)
	}
	if m.contPrefix != "" {
		for k := 1; k < len(out); k++ {
			out[k] = m.contPrefix + out[k]
		}
	}
	return out
}

// encodeWords runs the model over pre-tokenized words and appends the token
// strings to dst. vocab is the full vocabulary (model plus added tokens, as
// in the JavaScript port). Pieces outside the vocabulary become "<0xNN>"
// byte tokens when byte_fallback is on and all of them exist, else the unk
// token, else they are dropped.
func (m *bpeModel) encodeWords(dst []string, words []string, vocab map[string]int) []string {
	for _, w := range words {
		if m.ignoreMerges {
			if _, ok := vocab[w]; ok {
				dst = append(dst, w)
				continue
			}
		}
		for _, piece := range m.bpe(w) {
			if _, ok := vocab[piece]; ok {
				dst = append(dst, piece)
				continue
			}
			if m.byteFallback {
				bs := make([]string, 0, len(piece))
				all := true
				for i := 0; i < len(piece); i++ {
					b := fmt.Sprintf("<0x%02X>", piece[i])
					if _, ok := vocab[b]; !ok {
						all = false
						break
					}
					bs = append(bs, b)
				}
				if all {
					dst = append(dst, bs...)
					continue
				}
			}
			if m.unk != "" {
				dst = append(dst, m.unk)
			}
		}
	}
	return dst
}
