package convert

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/gofrs/flock"
	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/lorasuite"
	"github.com/lorasync/lorasync/convert/safetensors"
)

// mlpFormat versions the MLP operator cache files.
const mlpFormat = "lorasync-mlp-cache/1"

// recordTensor is the one tensor of a cache file, F64: a packed Gram
// triangle (shape [n(n+1)/2], lorasuite.GramFactor, Kind in the metadata) or
// the explicit pinv(W_x) (shape [d_n, d_o]).
const recordTensor = "data"

// The pair-level files of the cache directory.
const (
	pinvFile       = "wx-pinv.safetensors"        // pinv(W_x), d_n x d_o, for the MLP operators
	pinvFactorFile = "wx-pinv-factor.safetensors" // Cholesky factor behind pinv(W_x), for --input-map pinv
)

// mlpCache hands out the adapter-independent parts of one pair's MLP
// projection: an MLP operator per (layer pair, role), i.e. the inverse of the
// old base weight's ridged Gram, plus pinv(W_x) made explicit (and, for the
// pinv input map, the Cholesky factor behind it). With a cache directory they
// live next to the pair's cache file (<pairkey>.pair.safetensors),
//
//	<CacheDir>/pairs/<pairkey>.mlp/<old>-<new>-<role>.safetensors
//	<CacheDir>/pairs/<pairkey>.mlp/wx-pinv.safetensors
//	<CacheDir>/pairs/<pairkey>.mlp/wx-pinv-factor.safetensors
//
// computed on first need under a per-file lock (concurrent conversions of
// the same pair compute each once) and read back by later adapters. Without
// one (dir == "") they are computed in memory for this conversion only. They
// are float64: see lorasuite.GramFactor for why float32 would not do. At
// Llama-2-7B -> Llama-3-8B sizes an operator file is 67 MB (d_o = 4096),
// pinv(W_x) 134 MB; an adapter on all 96 MLP modules fills 6.6 GB, once.
type mlpCache struct {
	root string // Options.CacheDir: the entry lock lives there (cachelock.go)
	dir  string // "" disables the files
	key  string // pair key, checked against each file's metadata
	// warned is set once an unusable cache was logged: the other operators
	// of the conversion say nothing more about it.
	warned bool
	log    *slog.Logger
	pinv   *mat.Dense // pinv(W_x) once loaded; nil for the identity
	stats  MLPTimings
}

func newMLPCache(o Options, pair *Pair) *mlpCache {
	c := &mlpCache{key: pair.Key, log: o.Logger}
	if o.CacheDir != "" {
		c.root, c.dir = o.CacheDir, filepath.Join(o.CacheDir, "pairs", pair.Key+".mlp")
	}
	return c
}

// record is what a cache file holds: one float64 tensor and its metadata.
type record struct {
	shape []int
	data  []float64
	meta  map[string]string
}

func gramRecord(g *lorasuite.GramFactor) record {
	return record{shape: []int{len(g.Packed)}, data: g.Packed, meta: map[string]string{
		"kind": string(g.Kind), "n": strconv.Itoa(g.N), "ridge": strconv.FormatFloat(g.Ridge, 'g', -1, 64)}}
}

// gramOf rebuilds a GramFactor from its record and validates it.
func gramOf(r record) (*lorasuite.GramFactor, error) {
	n, err := strconv.Atoi(r.meta["n"])
	if err != nil {
		return nil, fmt.Errorf("order %q: %w", r.meta["n"], err)
	}
	ridge, err := strconv.ParseFloat(r.meta["ridge"], 64)
	if err != nil {
		return nil, fmt.Errorf("ridge %q: %w", r.meta["ridge"], err)
	}
	g := &lorasuite.GramFactor{Kind: lorasuite.GramKind(r.meta["kind"]), N: n, Ridge: ridge, Packed: r.data}
	if len(r.shape) != 1 {
		return nil, fmt.Errorf("packed Gram of shape %v", r.shape)
	}
	return g, g.Validate()
}

