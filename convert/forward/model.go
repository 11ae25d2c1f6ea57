package forward

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/lorasync/lorasync/convert/arch"
	_ "github.com/lorasync/lorasync/convert/linalg" // routes blas32 to OpenBLAS in -tags openblas builds
	"github.com/lorasync/lorasync/convert/safetensors"
)

// Stage names, also the tensor names `lorasync activations` writes.
const (
	Embeddings = "embeddings" // token embeddings (times scale_emb for MiniCPM)
	FinalNorm  = "final_norm" // the last hidden state after the final RMSNorm
	Logits     = "logits"     // s x Vocab
)

// LayerName is the stage name of the hidden state after decoder layer i.
func LayerName(i int) string { return "layers." + strconv.Itoa(i) }

// ErrBadInput is wrapped for token ids outside the vocabulary and sequences
// longer than the model's positions.
var ErrBadInput = errors.New("forward: bad input")

// Model is a decoder-only transformer (llama, mistral, qwen2, qwen3, minicpm)
// whose weights stay in a safetensors reader until a layer needs them.
type Model struct {
	cfg     *arch.Config
	r       safetensors.Reader
	invFreq []float64
	owned   bool // Close closes r
}

// Open loads dir/config.json and the safetensors weights of dir, and checks
// that they agree. Close releases the weights.
func Open(dir string) (*Model, error) {
	cfg, err := arch.Load(dir)
	if err != nil {
		return nil, err
	}
	r, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	m, err := New(cfg, r)
	if err != nil {
		r.Close()
		return nil, err
	}
	m.owned = true
	return m, nil
}

// New wraps a config and a reader holding its weights. The reader stays the
// caller's: Close does not close it.
func New(cfg *arch.Config, r safetensors.Reader) (*Model, error) {
	if cfg.HiddenAct != "" && cfg.HiddenAct != "silu" {
		return nil, fmt.Errorf("forward: %s: hidden_act %q is not supported (only silu)", cfg.Path, cfg.HiddenAct)
	}
	if err := cfg.CheckWeights(r); err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	f, err := invFreq(cfg)
	if err != nil {
		return nil, fmt.Errorf("forward: %s: %w", cfg.Path, err)
	}
	return &Model{cfg: cfg, r: r, invFreq: f}, nil
}

// Config is the model's configuration.
func (m *Model) Config() *arch.Config { return m.cfg }

// Close releases the weights when the model opened them.
func (m *Model) Close() error {
	if m.owned {
		return m.r.Close()
	}
	return nil
}

// Options selects what Walk reports.
type Options struct {
	// MeanPool reports each stage as the mean over the sequence's positions
	// (one Hidden-long vector per sequence) instead of s x Hidden.
	MeanPool bool
	// Logits also computes s x Vocab logits (Vocab x Hidden x s multiply-adds
	// per sequence: expensive for large vocabularies). Never mean-pooled.
	Logits bool
}

// batchRows bounds the token rows one layer call multiplies at once: 2048
// rows keep the MLP intermediates (2048 x Intermediate floats, 90 MB for
// Intermediate 11008) modest while the GEMMs stay tall enough for BLAS to
// run near peak.
const batchRows = 2048

// Visit receives one stage (Embeddings, LayerName(i), FinalNorm, Logits) for
// every sequence, in input order: states[k] is s_k x Hidden row-major (or
// Hidden long when mean-pooled; s_k x Vocab for Logits). The slices are
// reused by later stages, so Visit must copy what it keeps.
type Visit func(stage string, states [][]float32) error

// Walk runs the forward pass over seqs layer by layer: each layer's weights
// are converted to float32 once for all sequences and dropped before the next
// layer, so memory holds one layer plus the hidden states of the batch. It
// checks ctx between layers. Sequences are independent (no padding, no
// cross-attention between them); an empty sequence gives empty states.
func (m *Model) Walk(ctx context.Context, seqs [][]int, opts Options, visit Visit) error {
	c := m.cfg
	maxLen := 0
	for k, ids := range seqs {
		for i, id := range ids {
			if id < 0 || id >= c.Vocab {
				return fmt.Errorf("%w: sequence %d position %d: token id %d outside the vocabulary [0, %d) of %s", ErrBadInput, k, i, id, c.Vocab, c.Path)
			}
		}
		maxLen = max(maxLen, len(ids))
	}
	if c.MaxPositions > 0 && maxLen > c.MaxPositions {
		return fmt.Errorf("%w: sequence of %d tokens exceeds max_position_embeddings %d of %s", ErrBadInput, maxLen, c.MaxPositions, c.Path)
	}
	rope := newRopeTable(m.invFreq, maxLen)

	h, err := m.embed(seqs)
	if err != nil {
		return err
	}
	report := func(stage string, st [][]float32, dim int) error {
		if !opts.MeanPool || stage == Logits {
			return visit(stage, st)
		}
		pooled := make([][]float32, len(st))
		for k, x := range st {
			pooled[k] = MeanPool(x, dim)
		}
		return visit(stage, pooled)
	}
	if err := report(Embeddings, h, c.Hidden); err != nil {
		return err
	}
	sc := &scratch{}
	var arena []float32 // one layer's weights, reused by the next
	for l := 0; l < c.Layers; l++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		w, err := m.loadLayer(l, &arena)
		if err != nil {
			return err
		}
		for lo := 0; lo < len(h); {
			hi, rows := lo, 0
			for hi < len(h) && (hi == lo || rows+len(h[hi])/c.Hidden <= batchRows) {
				rows += len(h[hi]) / c.Hidden
				hi++
			}
			copy(h[lo:hi], m.layer(w, h[lo:hi], rope, sc))
			lo = hi
		}
		if err := report(LayerName(l), h, c.Hidden); err != nil {
			return err
		}
	}
	fn, err := m.tensor(c.FinalNorm())
	if err != nil {
		return err
	}
	for k := range h {
		h[k] = rmsNorm(h[k], c.Hidden, fn, c.RMSNormEps)
	}
	if err := report(FinalNorm, h, c.Hidden); err != nil {
		return err
	}
	if !opts.Logits {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	logits, err := m.logits(h)
	if err != nil {
		return err
	}
	return visit(Logits, logits)
}

