package cka

import (
	"context"
	"fmt"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/tokenizer"
)

// Side is one model of a pair: a forward pass, its decoder depth and the
// tokenizer that turns calibration lines into its ids.
type Side struct {
	Model     Walker
	Layers    int
	Tokenizer *tokenizer.Tokenizer
}

// Options configures Similarity. The zero value uses the built-in lines,
// PoolAuto, DefaultMaxSamples and DefaultMaxTokens.
type Options struct {
	Lines      []string // calibration lines; nil for Builtin()
	Pool       Pooling
	MaxSamples int // cap on token-position samples (PoolTokens)
	MaxTokens  int // each line is truncated to this many tokens
	// Progress, if set, is called after each decoder layer of either
	// forward pass (old model first): done of total = L_old + L_new layers.
	Progress func(done, total int)
}

// DefaultMaxTokens truncates calibration lines (most are far shorter).
const DefaultMaxTokens = 128

// Result is a layer similarity matrix and how it was measured.
type Result struct {
	Sim     *mat.Dense // L_old x L_new, CKA in [0, 1]
	Pool    Pooling    // PoolMean or PoolTokens, as resolved from PoolAuto
	Samples int        // n, the rows each layer contributed
	Lines   int        // calibration lines used
}

// Similarity tokenises the calibration lines for both models, runs both
// forward passes (one at a time, layer by layer) and returns the L_old x L_new
// linear-CKA matrix between their decoder layers' hidden states. Each layer is
// reduced to its normalised centred Gram (n x n) as soon as it is computed,
// so memory holds L_old Grams, not the hidden states. Lines that encode to no
// tokens under either tokenizer are skipped.
func Similarity(ctx context.Context, old, new Side, opts Options) (*Result, error) {
	lines := opts.Lines
	if lines == nil {
		lines = Builtin()
	}
	maxTok := opts.MaxTokens
	if maxTok <= 0 {
		maxTok = DefaultMaxTokens
	}
	maxSamples := opts.MaxSamples
	if maxSamples <= 0 {
		maxSamples = DefaultMaxSamples
	}
	var oseqs, nseqs [][]int
	for _, l := range lines {
		a, b := old.Tokenizer.Encode(l), new.Tokenizer.Encode(l)
		if len(a) == 0 || len(b) == 0 {
			continue
		}
		oseqs = append(oseqs, a[:min(len(a), maxTok)])
		nseqs = append(nseqs, b[:min(len(b), maxTok)])
	}
	pool := opts.Pool
	same := SameTokens(old.Tokenizer, oseqs, new.Tokenizer, nseqs)
	switch pool {
	case PoolAuto:
		pool = PoolMean
		if same {
			pool = PoolTokens
		}
	case PoolTokens:
		if !same {
			return nil, fmt.Errorf("cka: token-position samples need identical tokenisations, but the tokenizers %s and %s differ on the calibration lines", old.Tokenizer.Path(), new.Tokenizer.Path())
		}
	case PoolMean:
	default:
		return nil, fmt.Errorf("cka: unknown pooling %d", pool)
	}
	sim, n, err := similarityOfSeqs(ctx, old.Model, old.Layers, oseqs, new.Model, new.Layers, nseqs, pool, maxSamples, opts.Progress)
	if err != nil {
		return nil, err
	}
	return &Result{Sim: sim, Pool: pool, Samples: n, Lines: len(oseqs)}, nil
}

// SimilarityOfSeqs is Similarity on token ids already chosen for each model
// (oseqs[k] and nseqs[k] being the same text). It returns the matrix and the
// number of samples n.
func SimilarityOfSeqs(ctx context.Context, om Walker, oLayers int, oseqs [][]int, nm Walker, nLayers int, nseqs [][]int, pool Pooling, maxSamples int) (*mat.Dense, int, error) {
	return similarityOfSeqs(ctx, om, oLayers, oseqs, nm, nLayers, nseqs, pool, maxSamples, nil)
}

// similarityOfSeqs is SimilarityOfSeqs reporting each layer done to progress
// (nil for none).
func similarityOfSeqs(ctx context.Context, om Walker, oLayers int, oseqs [][]int, nm Walker, nLayers int, nseqs [][]int, pool Pooling, maxSamples int,
	progress func(done, total int)) (*mat.Dense, int, error) {
	done := 0
	step := func() {
		done++
		if progress != nil {
			progress(done, oLayers+nLayers)
		}
	}
	if len(oseqs) != len(nseqs) {
		return nil, 0, fmt.Errorf("cka: %d old sequences but %d new", len(oseqs), len(nseqs))
	}
	if oLayers <= 0 || nLayers <= 0 {
		return nil, 0, fmt.Errorf("cka: no layers (old %d, new %d)", oLayers, nLayers)
	}
	grams := make([]*mat.SymDense, oLayers)
	n := -1
	err := eachLayer(ctx, om, oseqs, oLayers, pool, maxSamples, func(l int, x *mat.Dense) error {
		n, _ = x.Dims()
		grams[l] = normGram(x)
		step()
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("cka: old model: %w", err)
	}
	if n < 2 {
		return nil, 0, fmt.Errorf("cka: need at least 2 samples, have %d", max(n, 0))
	}
	sim := mat.NewDense(oLayers, nLayers, nil)
	err = eachLayer(ctx, nm, nseqs, nLayers, pool, maxSamples, func(j int, y *mat.Dense) error {
		if r, _ := y.Dims(); r != n {
			return fmt.Errorf("cka: new layer %d has %d samples, old layers have %d", j, r, n)
		}
		ky := normGram(y)
		for i, kx := range grams {
			v := 0.0
			if kx != nil && ky != nil {
				v = clamp01(frobDot(kx, ky))
			}
			sim.Set(i, j, v)
		}
		step()
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("cka: new model: %w", err)
	}
	return sim, n, nil
}
