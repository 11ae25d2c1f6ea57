package convert

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/gofrs/flock"

	"github.com/lorasync/lorasync/convert/lorasuite"
)

// pairFormat versions the cache files; bump it when Pair or the analysis
// changes. 2: one safetensors file per pair (pairstore.go), was a gob.
const pairFormat = 2

// Pair is the cached, adapter-independent analysis of one (old, new) base
// pair under one set of analysis options.
type Pair struct {
	Format   int
	Key      string // cache key: hash of the identities and options below
	OldID    string // content identity of the old base (commit:... or sha256:...)
	NewID    string
	Transfer string // lstsq or identity
	LayerMap string // canonical layer-map spec as asked ("auto" included)
	// LayerMapKind is the layer map actually used (auto resolved) and
	// LayerMapReason why, when auto did not choose cka.
	LayerMapKind, LayerMapReason string
	// Similarity is the L_old x L_new matrix the DP ran on (cka or a
	// user's similarity file); nil for linear and explicit maps.
	Similarity [][]float64
	// CKA describes the calibration behind a cka Similarity.
	CKA *CKAInfo
	// VocabMethod says how the shared vocabulary was found (VocabBytes or
	// VocabIDs); SharedTokens how many rows the transfer was fitted on.
	VocabMethod  string
	SharedTokens int
	Analysis     *lorasuite.PairAnalysis
	// Seconds spent on the transfer matrix and on the layer analysis.
	TransferSeconds, LayersSeconds float64
}

// pairKey hashes everything the analysis depends on.
func pairKey(old, new *model, o Options, lm layerMapSpec) string {
	h := sha256.New()
	fmt.Fprintf(h, "lorasync pair v%d\x00%s\x00%s\x00%s\x00%s\x00%s\x00%s", pairFormat, old.id, new.id, o.Transfer, o.HeadTransfer, lm, lm.calibrationID)
	return hex.EncodeToString(h.Sum(nil))
}

// pairAnalysis returns the pair analysis for (old, new), from the cache when
// present (cached reports that), else computed and stored. Concurrent callers
// for the same pair — goroutines or processes — wait on a file lock, so the
// analysis is computed once. They also hold the cache entry's shared lock
// (cachelock.go) meanwhile, so PruneCache never removes the entry under
// them, and a hit marks the entry used (its file's mtime, for PruneCache's
// least-recently-used order).
//
// The cache only ever saves work: a cache that cannot be locked or written
// (a read-only or full disk) is logged and the analysis computed in memory,
// and an existing entry is still read when it can be.
func pairAnalysis(ctx context.Context, old, new *model, o Options, lm layerMapSpec) (p *Pair, cached bool, err error) {
	key := pairKey(old, new, o, lm)
	compute := func() (*Pair, error) {
		p, err := computePair(ctx, old, new, o, lm)
		if p != nil {
			p.Key = key
		}
		return p, err
	}
	if o.CacheDir == "" {
		p, err = compute()
		return p, false, err
	}
	path := pairPath(o.CacheDir, key)
	uncached := func(why error) (*Pair, bool, error) {
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		o.Logger.Warn("pair cache unavailable; the analysis is not saved", "path", path, "err", why)
		if p, err := loadPair(path); err == nil && p.Key == key {
			return p, true, nil
		}
		p, err := compute()
		return p, false, err
	}
	release, err := lockEntry(ctx, o.CacheDir, key, true)
	if err != nil {
		return uncached(err)
	}
	defer release()
	lock := flock.New(path + ".lock")
	if _, err := lock.TryLockContext(ctx, 200*time.Millisecond); err != nil {
		return uncached(fmt.Errorf("lock %s: %w", lock.Path(), err))
	}
	defer lock.Unlock()
	if p, err := loadPair(path); err == nil && p.Key == key {
		touchUsed(path)
		return p, true, nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		o.Logger.Warn("pair cache entry unreadable, recomputing", "path", path, "err", err)
	}
	if p, err = compute(); err != nil {
		return nil, false, err
	}
	if err := savePair(path, p); err != nil {
		// The analysis is good; only the next migration of this pair pays.
		o.Logger.Warn("pair cache: analysis not saved; the next migration of this pair computes it again", "path", path, "err", err)
	}
	return p, false, nil
}

// computePair runs steps 1-4 (base side) of the method.
func computePair(ctx context.Context, old, new *model, o Options, lm layerMapSpec) (*Pair, error) {
	p := &Pair{Format: pairFormat, OldID: old.id, NewID: new.id, Transfer: o.Transfer, LayerMap: lm.String()}
	start := time.Now()
	tr, err := transferMatrix(ctx, old, new, o, p)
	if err != nil {
		return nil, err
	}
	p.TransferSeconds = time.Since(start).Seconds()
	o.Logger.Info("transfer matrix", "method", o.Transfer, "shared_tokens", p.SharedTokens, "residual", tr.Residual, "seconds", p.TransferSeconds)

	layers, err := layerMap(ctx, old, new, lm, o, p)
	if err != nil {
		return nil, err
	}
	start = time.Now()
	progress := func(done, total int) {
		if o.Progress != nil {
			o.Progress("layers", done, total)
		}
	}
	pa, err := lorasuite.Analyze(ctx, old.dims(), new.dims(), tr, layers, old, new,
		lorasuite.Options{HeadTransfer: o.HeadTransfer, Progress: progress})
	if err != nil {
		return nil, fmt.Errorf("convert: analysing %s -> %s: %w", old.dir, new.dir, err)
	}
	p.LayersSeconds = time.Since(start).Seconds()
	p.Analysis = pa
	return p, nil
}

// transferMatrix computes W_x (step 1) and records how in p.
func transferMatrix(ctx context.Context, old, new *model, o Options, p *Pair) (*lorasuite.Transfer, error) {
	oldIDs, newIDs, method, err := sharedVocab(old, new)
	if o.Transfer == TransferIdentity {
		if old.cfg.Hidden != new.cfg.Hidden {
			return nil, fmt.Errorf("convert: --transfer identity needs equal hidden sizes, have %d (%s) and %d (%s)", old.cfg.Hidden, old.dir, new.cfg.Hidden, new.dir)
		}
		if err != nil { // no shared vocabulary: identity without a measured residual
			p.VocabMethod = "none"
			return lorasuite.IdentityTransfer(old.cfg.Hidden), nil
		}
		acc := lorasuite.NewIdentityAccumulator(old.cfg.Hidden)
		if err := embeddingRows(old, new, oldIDs, newIDs)(ctx, acc.Add); err != nil {
			return nil, fmt.Errorf("convert: shared embeddings: %w", err)
		}
		p.VocabMethod, p.SharedTokens = method, acc.Rows()
		return acc.Identity()
	}
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	p.VocabMethod, p.SharedTokens = method, len(oldIDs)
	tr, err := lorasuite.FitTransfer(ctx, old.cfg.Hidden, new.cfg.Hidden, embeddingRows(old, new, oldIDs, newIDs))
	if err != nil {
		return nil, fmt.Errorf("convert: transfer matrix %s -> %s: %w", old.dir, new.dir, err)
	}
	return tr, nil
}
