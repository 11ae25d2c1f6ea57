package cka

import (
	"bytes"
	"context"
	"fmt"
	"github.com/lorasync/lorasync/convert/tokenizer"
	"slices"
	"strings"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/forward"
)

// Walker runs a forward pass layer by layer; *forward.Model implements it.
type Walker interface {
	Walk(ctx context.Context, seqs [][]int, opts forward.Options, visit forward.Visit) error
}

// Pooling says what one CKA sample is.
type Pooling int

const (
	// PoolAuto uses token positions when both models see identical token ids
	// for every line, and per-line means otherwise.
	PoolAuto Pooling = iota
	// PoolMean makes each calibration line one sample: the mean of its hidden
	// states over positions.
	PoolMean
	// PoolTokens makes each token position one sample; the models must see
	// identical token ids.
	PoolTokens
)

// DefaultMaxSamples caps the token-position samples of PoolTokens: Matrix
// then stores L_old Grams of at most 1024 x 1024 float64s (8 MiB each).
const DefaultMaxSamples = 1024

// Representations runs m over seqs and returns one n x Hidden float64 matrix
// per decoder layer (the stages forward.LayerName(0..layers-1), not the
// embeddings): with PoolMean row k is the mean over sequence k's positions (n =
// len(seqs)); with PoolTokens the rows are token positions, all of them or, when
// there are more than maxSamples, maxSamples of them evenly spaced over the
// concatenated sequences (the same positions for any model given the same
// seqs). PoolAuto is not accepted here.
func Representations(ctx context.Context, m Walker, seqs [][]int, layers int, pool Pooling, maxSamples int) ([]*mat.Dense, error) {
	reps := make([]*mat.Dense, layers)
	err := eachLayer(ctx, m, seqs, layers, pool, maxSamples, func(l int, x *mat.Dense) error {
		reps[l] = x
		return nil
	})
	if err != nil {
		return nil, err
	}
	return reps, nil
}

// eachLayer is Representations handing each layer's matrix to fn as soon as
// the forward pass produces it, so callers can reduce it (to a Gram) and drop
// it.
func eachLayer(ctx context.Context, m Walker, seqs [][]int, layers int, pool Pooling, maxSamples int, fn func(l int, x *mat.Dense) error) error {
	if pool != PoolMean && pool != PoolTokens {
		return fmt.Errorf("cka: representations need PoolMean or PoolTokens, got %d", pool)
	}
	var keep []int // selected positions in the concatenation (PoolTokens)
	if pool == PoolTokens {
		total := 0
		for _, s := range seqs {
			total += len(s)
		}
		keep = spread(total, maxSamples)
	}
	seen := 0
	err := m.Walk(ctx, seqs, forward.Options{MeanPool: pool == PoolMean}, func(stage string, st [][]float32) error {
		l, ok := layerIndex(stage)
		if !ok || l >= layers {
			return nil
		}
		seen++
		if pool == PoolTokens {
			return fn(l, gatherRows(st, seqs, keep))
		}
		x := mat.NewDense(len(st), len(st[0]), nil)
		for k, v := range st {
			row := x.RawRowView(k)
			for i, f := range v {
				row[i] = float64(f)
			}
		}
		return fn(l, x)
	})
	if err != nil {
		return err
	}
	if seen != layers {
		return fmt.Errorf("cka: forward pass reported %d decoder layers, want %d", seen, layers)
	}
	return nil
}

// gatherRows copies the selected positions (indices into the concatenation
// of seqs) of the per-sequence states st[k] (len(seqs[k]) x d) into a
// len(keep) x d matrix.
func gatherRows(st [][]float32, seqs [][]int, keep []int) *mat.Dense {
	d := 0
	for k, s := range seqs {
		if len(s) > 0 {
			d = len(st[k]) / len(s)
			break
		}
	}
	if len(keep) == 0 || d == 0 {
		return &mat.Dense{}
	}
	x := mat.NewDense(len(keep), d, nil)
	seq, base := 0, 0
	for r, pos := range keep {
		for pos >= base+len(seqs[seq]) {
			base += len(seqs[seq])
			seq++
		}
		src := st[seq][(pos-base)*d : (pos-base+1)*d]
		row := x.RawRowView(r)
		for i, f := range src {
			row[i] = float64(f)
		}
	}
	return x
}

// spread picks min(total, k) positions out of total, evenly spaced, sorted.
func spread(total, k int) []int {
	if k <= 0 || k >= total {
		out := make([]int, total)
		for i := range out {
			out[i] = i
		}
		return out
	}
	out := make([]int, k)
	for i := range out {
		out[i] = int(int64(i) * int64(total) / int64(k))
	}
	return out
}

// layerIndex parses "layers.{i}".
func layerIndex(stage string) (int, bool) {
	rest, ok := strings.CutPrefix(stage, "layers.")
	if !ok {
		return 0, false
	}
	l := 0
	for _, c := range rest {
		if c < '0' || c > '9' {
			return 0, false
		}
		l = 10*l + int(c-'0')
	}
	return l, rest != ""
}

// SameTokens reports whether two tokenisations of the calibration lines
// split every line at the same places into the same byte strings (token ids
// may differ: an upgraded vocabulary usually renumbers), so that position k
// of line i is the same text for both models and positions can be samples.
// A nil tokenizer compares ids instead.
func SameTokens(ta *tokenizer.Tokenizer, a [][]int, tb *tokenizer.Tokenizer, b [][]int) bool {
	return slices.EqualFunc(a, b, func(x, y []int) bool {
		return slices.EqualFunc(x, y, func(i, j int) bool {
			if ta == nil || tb == nil {
				return i == j
			}
			bi, oki := ta.TokenBytes(i)
			bj, okj := tb.TokenBytes(j)
			return oki && okj && bytes.Equal(bi, bj)
		})
	})
}
