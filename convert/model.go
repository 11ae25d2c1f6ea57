package convert

import (
	"context"
	"os"
	"path/filepath"
	"sync"

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
	id      string // content identity, see identify

	// tokPath is the directory's tokenizer.json, "" when it has none. It is
	// parsed on first use (tokenizer): only computing a pair needs it, and
	// a 150k-token tokenizer.json takes ~0.35 s to parse.
	tokPath string
	tokOnce sync.Once
	tok     *tokenizer.Tokenizer
	tokErr  error
}

// openModel opens a base model directory: config.json and the safetensors
// checkpoint (single or sharded) checked against the config. tokenizer.json,
// when present, is read on first use (model.tokenizer). cacheDir, if not
// empty, remembers the content identity of local directories (identify).
func openModel(dir, cacheDir string) (_ *model, err error) {
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
		m.tokPath = tp
	}
	if m.id, err = identify(dir, cacheDir); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *model) Close() error { return m.weights.Close() }

// hasTokenizer says whether the directory has a tokenizer.json.
func (m *model) hasTokenizer() bool { return m.tokPath != "" }

// tokenizer parses tokenizer.json once; nil, nil when there is none.
func (m *model) tokenizer() (*tokenizer.Tokenizer, error) {
	if m.tokPath == "" {
		return nil, nil
	}
	m.tokOnce.Do(func() { m.tok, m.tokErr = tokenizer.Load(m.tokPath) })
	return m.tok, m.tokErr
}

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