// operator returns the MLP operator for oldLayer's role (oldW is the old base
// weight of that role), from the cache when there, else computed (and
// stored), with pinv(W_x) attached. The caller has checked that oldLayer maps
// to newLayer.
func (c *mlpCache) operator(ctx context.Context, pa *lorasuite.PairAnalysis, role lorasuite.Role, oldLayer, newLayer int,
	oldW []float32, oldInter int) (*lorasuite.MLPOperator, error) {
	if err := c.transferPinv(ctx, pa.Transfer); err != nil {
		return nil, err
	}
	start := time.Now()
	defer func() { c.stats.Seconds += time.Since(start).Seconds() }()
	var op *lorasuite.MLPOperator
	want := map[string]string{
		"role": string(role), "old_layer": strconv.Itoa(oldLayer), "new_layer": strconv.Itoa(newLayer),
		"inter": strconv.Itoa(oldInter), "hidden": strconv.Itoa(pa.Old.Hidden), "kind": string(lorasuite.GramInverse),
	}
	name := fmt.Sprintf("%d-%d-%s.safetensors", oldLayer, newLayer, role)
	rec, cached, err := c.load(ctx, name, want, gramCheck, func() (record, error) {
		var err error
		op, err = lorasuite.NewMLPOperator(ctx, pa, role, oldLayer, oldW, oldInter)
		if err == nil && op == nil {
			err = fmt.Errorf("layer %d is not in the layer map", oldLayer)
		}
		if err != nil {
			return record{}, err
		}
		return gramRecord(op.Gram), nil
	})
	if err != nil {
		return nil, err
	}
	if cached {
		c.stats.Cached++
		g, _ := gramOf(rec) // checked by load
		op = &lorasuite.MLPOperator{Role: role, OldLayer: oldLayer, NewLayer: newLayer, Inter: oldInter, Hidden: pa.Old.Hidden, Gram: g}
	} else {
		c.stats.Computed++
	}
	op.PinvWx = c.pinv
	if err := op.Validate(pa); err != nil {
		return nil, fmt.Errorf("convert: MLP operator %s: %w", name, err)
	}
	return op, nil
}

// transferPinv loads pinv(W_x) (d_n x d_o) once, from the cache when there,
// else computed (and stored). Nothing to do for the identity.
func (c *mlpCache) transferPinv(ctx context.Context, tr *lorasuite.Transfer) error {
	if tr.Identity || c.pinv != nil {
		return nil
	}
	start := time.Now()
	defer func() { c.stats.Seconds += time.Since(start).Seconds() }()
	want := map[string]string{"role": "transfer_pinv", "d_old": strconv.Itoa(tr.DOld), "d_new": strconv.Itoa(tr.DNew)}
	check := func(r record) (*mat.Dense, error) {
		if len(r.shape) != 2 || r.shape[0] != tr.DNew || r.shape[1] != tr.DOld {
			return nil, fmt.Errorf("pinv(W_x) of shape %v, want [%d %d]", r.shape, tr.DNew, tr.DOld)
		}
		return mat.NewDense(tr.DNew, tr.DOld, r.data), nil
	}
	rec, cached, err := c.load(ctx, pinvFile, want, func(r record) error { _, err := check(r); return err }, func() (record, error) {
		p, err := lorasuite.NewTransferPinv(tr)
		if err != nil {
			return record{}, err
		}
		return record{shape: []int{tr.DNew, tr.DOld}, data: p.RawMatrix().Data}, nil
	})
	if err != nil {
		return err
	}
	c.pinv, _ = check(rec)
	c.stats.TransferPinv = "computed"
	if cached {
		c.stats.TransferPinv = "cached"
	}
	return nil
}

// transferPinvFactor installs the Cholesky factor behind pinv(W_x) in tr
// (for the pinv input map of attention modules), from the cache when there,
// else computed (and stored). Nothing to do for the identity.
func (c *mlpCache) transferPinvFactor(ctx context.Context, tr *lorasuite.Transfer) error {
	if tr.Identity {
		return nil
	}
	want := map[string]string{"role": "transfer_pinv_factor", "d_old": strconv.Itoa(tr.DOld), "d_new": strconv.Itoa(tr.DNew),
		"kind": string(lorasuite.GramCholesky)}
	rec, _, err := c.load(ctx, pinvFactorFile, want, gramCheck, func() (record, error) {
		g, err := tr.PinvFactor()
		if err != nil {
			return record{}, err
		}
		return gramRecord(g), nil
	})
	if err != nil {
		return err
	}
	g, _ := gramOf(rec)
	if err := tr.SetPinvFactor(g); err != nil {
		return fmt.Errorf("convert: MLP operator cache %s: %w", filepath.Join(c.dir, pinvFactorFile), err)
	}
	return nil
}

// gramCheck accepts a record holding a valid GramFactor.
func gramCheck(r record) error {
	_, err := gramOf(r)
	return err
}

