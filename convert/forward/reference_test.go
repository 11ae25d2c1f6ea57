package forward

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/safetensors"
)

// writeModel writes config.json and random weights (dtype) for cfgJSON into a
// temp dir. Norm weights are 1 +- 0.2, other weights N(0, 0.5^2/in) so that
// activations stay O(1) through a few layers.
func writeModel(t *testing.T, cfgJSON string, dtype safetensors.DType, seed uint64) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfgJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := arch.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	var ts []safetensors.Tensor
	for _, spec := range cfg.Tensors() {
		n := 1
		for _, d := range spec.Shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			if len(spec.Shape) == 1 && !isBias(spec.Name) {
				v[i] = float32(1 + 0.2*(2*rng.Float64()-1))
			} else {
				v[i] = float32(rng.NormFloat64() * 0.5 / math.Sqrt(float64(spec.Shape[len(spec.Shape)-1])))
			}
		}
		if isBias(spec.Name) {
			for i := range v {
				v[i] = float32(0.3 * rng.NormFloat64())
			}
		}
		ts = append(ts, safetensors.FromFloat32(spec.Name, dtype, spec.Shape, v))
	}
	if err := safetensors.WriteFile(filepath.Join(dir, "model.safetensors"), ts, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

func isBias(name string) bool { return len(name) > 5 && name[len(name)-5:] == ".bias" }

// refModel is a deliberately naive float64 forward pass, written from the
// transformers modeling code position by position, to cross-check the
// batched float32 implementation.
type refModel struct {
	cfg *arch.Config
	r   safetensors.Reader
	t   *testing.T
}

func (m refModel) get(name string) []float64 {
	x, err := m.r.Float32(name)
	if err != nil {
		m.t.Fatal(err)
	}
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// matvec is W x for W out x in.
func matvec(w []float64, x []float64, out int) []float64 {
	in := len(x)
	y := make([]float64, out)
	for o := 0; o < out; o++ {
		for i := 0; i < in; i++ {
			y[o] += w[o*in+i] * x[i]
		}
	}
	return y
}

func refNorm(x, w []float64, eps float64) []float64 {
	var ss float64
	for _, v := range x {
		ss += v * v
	}
	inv := 1 / math.Sqrt(ss/float64(len(x))+eps)
	y := make([]float64, len(x))
	for i := range x {
		y[i] = w[i] * x[i] * inv
	}
	return y
}

// rotate applies RoPE to one head vector at position p: the pair
// (x_i, x_{i+h/2}) turns by angle p * freq_i.
func rotate(x []float64, p int, freq []float64) {
	half := len(x) / 2
	for i := 0; i < half; i++ {
		a := float64(p) * freq[i]
		x0, x1 := x[i], x[i+half]
		x[i] = x0*math.Cos(a) - x1*math.Sin(a)
		x[i+half] = x1*math.Cos(a) + x0*math.Sin(a)
	}
}

// run returns every stage for one sequence, as rows of float64.
func (m refModel) run(ids []int, freq []float64) map[string][][]float64 {
	c := m.cfg
	d, hd, H, G := c.Hidden, c.HeadDim, c.Heads, c.KVHeads
	emb := m.get(c.Embed())
	out := map[string][][]float64{}
	h := make([][]float64, len(ids))
	for p, id := range ids {
		h[p] = append([]float64(nil), emb[id*d:(id+1)*d]...)
	}
	out[Embeddings] = clone(h)
	bias := func(l int, r arch.Role, y []float64) []float64 {
		if name := c.Bias(l, r); name != "" {
			b := m.get(name)
			for i := range y {
				y[i] += b[i]
			}
		}
		return y
	}
	for l := 0; l < c.Layers; l++ {
		wq, wk, wv, wo := m.get(c.Weight(l, arch.Q)), m.get(c.Weight(l, arch.K)), m.get(c.Weight(l, arch.V)), m.get(c.Weight(l, arch.O))
		wg, wu, wd := m.get(c.Weight(l, arch.Gate)), m.get(c.Weight(l, arch.Up)), m.get(c.Weight(l, arch.Down))
		n1, n2 := m.get(c.InputNorm(l)), m.get(c.PostAttnNorm(l))
		var qn, kn []float64
		if c.QKNorm {
			qn, kn = m.get(c.QNorm(l)), m.get(c.KNorm(l))
		}
		qs := make([][]float64, len(ids))
		ks := make([][]float64, len(ids))
		vs := make([][]float64, len(ids))
		for p := range ids {
			x := refNorm(h[p], n1, c.RMSNormEps)
			qs[p] = bias(l, arch.Q, matvec(wq, x, H*hd))
			ks[p] = bias(l, arch.K, matvec(wk, x, G*hd))
			vs[p] = bias(l, arch.V, matvec(wv, x, G*hd))
			for j := 0; j < H; j++ {
				head := qs[p][j*hd : (j+1)*hd]
				if qn != nil {
					copy(head, refNorm(head, qn, c.RMSNormEps))
				}
				rotate(head, p, freq)
			}
			for j := 0; j < G; j++ {
				head := ks[p][j*hd : (j+1)*hd]
				if kn != nil {
					copy(head, refNorm(head, kn, c.RMSNormEps))
				}
				rotate(head, p, freq)
			}
		}
		next := make([][]float64, len(ids))
		for p := range ids {
			att := make([]float64, H*hd)
			for j := 0; j < H; j++ {
				g := j * G / H
				var ws []float64
				var js []int
				for q := 0; q <= p; q++ {
					if c.SlidingWindow > 0 && p-q >= c.SlidingWindow {
						continue
					}
					var dot float64
					for i := 0; i < hd; i++ {
						dot += qs[p][j*hd+i] * ks[q][g*hd+i]
					}
					ws = append(ws, dot/math.Sqrt(float64(hd)))
					js = append(js, q)
				}
				mx := math.Inf(-1)
				for _, w := range ws {
					mx = math.Max(mx, w)
				}
				var sum float64
				for i := range ws {
					ws[i] = math.Exp(ws[i] - mx)
					sum += ws[i]
				}
				for i, q := range js {
					for e := 0; e < hd; e++ {
						att[j*hd+e] += ws[i] / sum * vs[q][g*hd+e]
					}
				}
			}
			o := bias(l, arch.O, matvec(wo, att, d))
			r := make([]float64, d)
			for i := range r {
				r[i] = h[p][i] + o[i]
			}
			x := refNorm(r, n2, c.RMSNormEps)
			gt := bias(l, arch.Gate, matvec(wg, x, c.Intermediate))
			up := bias(l, arch.Up, matvec(wu, x, c.Intermediate))
			for i := range gt {
				gt[i] = gt[i] / (1 + math.Exp(-gt[i])) * up[i]
			}
			dn := bias(l, arch.Down, matvec(wd, gt, d))
			for i := range r {
				r[i] += dn[i]
			}
			next[p] = r
		}
		h = next
		out[LayerName(l)] = clone(h)
	}
	fn := m.get(c.FinalNorm())
	lm := m.get(c.LMHead())
	for p := range h {
		h[p] = refNorm(h[p], fn, c.RMSNormEps)
	}
	out[FinalNorm] = clone(h)
	logits := make([][]float64, len(h))
	for p := range h {
		logits[p] = matvec(lm, h[p], c.Vocab)
	}
	out[Logits] = logits
	return out
}

func clone(x [][]float64) [][]float64 {
	out := make([][]float64, len(x))
	for i := range x {
		out[i] = append([]float64(nil), x[i]...)
	}
	return out
}

// refTol bounds maxAbsDiff/maxAbsRef between our float32 pass and the float64
// reference: float32 rounding through ~10 chained ops on O(1) values.
const refTol = 1e-4

var refConfigs = map[string]string{
	// qwen2: q/k/v biases (and none on o), GQA 4 -> 2.
	"qwen2": `{"model_type": "qwen2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
		"num_key_value_heads": 2, "intermediate_size": 48, "vocab_size": 40, "rms_norm_eps": 1e-6,
		"rope_theta": 1000000.0, "tie_word_embeddings": false, "hidden_act": "silu"}`,
	// qwen3: head_dim 16 != hidden/heads, q_norm/k_norm, tied embeddings.
	"qwen3": `{"model_type": "qwen3", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
		"num_key_value_heads": 1, "head_dim": 16, "intermediate_size": 40, "vocab_size": 40,
		"rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true, "hidden_act": "silu"}`,
	// mistral: sliding window shorter than the sequence.
	"mistral": `{"model_type": "mistral", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
		"num_key_value_heads": 2, "intermediate_size": 48, "vocab_size": 40, "rms_norm_eps": 1e-5,
		"rope_theta": 10000.0, "sliding_window": 4, "hidden_act": "silu"}`,
	// llama with Llama-3.1 rope scaling and no GQA.
	"llama3": `{"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
		"num_key_value_heads": 2, "intermediate_size": 48, "vocab_size": 40, "rms_norm_eps": 1e-5,
		"rope_theta": 500000.0, "hidden_act": "silu", "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
		"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8}}`,
}

func TestAgainstNaiveReference(t *testing.T) {
	dtypes := map[string]safetensors.DType{"qwen2": safetensors.BF16, "qwen3": safetensors.F32, "mistral": safetensors.F16, "llama3": safetensors.BF16}
	ids := []int{3, 17, 0, 39, 22, 22, 8, 5, 31, 12, 1}
	for name, cfgJSON := range refConfigs {
		t.Run(name, func(t *testing.T) {
			dir := writeModel(t, cfgJSON, dtypes[name], 7)
			m, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			ref := refModel{cfg: m.Config(), r: m.r, t: t}
			freq, err := invFreq(m.Config())
			if err != nil {
				t.Fatal(err)
			}
			want := ref.run(ids, freq)
			stages := 0
			err = m.Walk(context.Background(), [][]int{ids}, Options{Logits: true}, func(stage string, st [][]float32) error {
				w := want[stage]
				dim := len(w[0])
				var diff, scale float64
				for p := range w {
					for i := range w[p] {
						diff = math.Max(diff, math.Abs(float64(st[0][p*dim+i])-w[p][i]))
						scale = math.Max(scale, math.Abs(w[p][i]))
					}
				}
				if diff/scale > refTol {
					return fmt.Errorf("%s: relative error %.2e > %.0e", stage, diff/scale, refTol)
				}
				stages++
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if stages != m.Config().Layers+3 {
				t.Errorf("compared %d stages, want %d", stages, m.Config().Layers+3)
			}
		})
	}
}

// TestBatchMatchesSingleSequences runs a batch big enough for the parallel
// paths (rows split over goroutines for RMSNorm and SwiGLU, sequences over
// goroutines for attention under single-threaded BLAS, and more rows than
// one layer call takes) and checks every sequence against a Walk of that
// sequence alone, which stays on the serial paths TestAgainstNaiveReference
// checks against the naive reference.
func TestBatchMatchesSingleSequences(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4)) // goroutines even on one core
	dir := writeModel(t, refConfigs["qwen3"], safetensors.BF16, 5)
	m, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	seqs := make([][]int, 60)
	rows := 0
	for k := range seqs {
		seqs[k] = make([]int, 20+rng.IntN(60))
		for i := range seqs[k] {
			seqs[k][i] = rng.IntN(m.Config().Vocab)
		}
		rows += len(seqs[k])
	}
	if qOut, _ := m.Config().Shape(arch.Q); rows <= batchRows || rows*qOut < 2*minParallelElems {
		t.Fatalf("batch of %d rows is too small to reach the parallel paths", rows)
	}
	batch := map[string][][]float32{}
	err = m.Walk(context.Background(), seqs, Options{}, func(stage string, st [][]float32) error {
		for _, s := range st {
			batch[stage] = append(batch[stage], slices.Clone(s))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const tol = 1e-5 // float32 rounding: BLAS may block a 1-row and a 2048-row product differently
	for _, k := range []int{0, 1, 29, 58, 59} {
		err := m.Walk(context.Background(), [][]int{seqs[k]}, Options{}, func(stage string, st [][]float32) error {
			want := batch[stage][k]
			var diff, scale float64
			for i, v := range st[0] {
				diff = math.Max(diff, math.Abs(float64(v-want[i])))
				scale = math.Max(scale, math.Abs(float64(v)))
			}
			if !(diff <= tol*scale) {
				return fmt.Errorf("sequence %d, %s: batched and alone differ by %.2e (scale %.2e)", k, stage, diff, scale)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
