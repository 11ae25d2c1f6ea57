package cka

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/forward"
	"github.com/lorasync/lorasync/convert/linalg"
	"github.com/lorasync/lorasync/convert/safetensors"
)

// Run with: go test -run ^$ -bench SimilarityQwen -benchtime 1x -tags openblas ./convert/cka
// LORASYNC_BENCH_CKA_LINES (default 64) sets the number of 128-token lines.

// lazyReader is a safetensors.Reader over generated weights: every row of
// every tensor is filled on demand from a generator seeded by (tensor, row),
// so a 3B-parameter model costs no disk and no memory until the forward pass
// converts a layer, as the real mmap reader does.
type lazyReader struct {
	infos map[string]safetensors.Info
	names []string
}

func newLazyReader(cfg *arch.Config) *lazyReader {
	r := &lazyReader{infos: map[string]safetensors.Info{}}
	for _, s := range cfg.Tensors() {
		r.infos[s.Name] = safetensors.Info{Name: s.Name, DType: safetensors.BF16, Shape: s.Shape, File: "synthetic"}
		r.names = append(r.names, s.Name)
	}
	return r
}

func (r *lazyReader) Names() []string { return r.names }
func (r *lazyReader) Info(name string) (safetensors.Info, bool) {
	in, ok := r.infos[name]
	return in, ok
}
func (r *lazyReader) Bytes(string) ([]byte, error) {
	return nil, errors.New("lazyReader: no raw bytes")
}
func (r *lazyReader) Metadata() map[string]string { return nil }
func (r *lazyReader) Close() error                { return nil }

func (r *lazyReader) Float32(name string) ([]float32, error) {
	in, ok := r.infos[name]
	if !ok {
		return nil, fmt.Errorf("lazyReader: %s: %w", name, safetensors.ErrNotFound)
	}
	return r.Float32Rows(name, 0, in.Shape[0])
}

func (r *lazyReader) Float32Into(dst []float32, name string) error {
	in, ok := r.infos[name]
	if !ok {
		return fmt.Errorf("lazyReader: %s: %w", name, safetensors.ErrNotFound)
	}
	if len(dst) != in.NumElements() {
		return fmt.Errorf("lazyReader: %s: %d elements into %d", name, in.NumElements(), len(dst))
	}
	r.fill(dst, in, 0, in.Shape[0])
	return nil
}

// Float32Rows fills rows lo..hi: norm weights 1 +- 0.1, biases and matrices
// uniform with standard deviation 0.5/sqrt(in) (activations stay O(1)).
func (r *lazyReader) Float32Rows(name string, lo, hi int) ([]float32, error) {
	in, ok := r.infos[name]
	if !ok {
		return nil, fmt.Errorf("lazyReader: %s: %w", name, safetensors.ErrNotFound)
	}
	cols := 1
	if len(in.Shape) > 1 {
		cols = in.Shape[1]
	}
	v := make([]float32, (hi-lo)*cols)
	r.fill(v, in, lo, hi)
	return v, nil
}

// fill writes rows lo..hi of in into v.
func (r *lazyReader) fill(v []float32, in safetensors.Info, lo, hi int) {
	h := fnv.New64a()
	h.Write([]byte(in.Name))
	seed := h.Sum64()
	if len(in.Shape) == 1 {
		g := rand.New(rand.NewPCG(seed, 0))
		for i := range v {
			v[i] = float32(1 + 0.1*(2*g.Float64()-1))
		}
		return
	}
	cols := in.Shape[1]
	a := float32(math.Sqrt(3) * 0.5 / math.Sqrt(float64(cols))) // uniform [-a, a] has sd a/sqrt(3)
	for row := lo; row < hi; row++ {
		x := seed ^ (uint64(row)+1)*0x9E3779B97F4A7C15
		dst := v[(row-lo)*cols : (row-lo+1)*cols]
		for i := range dst {
			// xorshift64*: cheap enough that generation costs about what bf16
			// conversion from a mapped file does.
			x ^= x >> 12
			x ^= x << 25
			x ^= x >> 27
			u := float32((x*0x2545F4914F6CDD1D)>>40) / float32(1<<24)
			dst[i] = a * (2*u - 1)
		}
	}
}

func qwenConfig(b *testing.B, layers, kvHeads, inter int, tied bool) *arch.Config {
	js := fmt.Sprintf(`{"model_type": "qwen2", "hidden_size": 2048, "num_hidden_layers": %d,
		"num_attention_heads": 16, "num_key_value_heads": %d, "intermediate_size": %d,
		"vocab_size": 151936, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
		"tie_word_embeddings": %v, "hidden_act": "silu", "max_position_embeddings": 32768}`, layers, kvHeads, inter, tied)
	c, err := arch.Parse("synthetic config.json", []byte(js))
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkSimilarityQwen15To25 is the CKA matrix for the paper's
// Qwen1.5-1.8B -> Qwen2.5-3B pair (24 -> 36 layers, hidden 2048, MHA 16 ->
// GQA 16/2, intermediate 5504 -> 11008, vocab 151936) on synthetic weights:
// both forward passes over 64 lines of 128 tokens plus the CKA matrix, with
// token samples capped at DefaultMaxSamples. It reports peak RSS.
func BenchmarkSimilarityQwen15To25(b *testing.B) {
	lines := 64
	if s := os.Getenv("LORASYNC_BENCH_CKA_LINES"); s != "" {
		if v, err := strconv.Atoi(s); err == nil && v > 1 {
			lines = v
		}
	}
	oc := qwenConfig(b, 24, 16, 5504, false)
	nc := qwenConfig(b, 36, 2, 11008, true)
	om, err := forward.New(oc, newLazyReader(oc))
	if err != nil {
		b.Fatal(err)
	}
	nm, err := forward.New(nc, newLazyReader(nc))
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("backend %s, kernel %s, %d BLAS threads", linalg.Backend(), linalg.Kernel(), linalg.Threads())
	rng := rand.New(rand.NewPCG(11, 12))
	seqs := randSeqs(rng, lines, 151936, 128, 128)
	for _, pool := range []Pooling{PoolTokens, PoolMean} {
		b.Run(fmt.Sprintf("pool=%d/lines=%d", pool, lines), func(b *testing.B) {
			for b.Loop() {
				start := time.Now()
				sim, n, err := SimilarityOfSeqs(context.Background(), om, 24, seqs, nm, 36, seqs, pool, DefaultMaxSamples)
				if err != nil {
					b.Fatal(err)
				}
				if r, c := sim.Dims(); r != 24 || c != 36 {
					b.Fatalf("matrix %d x %d", r, c)
				}
				b.ReportMetric(float64(n), "samples")
				b.ReportMetric(time.Since(start).Seconds(), "s/matrix")
			}
			var ru syscall.Rusage
			if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
				b.ReportMetric(float64(ru.Maxrss)/1024, "peak-RSS-MiB")
			}
		})
	}
}
