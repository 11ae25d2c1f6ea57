package convert

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/cka"
	"github.com/lorasync/lorasync/convert/forward"
	"github.com/lorasync/lorasync/convert/lorasuite"
)

// CKAInfo describes how a CKA similarity matrix was measured.
type CKAInfo struct {
	Pool    string  `json:"pooling"` // "tokens" (identical tokenisations) or "mean" (per line)
	Samples int     `json:"samples"` // rows per layer
	Lines   int     `json:"lines"`   // calibration lines
	Seconds float64 `json:"seconds"`
}

// calibration returns the cka calibration lines (the built-in set, or a
// user's file) and a content hash for the cache key.
func calibration(path string) ([]string, string, error) {
	lines := cka.Builtin()
	if path != "" {
		var err error
		if lines, err = cka.ReadLines(path); err != nil {
			return nil, "", err
		}
		if len(lines) == 0 {
			return nil, "", fmt.Errorf("calibration file %s has no lines", path)
		}
	}
	h := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return lines, hex.EncodeToString(h[:]), nil
}

// layerMap builds the layer pairs (step 2) and records in p which map was
// used and why.
func layerMap(ctx context.Context, old, new *model, lm layerMapSpec, o Options, p *Pair) ([]lorasuite.LayerPair, error) {
	lo, ln := old.cfg.Layers, new.cfg.Layers
	kind := lm.kind
	if kind == LayerMapAuto {
		kind, p.LayerMapReason = autoLayerMap(old, new)
	}
	p.LayerMapKind = kind
	var (
		pairs []lorasuite.LayerPair
		err   error
	)
	switch kind {
	case LayerMapLinear:
		pairs, err = lorasuite.LinearLayerMap(lo, ln)
	case LayerMapExplicit:
		pairs, err = lorasuite.ExplicitLayerMap(lo, ln, lm.targets)
	case LayerMapSimilarity:
		if len(lm.sim) != lo {
			return nil, fmt.Errorf("convert: similarity matrix %s has %d rows, the old model %d layers", lm.file, len(lm.sim), lo)
		}
		for i, row := range lm.sim {
			if len(row) != ln {
				return nil, fmt.Errorf("convert: similarity matrix %s row %d has %d values, the new model %d layers", lm.file, i, len(row), ln)
			}
		}
		p.Similarity = lm.sim
		pairs, err = dpOver(lm.sim)
	case LayerMapCKA:
		start := time.Now()
		var progress func(done, total int)
		if o.Progress != nil {
			progress = func(done, total int) { o.Progress("cka", done, total) }
		}
		res, cerr := ckaSimilarity(ctx, old, new, lm.lines, progress)
		if cerr != nil {
			return nil, fmt.Errorf("convert: cka layer map: %w", cerr)
		}
		p.Similarity = rows(res.Sim)
		pool := "mean"
		if res.Pool == cka.PoolTokens {
			pool = "tokens"
		}
		p.CKA = &CKAInfo{Pool: pool, Samples: res.Samples, Lines: res.Lines, Seconds: time.Since(start).Seconds()}
		o.Logger.Info("cka layer similarity", "pooling", pool, "samples", res.Samples, "lines", res.Lines, "seconds", p.CKA.Seconds)
		pairs, err = dpOver(p.Similarity)
	}
	if err != nil {
		return nil, fmt.Errorf("convert: layer map: %w", err)
	}
	return pairs, nil
}

// autoLayerMap picks cka when it can run and can matter, else linear, and
// says why not.
func autoLayerMap(old, new *model) (kind, reason string) {
	switch {
	case old.cfg.Layers == new.cfg.Layers:
		return LayerMapLinear, "equal depths: the only order-preserving map is the identity"
	case !old.hasTokenizer() || !new.hasTokenizer():
		return LayerMapLinear, "cka needs calibration text, and a model without tokenizer.json cannot encode it"
	}
	for _, m := range []*model{old, new} {
		if _, err := forward.New(m.cfg, m.weights); err != nil {
			return LayerMapLinear, fmt.Sprintf("no forward pass for %s: %v", m.dir, err)
		}
	}
	return LayerMapCKA, ""
}

// ckaSimilarity runs both models on the calibration lines and returns the
// L_old x L_new linear-CKA matrix, telling progress (if set) of each layer.
func ckaSimilarity(ctx context.Context, old, new *model, lines []string, progress func(done, total int)) (*cka.Result, error) {
	if !old.hasTokenizer() || !new.hasTokenizer() {
		return nil, fmt.Errorf("both models need a tokenizer.json to encode the calibration text")
	}
	ot, err := old.tokenizer()
	if err != nil {
		return nil, err
	}
	nt, err := new.tokenizer()
	if err != nil {
		return nil, err
	}
	fo, err := forward.New(old.cfg, old.weights)
	if err != nil {
		return nil, err
	}
	fn, err := forward.New(new.cfg, new.weights)
	if err != nil {
		return nil, err
	}
	return cka.Similarity(ctx,
		cka.Side{Model: fo, Layers: old.cfg.Layers, Tokenizer: ot},
		cka.Side{Model: fn, Layers: new.cfg.Layers, Tokenizer: nt},
		cka.Options{Lines: lines, Progress: progress})
}

func dpOver(sim [][]float64) ([]lorasuite.LayerPair, error) {
	m := mat.NewDense(len(sim), len(sim[0]), nil)
	for i, row := range sim {
		m.SetRow(i, row)
	}
	pairs, _, err := lorasuite.DPLayerMap(m)
	return pairs, err
}

func rows(m *mat.Dense) [][]float64 {
	r, c := m.Dims()
	out := make([][]float64, r)
	for i := range out {
		out[i] = make([]float64, c)
		mat.Row(out[i], i, m)
	}
	return out
}

// heatmap draws the pair's similarity matrix with the chosen path, or
// returns nil when there is no matrix.
func heatmap(p *Pair) ([]byte, error) {
	if p.Similarity == nil {
		return nil, nil
	}
	m := mat.NewDense(len(p.Similarity), len(p.Similarity[0]), nil)
	for i, row := range p.Similarity {
		m.SetRow(i, row)
	}
	var buf bytes.Buffer
	if err := cka.Heatmap(&buf, m, p.Analysis.LayerMap); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
