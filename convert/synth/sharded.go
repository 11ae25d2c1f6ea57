package synth

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/x448/float16"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/safetensors"
)

// ShardedOptions tune WriteRandomSharded.
type ShardedOptions struct {
	// Seed selects the weights; the same seed gives the same bytes.
	Seed uint64
	// Vocab is the tokenizer vocabulary (token bytes by id, len Spec.Vocab,
	// the last token special, as Vocabulary returns); nil writes no
	// tokenizer.json.
	Vocab [][]byte
	// Progress, if set, is called after each shard with (done, total).
	Progress func(done, total int)
}

// shardChunk is the number of elements filled by one RNG stream: chunks are
// filled in parallel, each from a seed derived from (seed, tensor, chunk), so
// the bytes do not depend on the number of workers.
const shardChunk = 1 << 20

// ShardedSize returns the bytes of tensor data WriteRandomSharded writes for
// spec (the safetensors headers and JSON files add a few MB at most).
func ShardedSize(spec Spec) (int64, error) {
	spec = spec.withDefaults()
	cfg, err := spec.Config()
	if err != nil {
		return 0, err
	}
	var n int64
	for _, t := range cfg.Tensors() {
		n += tensorBytes(t, spec.DType)
	}
	return n, nil
}

// WriteRandomSharded streams a checkpoint with random weights into dir, the
// way transformers shards large models: config.json, tokenizer.json (when
// o.Vocab is set), model-000NN-of-000MM.safetensors with the embedding in
// the first shard, one decoder layer per shard after it and the final norm
// (plus an untied lm_head) in the last, and model.safetensors.index.json.
// Only one shard is held in memory (the largest is the embedding: Vocab x
// Hidden x dtype size, 1 GB for Llama-3-8B in bf16), so models far larger
// than RAM can be generated.
//
// Values are uniform with the standard deviation Random uses — linear layers
// 1/sqrt(in), embeddings 1, biases 0.02, norm weights exactly 1 — filled
// straight into the dtype (BF16, F16 or F32) from a fast counter-based RNG on
// GOMAXPROCS goroutines: statistically crude, but right in scale and shape,
// which is what timing and memory benchmarks need.
//
// The index is written last, so a directory without it is incomplete. On
// error, the files written so far are removed.
func WriteRandomSharded(ctx context.Context, dir string, spec Spec, o ShardedOptions) (err error) {
	spec = spec.withDefaults()
	cfg, err := spec.Config()
	if err != nil {
		return err
	}
	if o.Vocab != nil && len(o.Vocab) != spec.Vocab {
		return fmt.Errorf("synth: %s: vocabulary of %d tokens for a model of vocab %d", dir, len(o.Vocab), spec.Vocab)
	}
	switch spec.DType {
	case safetensors.BF16, safetensors.F16, safetensors.F32:
	default:
		return fmt.Errorf("synth: %s: cannot generate dtype %s (want BF16, F16 or F32)", dir, spec.DType)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	var written []string
	defer func() {
		if err != nil {
			for _, p := range written {
				os.Remove(p)
			}
		}
	}()
	cfgPath := filepath.Join(dir, "config.json")
	if err := writeJSON(cfgPath, spec.ConfigJSON()); err != nil {
		return err
	}
	written = append(written, cfgPath)
	if o.Vocab != nil {
		tokPath := filepath.Join(dir, "tokenizer.json")
		if err := WriteTokenizer(tokPath, o.Vocab); err != nil {
			return err
		}
		written = append(written, tokPath)
	}

	shards := shardGroups(cfg)
	var largest int64
	for _, g := range shards {
		var n int64
		for _, t := range g {
			n += tensorBytes(t, spec.DType)
		}
		largest = max(largest, n)
	}
	arena := make([]byte, 0, largest) // reused by every shard
	weightMap := make(map[string]string)
	var total int64
	for i, g := range shards {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
		buf := arena[:0]
		tensors := make([]safetensors.Tensor, len(g))
		for k, t := range g {
			nb := tensorBytes(t, spec.DType)
			data := buf[len(buf) : len(buf)+int(nb)]
			buf = buf[:len(buf)+int(nb)]
			if err := fillTensor(ctx, data, t, spec.DType, o.Seed); err != nil {
				return err
			}
			tensors[k] = safetensors.Tensor{Name: t.Name, DType: spec.DType, Shape: t.Shape, Data: data}
			weightMap[t.Name] = name
			total += nb
		}
		path := filepath.Join(dir, name)
		if err := safetensors.WriteFile(path, tensors, map[string]string{"format": "pt"}); err != nil {
			return err
		}
		written = append(written, path)
		if o.Progress != nil {
			o.Progress(i+1, len(shards))
		}
	}
	index := map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap}
	return writeJSON(filepath.Join(dir, safetensors.IndexFile), index)
}

