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

	"github.com/lorasync/lorasync/convert/lorasuite"
	"github.com/lorasync/lorasync/convert/safetensors"
)

// mlpFormat versions the MLP operator cache files.
const mlpFormat = "lorasync-gram-factor/1"

// gramTensor is the one tensor of a cache file: the packed upper Cholesky
// factor (lorasuite.GramFactor.U), F64, shape [n(n+1)/2].
const gramTensor = "gram_u_packed"

// mlpCache hands out the adapter-independent factors of one pair's MLP
// projection: an MLP operator per (layer pair, role), the Cholesky factor of
// the old base weight's ridged Gram, and the pinv(W_x) factor. With a cache
// directory they live next to the pair's .gob,
//
//	<CacheDir>/pairs/<pairkey>.mlp/<old>-<new>-<role>.safetensors
//	<CacheDir>/pairs/<pairkey>.mlp/wx-pinv.safetensors
//
// computed on first need under a per-file lock (concurrent conversions of
// the same pair compute each once) and read back by later adapters. Without
// one (dir == "") they are computed in memory for this conversion only. They
// are float64: see lorasuite.GramFactor for why float32 would not do.
type mlpCache struct {
	dir   string // "" disables the files
	key   string // pair key, checked against each file's metadata
	log   *slog.Logger
	stats MLPTimings
}

func newMLPCache(o Options, pair *Pair) *mlpCache {
	c := &mlpCache{key: pair.Key, log: o.Logger}
	if o.CacheDir != "" {
		c.dir = filepath.Join(o.CacheDir, "pairs", pair.Key+".mlp")
	}
	return c
}

// operator returns the MLP operator for oldLayer's role (oldW is the old base
// weight of that role), from the cache when there, else computed (and
// stored). The caller has checked that oldLayer maps to newLayer.
func (c *mlpCache) operator(ctx context.Context, pa *lorasuite.PairAnalysis, role lorasuite.Role, oldLayer, newLayer int,
	oldW []float32, oldInter int) (*lorasuite.MLPOperator, error) {
	start := time.Now()
	defer func() { c.stats.Seconds += time.Since(start).Seconds() }()
	var op *lorasuite.MLPOperator
	want := map[string]string{
		"role": string(role), "old_layer": strconv.Itoa(oldLayer), "new_layer": strconv.Itoa(newLayer),
		"inter": strconv.Itoa(oldInter), "hidden": strconv.Itoa(pa.Old.Hidden),
	}
	name := fmt.Sprintf("%d-%d-%s.safetensors", oldLayer, newLayer, role)
	g, cached, err := c.factor(ctx, name, want, func() (*lorasuite.GramFactor, error) {
		var err error
		op, err = lorasuite.NewMLPOperator(ctx, pa, role, oldLayer, oldW, oldInter)
		if err == nil && op == nil {
			err = fmt.Errorf("layer %d is not in the layer map", oldLayer)
		}
		if err != nil {
			return nil, err
		}
		return op.Gram, nil
	})
	if err != nil {
		return nil, err
	}
	if cached {
		c.stats.Cached++
		op = &lorasuite.MLPOperator{Role: role, OldLayer: oldLayer, NewLayer: newLayer, Inter: oldInter, Hidden: pa.Old.Hidden, Gram: g}
		if err := op.Validate(pa); err != nil {
			return nil, fmt.Errorf("convert: MLP operator cache %s: %w", filepath.Join(c.dir, name), err)
		}
	} else {
		c.stats.Computed++
	}
	return op, nil
}

// transferPinv installs the pinv(W_x) factor in tr, from the cache when
// there, else computed (and stored). No-op for the identity.
func (c *mlpCache) transferPinv(ctx context.Context, tr *lorasuite.Transfer) error {
	if tr.Identity {
		return nil
	}
	start := time.Now()
	defer func() { c.stats.Seconds += time.Since(start).Seconds() }()
	want := map[string]string{"role": "transfer_pinv", "d_old": strconv.Itoa(tr.DOld), "d_new": strconv.Itoa(tr.DNew)}
	g, cached, err := c.factor(ctx, "wx-pinv.safetensors", want, tr.PinvFactor)
	if err != nil {
		return err
	}
	c.stats.TransferPinv = "computed"
	if cached {
		c.stats.TransferPinv = "cached"
	}
	if err := tr.SetPinvFactor(g); err != nil {
		return fmt.Errorf("convert: MLP operator cache %s: %w", filepath.Join(c.dir, "wx-pinv.safetensors"), err)
	}
	return nil
}