// MeanPool averages the rows of x (s x dim) in float64; an empty x gives zeros.
func MeanPool(x []float32, dim int) []float32 {
	if len(x)%dim != 0 {
		panic(fmt.Sprintf("forward: MeanPool: %d values are not rows of %d", len(x), dim))
	}
	acc := make([]float64, dim)
	s := len(x) / dim
	for r := 0; r < s; r++ {
		for i, v := range x[r*dim : (r+1)*dim] {
			acc[i] += float64(v)
		}
	}
	out := make([]float32, dim)
	for i, v := range acc {
		if s > 0 {
			out[i] = float32(v / float64(s))
		}
	}
	return out
}

// tensor converts one whole tensor to float32 and releases its mapped pages
// (safetensors.Releaser): a forward pass reads each weight once per Walk, so
// keeping the source pages resident would leave the whole checkpoint in the
// process's RSS.
func (m *Model) tensor(name string) ([]float32, error) {
	x, err := m.r.Float32(name)
	if err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	if err := safetensors.Release(m.r, name); err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	return x, nil
}

// tensorInto is tensor converting into dst (the tensor's size).
func (m *Model) tensorInto(dst []float32, name string) error {
	if err := m.r.Float32Into(dst, name); err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	if err := safetensors.Release(m.r, name); err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	return nil
}

// embed gathers the embedding rows of every token (reading only those rows).
func (m *Model) embed(seqs [][]int) ([][]float32, error) {
	c := m.cfg
	rows := map[int][]float32{}
	out := make([][]float32, len(seqs))
	for k, ids := range seqs {
		x := make([]float32, len(ids)*c.Hidden)
		for i, id := range ids {
			row, ok := rows[id]
			if !ok {
				var err error
				if row, err = m.r.Float32Rows(c.Embed(), id, id+1); err != nil {
					return nil, fmt.Errorf("forward: %w", err)
				}
				if c.ScaleEmb != 1 {
					for j := range row {
						row[j] *= float32(c.ScaleEmb)
					}
				}
				rows[id] = row
			}
			copy(x[i*c.Hidden:], row)
		}
		out[k] = x
	}
	return out, nil
}

// lmHeadChunk bounds the lm_head rows converted at once (8192 x Hidden floats).
const lmHeadChunk = 8192

// logits computes final (s x Hidden) times lm_head^T, reading lm_head in row
// chunks so a 150k-row vocabulary never sits in memory whole. MiniCPM divides
// the hidden state by Hidden/dim_model_base first.
func (m *Model) logits(final [][]float32) ([][]float32, error) {
	c := m.cfg
	out := make([][]float32, len(final))
	for k, x := range final {
		out[k] = make([]float32, len(x)/c.Hidden*c.Vocab)
	}
	scale := float32(1)
	if c.DimModelBase > 0 {
		scale = float32(float64(c.DimModelBase) / float64(c.Hidden))
	}
	for lo := 0; lo < c.Vocab; lo += lmHeadChunk {
		hi := min(lo+lmHeadChunk, c.Vocab)
		w, err := m.r.Float32Rows(c.LMHead(), lo, hi)
		if err != nil {
			return nil, fmt.Errorf("forward: %w", err)
		}
		if err := safetensors.ReleaseRows(m.r, c.LMHead(), lo, hi); err != nil {
			return nil, fmt.Errorf("forward: %w", err)
		}
		for k, x := range final {
			s := len(x) / c.Hidden
			part := linear(x, s, c.Hidden, w, hi-lo, nil)
			for i := 0; i < s; i++ {
				dst := out[k][i*c.Vocab+lo : i*c.Vocab+hi]
				for j, v := range part[i*(hi-lo) : (i+1)*(hi-lo)] {
					dst[j] = v * scale
				}
			}
		}
	}
	return out, nil
}

// residualScale is MiniCPM's scale_depth/sqrt(layers) on each residual
// branch, 1 for other families.
func (m *Model) residualScale() float32 {
	if m.cfg.ScaleDepth > 0 {
		return float32(m.cfg.ScaleDepth / math.Sqrt(float64(m.cfg.Layers)))
	}
	return 1
}
