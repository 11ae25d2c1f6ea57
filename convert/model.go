package convert

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/lorasuite"
	"github.com/lorasync/lorasync/convert/safetensors"
	"github.com/lorasync/lorasync/convert/tokenizer"
)

// model is one opened base model directory.
type model struct {
	dir     string
	cfg     *arch.Config
	weights safetensors.Reader
	tok     *tokenizer.Tokenizer // nil when the directory has no tokenizer.json
	id      string               // content identity, see identify
}

// openModel opens a base model directory: config.json, the safetensors
// checkpoint (single or sharded) checked against the config, and
// tokenizer.json when present.
func openModel(dir string) (_ *model, err error) {
	cfg, err := arch.Load(dir)
	if err != nil {
		return nil, err
	}
	w, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			w.Close()
		}
	}()
	if err := cfg.CheckWeights(w); err != nil {
		return nil, err
	}
	m := &model{dir: dir, cfg: cfg, weights: w}
	tp := filepath.Join(dir, "tokenizer.json")
	if _, err := os.Stat(tp); err == nil {
		if m.tok, err = tokenizer.Load(tp); err != nil {
			return nil, err
		}
	}
	if m.id, err = identify(dir); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *model) Close() error { return m.weights.Close() }

// dims is the attention shape lorasuite needs.
func (m *model) dims() lorasuite.Dims {
	c := m.cfg
	return lorasuite.Dims{Hidden: c.Hidden, Layers: c.Layers, Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim}
}

// Layer implements lorasuite.LayerSource: one layer's q/k/v/o converted to
// float32 from the mapping, nothing else held. Each weight's mapped pages are
// released once converted (safetensors.Releaser), so streaming every layer
// does not leave the whole checkpoint resident.
func (m *model) Layer(ctx context.Context, i int) (*lorasuite.LayerWeights, error) {
	var lw lorasuite.LayerWeights
	for _, t := range []struct {
		dst  *[]float32
		role arch.Role
	}{{&lw.Q, arch.Q}, {&lw.K, arch.K}, {&lw.V, arch.V}, {&lw.O, arch.O}} {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		v, err := m.float32(m.cfg.Weight(i, t.role))
		if err != nil {
			return nil, err
		}
		*t.dst = v
	}
	return &lw, nil
}

// float32 converts one whole weight to float32 and releases its mapped pages.
func (m *model) float32(name string) ([]float32, error) {
	v, err := m.weights.Float32(name)
	if err != nil {
		return nil, err
	}
	if err := safetensors.Release(m.weights, name); err != nil {
		return nil, err
	}
	return v, nil
}

var snapshotDir = regexp.MustCompile(`(^|/)snapshots/([0-9a-f]{40})$`)

// identify names a model directory's content: "commit:<sha>" for a Hub cache
// snapshot (snapshots/<40-hex commit>), else "sha256:<hex>" over the names and
// contents of its config, tokenizer and weight files. Either way the same
// bytes give the same identity wherever they live.
func identify(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if m := snapshotDir.FindStringSubmatch(filepath.ToSlash(abs)); m != nil {
		return "commit:" + m[2], nil
	}
	sum, err := hashFiles(dir, func(name string) bool {
		return strings.HasSuffix(name, ".safetensors") || strings.HasSuffix(name, ".json")
	})
	if err != nil {
		return "", err
	}
	return "sha256:" + sum, nil
}

// hashFiles hashes the names and contents of dir's regular files that keep
// accepts, in name order.
func hashFiles(dir string, keep func(string) bool) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if !e.IsDir() && keep(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00", n)
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("%s: %w", filepath.Join(dir, n), err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