// factor returns the Gram factor stored as name with metadata want, or
// compute's, which it stores. cached says which. A file that is unreadable
// or does not match want is logged and replaced.
func (c *mlpCache) factor(ctx context.Context, name string, want map[string]string,
	compute func() (*lorasuite.GramFactor, error)) (g *lorasuite.GramFactor, cached bool, err error) {
	if c.dir == "" {
		g, err = compute()
		return g, false, err
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return nil, false, fmt.Errorf("convert: MLP operator cache: %w", err)
	}
	path := filepath.Join(c.dir, name)
	lock := flock.New(path + ".lock")
	if _, err := lock.TryLockContext(ctx, 200*time.Millisecond); err != nil {
		return nil, false, fmt.Errorf("convert: MLP operator cache lock %s: %w", lock.Path(), err)
	}
	defer lock.Unlock()
	want["format"], want["pair_key"] = mlpFormat, c.key
	if g, err := readFactor(path, want); err == nil {
		return g, true, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		c.log.Warn("MLP operator cache entry unusable, recomputing", "path", path, "err", err)
	}
	if g, err = compute(); err != nil {
		return nil, false, err
	}
	if err := writeFactor(path, g, want); err != nil {
		return nil, false, err
	}
	return g, false, nil
}

// writeFactor stores g atomically (safetensors.WriteFile: temp file, fsync,
// rename) with want, the order and the ridge as metadata.
func writeFactor(path string, g *lorasuite.GramFactor, want map[string]string) error {
	data := make([]byte, 8*len(g.U))
	for i, v := range g.U {
		binary.LittleEndian.PutUint64(data[8*i:], math.Float64bits(v))
	}
	meta := map[string]string{"n": strconv.Itoa(g.N), "ridge": strconv.FormatFloat(g.Ridge, 'g', -1, 64)}
	for k, v := range want {
		meta[k] = v
	}
	t := safetensors.Tensor{Name: gramTensor, DType: safetensors.F64, Shape: []int{len(g.U)}, Data: data}
	if err := safetensors.WriteFile(path, []safetensors.Tensor{t}, meta); err != nil {
		return fmt.Errorf("convert: MLP operator cache: %w", err)
	}
	return nil
}

// readFactor reads a factor written by writeFactor, checking the metadata
// against want and the factor itself (lorasuite.GramFactor.Validate).
func readFactor(path string, want map[string]string) (*lorasuite.GramFactor, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	meta := f.Metadata()
	for k, v := range want {
		if meta[k] != v {
			return nil, fmt.Errorf("convert: MLP operator cache %s: metadata %s is %q, want %q", path, k, meta[k], v)
		}
	}
	n, err := strconv.Atoi(meta["n"])
	if err != nil {
		return nil, fmt.Errorf("convert: MLP operator cache %s: order %q: %w", path, meta["n"], err)
	}
	ridge, err := strconv.ParseFloat(meta["ridge"], 64)
	if err != nil {
		return nil, fmt.Errorf("convert: MLP operator cache %s: ridge %q: %w", path, meta["ridge"], err)
	}
	info, ok := f.Info(gramTensor)
	if !ok || info.DType != safetensors.F64 || len(info.Shape) != 1 || n < 1 || info.Shape[0] != lorasuite.PackedLen(n) {
		return nil, fmt.Errorf("convert: MLP operator cache %s: want tensor %s F64 [%d]", path, gramTensor, lorasuite.PackedLen(max(n, 0)))
	}
	data, err := f.Bytes(gramTensor)
	if err != nil {
		return nil, err
	}
	g := &lorasuite.GramFactor{N: n, Ridge: ridge, U: make([]float64, info.Shape[0])}
	for i := range g.U {
		g.U[i] = math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:]))
	}
	if err := g.Validate(); err != nil {
		return nil, fmt.Errorf("convert: MLP operator cache %s: %w", path, err)
	}
	return g, nil
}