// shardGroups splits cfg.Tensors() into shards: the embedding, each decoder
// layer (its tensors run from its input norm to the next layer's), then the
// final norm with an untied lm_head.
func shardGroups(cfg *arch.Config) [][]arch.TensorSpec {
	specs := cfg.Tensors()
	starts := map[string]bool{cfg.FinalNorm(): true}
	for l := 0; l < cfg.Layers; l++ {
		starts[cfg.InputNorm(l)] = true
	}
	var groups [][]arch.TensorSpec
	var cur []arch.TensorSpec
	for _, t := range specs {
		if starts[t.Name] && len(cur) > 0 {
			groups = append(groups, cur)
			cur = nil
		}
		cur = append(cur, t)
	}
	return append(groups, cur)
}

func tensorBytes(t arch.TensorSpec, dt safetensors.DType) int64 {
	n := int64(dt.Size())
	for _, d := range t.Shape {
		n *= int64(d)
	}
	return n
}

// fillSpec returns how a tensor is filled: a constant (norm weights) or
// uniform values of standard deviation std.
func fillSpec(t arch.TensorSpec) (constant bool, std float64) {
	switch {
	case len(t.Shape) == 1 && strings.Contains(t.Name, "norm"):
		return true, 1
	case len(t.Shape) == 1: // bias
		return false, 0.02
	case strings.Contains(t.Name, "embed") || strings.Contains(t.Name, "lm_head"):
		return false, 1
	}
	return false, 1 / math.Sqrt(float64(t.Shape[1]))
}

// fillTensor writes t's values into data (len = elements x dtype size) in
// parallel chunks.
func fillTensor(ctx context.Context, data []byte, t arch.TensorSpec, dt safetensors.DType, seed uint64) error {
	size := dt.Size()
	n := len(data) / size
	constant, std := fillSpec(t)
	if constant {
		for i := 0; i < n; i++ {
			putValue(data[i*size:], dt, float32(std))
		}
		return nil
	}
	h := fnv.New64a()
	h.Write([]byte(t.Name))
	base := seed ^ h.Sum64()
	// Uniform on (-a, a) has standard deviation a/sqrt(3).
	a := float32(std * math.Sqrt(3))
	chunks := (n + shardChunk - 1) / shardChunk
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(runtime.GOMAXPROCS(0), chunks); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range next {
				lo, hi := c*shardChunk, min((c+1)*shardChunk, n)
				fillUniform(data[lo*size:hi*size], dt, a, splitmix(base+uint64(c)*0x9e3779b97f4a7c15))
			}
		}()
	}
	var err error
	for c := 0; c < chunks; c++ {
		if err = ctx.Err(); err != nil {
			break
		}
		next <- c
	}
	close(next)
	wg.Wait()
	return err
}

// fillUniform fills dst with uniform values on (-a, a) in dtype dt: each
// 64-bit draw of a wyrand stream gives four 16-bit uniforms, which is finer
// than bf16's 8-bit mantissa.
func fillUniform(dst []byte, dt safetensors.DType, a float32, state uint64) {
	size := dt.Size()
	n := len(dst) / size
	scale := 2 * a / 65536
	off := scale/2 - a
	for i := 0; i < n; i += 4 {
		state += 0xa0761d6478bd642f
		hi, lo := bits.Mul64(state, state^0xe7037ed1a0b428db)
		r := hi ^ lo
		for k := i; k < min(i+4, n); k++ {
			putValue(dst[k*size:], dt, float32(uint16(r))*scale+off)
			r >>= 16
		}
	}
}

// putValue stores v in dtype dt (round to nearest even) at the start of dst.
func putValue(dst []byte, dt safetensors.DType, v float32) {
	switch dt {
	case safetensors.BF16:
		b := math.Float32bits(v)
		b += 0x7fff + (b>>16)&1
		binary.LittleEndian.PutUint16(dst, uint16(b>>16))
	case safetensors.F16:
		binary.LittleEndian.PutUint16(dst, float16.Fromfloat32(v).Bits())
	default:
		binary.LittleEndian.PutUint32(dst, math.Float32bits(v))
	}
}

// splitmix scrambles a seed into a well-mixed RNG state.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// UpgradeVocabulary returns a new model's vocabulary that shares every
// regular token of old (the last token of old, the special one, stays last)
// in a shuffled order, then extra words not in old, as Upgrade does. With
// the new model's tokenizer, the shared vocabulary is len(old) tokens, found
// only by matching bytes (ids differ).
func UpgradeVocabulary(old [][]byte, extra int, seed uint64) [][]byte {
	vo := len(old)
	if vo < 257 {
		panic(fmt.Sprintf("synth: UpgradeVocabulary of %d tokens, need at least 257", vo))
	}
	have := make(map[string]bool, vo+extra)
	for _, t := range old {
		have[string(t)] = true
	}
	out := make([][]byte, 0, vo+extra)
	for _, i := range newRNG(seed).Perm(vo - 1) {
		out = append(out, old[i])
	}
	for n := vo + extra + 1; len(out) < vo-1+extra; n *= 2 {
		out = out[:vo-1]
		words := Vocabulary(n)
		for _, w := range words[:n-1] {
			if len(out) == vo-1+extra {
				break
			}
			if !have[string(w)] {
				out = append(out, w)
			}
		}
	}
	return append(out, old[vo-1])
}