// load returns the record stored as name when its metadata matches want and
// check accepts it, else compute's, which it stores; cached says which. A
// file that is unreadable, stale or rejected is logged and replaced. It holds
// the pair's cache entry lock (shared, so PruneCache leaves the entry alone)
// and the file's own lock (so concurrent conversions compute it once).
//
// The cache only ever saves work: a cache that cannot be locked or written
// is logged (once per conversion) and the record computed in memory; a
// record that can still be read without the locks is used.
func (c *mlpCache) load(ctx context.Context, name string, want map[string]string, check func(record) error,
	compute func() (record, error)) (r record, cached bool, err error) {
	if c.dir == "" {
		r, err = compute()
		return r, false, err
	}
	path := filepath.Join(c.dir, name)
	want["format"], want["pair_key"] = mlpFormat, c.key
	uncached := func(why error) (record, bool, error) {
		if ctx.Err() != nil {
			return record{}, false, ctx.Err()
		}
		c.warn("MLP operator cache unavailable; operators are computed without it", path, why)
		if r, err := readRecord(path, want); err == nil && check(r) == nil {
			return r, true, nil
		}
		r, err := compute()
		return r, false, err
	}
	release, err := lockEntry(ctx, c.root, c.key, true)
	if err != nil {
		return uncached(err)
	}
	defer release()
	// A long projection keeps marking its pair used, so that PruneCache,
	// which removes least recently used pairs first, does not take it for
	// an idle one.
	touchUsed(pairPath(c.root, c.key))
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return uncached(err)
	}
	lock := flock.New(path + ".lock")
	if _, err := lock.TryLockContext(ctx, 200*time.Millisecond); err != nil {
		return uncached(fmt.Errorf("lock %s: %w", lock.Path(), err))
	}
	defer lock.Unlock()
	r, err = readRecord(path, want)
	if err == nil {
		if err = check(r); err == nil {
			return r, true, nil
		}
		err = fmt.Errorf("convert: MLP operator cache %s: %w", path, err)
	}
	if !errors.Is(err, os.ErrNotExist) {
		c.log.Warn("MLP operator cache entry unusable, recomputing", "path", path, "err", err)
	}
	if r, err = compute(); err != nil {
		return record{}, false, err
	}
	if err := writeRecord(path, r, want); err != nil {
		c.warn("MLP operator cache: operator not saved; the next adapter of this pair computes it again", path, err)
	}
	return r, false, nil
}

// warn logs a cache failure, the first one of the conversion at Warn, the
// others at Debug.
func (c *mlpCache) warn(msg, path string, err error) {
	level := slog.LevelWarn
	if c.warned {
		level = slog.LevelDebug
	}
	c.warned = true
	c.log.Log(context.Background(), level, msg, "path", path, "err", err)
}

// writeRecord stores r atomically (safetensors.WriteFile: temp file, fsync,
// rename) with want and r's own metadata.
func writeRecord(path string, r record, want map[string]string) error {
	data := make([]byte, 8*len(r.data))
	for i, v := range r.data {
		binary.LittleEndian.PutUint64(data[8*i:], math.Float64bits(v))
	}
	meta := map[string]string{}
	for k, v := range r.meta {
		meta[k] = v
	}
	for k, v := range want {
		meta[k] = v
	}
	t := safetensors.Tensor{Name: recordTensor, DType: safetensors.F64, Shape: r.shape, Data: data}
	if err := safetensors.WriteFile(path, []safetensors.Tensor{t}, meta); err != nil {
		return fmt.Errorf("convert: MLP operator cache: %w", err)
	}
	return nil
}

// readRecord reads a record written by writeRecord whose metadata matches
// want (a missing file gives an error wrapping os.ErrNotExist).
func readRecord(path string, want map[string]string) (record, error) {
	if _, err := os.Stat(path); err != nil {
		return record{}, err
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return record{}, err
	}
	defer f.Close()
	meta := f.Metadata()
	for k, v := range want {
		if meta[k] != v {
			return record{}, fmt.Errorf("convert: MLP operator cache %s: metadata %s is %q, want %q", path, k, meta[k], v)
		}
	}
	info, ok := f.Info(recordTensor)
	if !ok || info.DType != safetensors.F64 {
		return record{}, fmt.Errorf("convert: MLP operator cache %s: no F64 tensor %q", path, recordTensor)
	}
	b, err := f.Bytes(recordTensor)
	if err != nil {
		return record{}, err
	}
	r := record{shape: info.Shape, data: make([]float64, len(b)/8), meta: meta}
	for i := range r.data {
		r.data[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return r, nil
}
