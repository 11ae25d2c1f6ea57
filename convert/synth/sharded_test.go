package synth

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/safetensors"
	"github.com/lorasync/lorasync/convert/tokenizer"
)

var shardedSpec = Spec{ModelType: "qwen2", Hidden: 64, Layers: 3, Heads: 4, KVHeads: 2, Intermediate: 96, Vocab: 600}

func writeSharded(t *testing.T, spec Spec, o ShardedOptions) string {
	t.Helper()
	dir := t.TempDir()
	if err := WriteRandomSharded(context.Background(), dir, spec, o); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestWriteRandomShardedReadsBack: the directory is a valid sharded
// checkpoint of the spec, one decoder layer per shard, with values of the
// documented distribution and a loadable tokenizer.
func TestWriteRandomShardedReadsBack(t *testing.T) {
	vocab := Vocabulary(shardedSpec.Vocab)
	var progress []int
	dir := writeSharded(t, shardedSpec, ShardedOptions{Seed: 1, Vocab: vocab, Progress: func(done, total int) {
		progress = append(progress, done)
		if total != shardedSpec.Layers+2 {
			t.Errorf("progress total %d, want %d", total, shardedSpec.Layers+2)
		}
	}})
	if len(progress) != shardedSpec.Layers+2 {
		t.Errorf("progress called %d times, want %d", len(progress), shardedSpec.Layers+2)
	}
	cfg, err := arch.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := cfg.CheckWeights(st); err != nil {
		t.Fatal(err)
	}
	if got := len(st.Files()); got != cfg.Layers+2 {
		t.Fatalf("%d shards, want %d (embedding, %d layers, final norm)", got, cfg.Layers+2, cfg.Layers)
	}
	shardOf := func(name string) string {
		in, ok := st.Info(name)
		if !ok {
			t.Fatalf("no tensor %s", name)
		}
		return filepath.Base(in.File)
	}
	if s := shardOf(cfg.Embed()); s != "model-00001-of-00005.safetensors" {
		t.Errorf("embedding in %s", s)
	}
	for l := 0; l < cfg.Layers; l++ {
		for _, name := range []string{cfg.InputNorm(l), cfg.Weight(l, arch.Q), cfg.Bias(l, arch.V), cfg.Weight(l, arch.Down)} {
			if s, want := shardOf(name), filepath.Base(st.Files()[l+1]); s != want {
				t.Errorf("%s in %s, want %s", name, s, want)
			}
		}
	}
	if s := shardOf(cfg.FinalNorm()); s != "model-00005-of-00005.safetensors" {
		t.Errorf("final norm in %s", s)
	}

	var total int64
	for _, name := range st.Names() {
		in, _ := st.Info(name)
		total += in.End - in.Begin
	}
	if size, err := ShardedSize(shardedSpec); err != nil || size != total {
		t.Errorf("ShardedSize = %d, %v; the shards hold %d bytes", size, err, total)
	}

	// Norm weights are exactly 1; weights are uniform on (-a, a) with a =
	// sqrt(3) std. With n samples the sample std is within ~4/sqrt(n)
	// relative of the truth (4 sigma); bf16 rounding may push |x| past a by
	// one half ulp (2^-9 relative).
	norm, _ := st.Float32(cfg.InputNorm(1))
	for i, v := range norm {
		if v != 1 {
			t.Fatalf("%s[%d] = %g, want 1", cfg.InputNorm(1), i, v)
		}
	}
	for _, c := range []struct {
		name string
		std  float64
	}{
		{cfg.Weight(0, arch.Q), 1 / math.Sqrt(64)},
		{cfg.Weight(2, arch.Down), 1 / math.Sqrt(96)},
		{cfg.Embed(), 1},
		{cfg.Bias(1, arch.K), 0.02},
	} {
		v, err := st.Float32(c.name)
		if err != nil {
			t.Fatal(err)
		}
		a := c.std * math.Sqrt(3) * (1 + 1.0/512)
		var sum, sq float64
		for i, x := range v {
			if math.Abs(float64(x)) > a {
				t.Fatalf("%s[%d] = %g outside (-%g, %g)", c.name, i, x, a, a)
			}
			sum += float64(x)
			sq += float64(x) * float64(x)
		}
		n := float64(len(v))
		mean, std := sum/n, math.Sqrt(sq/n-(sum/n)*(sum/n))
		if tol := 4 / math.Sqrt(n); math.Abs(std/c.std-1) > tol || math.Abs(mean)/c.std > tol {
			t.Errorf("%s: mean %g, std %g, want 0, %g (relative tolerance %g)", c.name, mean, std, c.std, tol)
		}
	}

	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range vocab {
		if got, ok := tok.TokenBytes(id); !ok || !bytes.Equal(got, want) {
			t.Fatalf("token %d decodes to %q, generated %q", id, got, want)
		}
	}
}

// TestWriteRandomShardedLayout: an untied model's lm_head goes with the
// final norm in the last shard; a tied one has none; no tokenizer when Vocab
// is nil.
func TestWriteRandomShardedLayout(t *testing.T) {
	spec := Spec{ModelType: "llama", Hidden: 32, Layers: 2, Heads: 4, Intermediate: 48, Vocab: 300}
	dir := writeSharded(t, spec, ShardedOptions{Seed: 3})
	st, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg, _ := spec.Config()
	last := st.Files()[len(st.Files())-1]
	for _, name := range []string{cfg.FinalNorm(), cfg.LMHead()} {
		if in, _ := st.Info(name); in.File != last {
			t.Errorf("%s in %s, want the last shard %s", name, in.File, last)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); !os.IsNotExist(err) {
		t.Errorf("tokenizer.json written without a vocabulary (stat: %v)", err)
	}
	spec.Tied = true
	tied := writeSharded(t, spec, ShardedOptions{Seed: 3})
	st2, err := safetensors.OpenDir(tied)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if _, ok := st2.Info(cfg.Desc.LMHead); ok {
		t.Error("tied model has an lm_head tensor")
	}
}

// TestWriteRandomShardedDeterministic: the bytes depend on the seed only,
// not on the number of worker goroutines (a tensor of several RNG chunks).
func TestWriteRandomShardedDeterministic(t *testing.T) {
	big := arch.TensorSpec{Name: "model.layers.0.mlp.up_proj.weight", Shape: []int{3*shardChunk/256 + 5, 256}}
	fill := func(procs int, seed uint64) []byte {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		data := make([]byte, tensorBytes(big, safetensors.BF16))
		if err := fillTensor(context.Background(), data, big, safetensors.BF16, seed); err != nil {
			t.Fatal(err)
		}
		return data
	}
	one, four := fill(1, 7), fill(4, 7)
	if !bytes.Equal(one, four) {
		t.Fatal("bytes differ between GOMAXPROCS 1 and 4")
	}
	if bytes.Equal(one, fill(2, 8)) {
		t.Fatal("seeds 7 and 8 gave the same bytes")
	}
	// Adjacent chunks are different streams, not copies.
	c := shardChunk * 2
	if bytes.Equal(one[:c], one[c:2*c]) {
		t.Fatal("chunks 0 and 1 are equal")
	}

	spec := Spec{ModelType: "llama", Hidden: 32, Layers: 1, Heads: 4, Intermediate: 48, Vocab: 300}
	a, b := writeSharded(t, spec, ShardedOptions{Seed: 5}), writeSharded(t, spec, ShardedOptions{Seed: 5})
	for _, f := range []string{"model-00002-of-00003.safetensors", safetensors.IndexFile} {
		x, err1 := os.ReadFile(filepath.Join(a, f))
		y, err2 := os.ReadFile(filepath.Join(b, f))
		if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs between two runs with one seed (%v, %v)", f, err1, err2)
		}
	}
}

func TestWriteRandomShardedErrors(t *testing.T) {
	ctx := context.Background()
	if err := WriteRandomSharded(ctx, t.TempDir(), shardedSpec, ShardedOptions{Vocab: Vocabulary(300)}); err == nil {
		t.Error("vocabulary of the wrong size accepted")
	}
	bad := shardedSpec
	bad.DType = safetensors.F64
	if err := WriteRandomSharded(ctx, t.TempDir(), bad, ShardedOptions{}); err == nil {
		t.Error("F64 accepted")
	}
	// A cancelled run leaves no files behind.
	cctx, cancel := context.WithCancel(ctx)
	dir := t.TempDir()
	err := WriteRandomSharded(cctx, dir, shardedSpec, ShardedOptions{Vocab: Vocabulary(shardedSpec.Vocab), Progress: func(done, _ int) {
		if done == 2 {
			cancel()
		}
	}})
	if err == nil {
		t.Fatal("cancelled run returned no error")
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("cancelled run left %d files, e.g. %s", len(left), left[0].Name())
	}
}

// TestUpgradeVocabulary: the new vocabulary holds every old token once, in
// another order, plus extra new words and the special token last; matching by
// bytes through the tokenizers finds exactly the old regular tokens (special
// tokens never match).
func TestUpgradeVocabulary(t *testing.T) {
	old := Vocabulary(700)
	nv := UpgradeVocabulary(old, 300, 9)
	if len(nv) != 1000 || string(nv[999]) != EndOfText {
		t.Fatalf("new vocabulary has %d tokens, last %q", len(nv), nv[len(nv)-1])
	}
	seen := map[string]bool{}
	moved := 0
	for i, w := range nv {
		if seen[string(w)] {
			t.Fatalf("token %q twice", w)
		}
		seen[string(w)] = true
		if i < len(old)-1 && !bytes.Equal(w, old[i]) {
			moved++
		}
	}
	if moved < len(old)/2 {
		t.Errorf("only %d of %d old tokens changed id", moved, len(old))
	}
	dir := t.TempDir()
	po, pn := filepath.Join(dir, "old.json"), filepath.Join(dir, "new.json")
	if err := WriteTokenizer(po, old); err != nil {
		t.Fatal(err)
	}
	if err := WriteTokenizer(pn, nv); err != nil {
		t.Fatal(err)
	}
	to, err := tokenizer.Load(po)
	if err != nil {
		t.Fatal(err)
	}
	tn, err := tokenizer.Load(pn)
	if err != nil {
		t.Fatal(err)
	}
	oi, ni := tokenizer.SharedVocab(to, tn)
	if len(oi) != len(old)-1 {
		t.Fatalf("%d shared tokens, want %d", len(oi), len(old)-1)
	}
	for k := range oi {
		if !bytes.Equal(old[oi[k]], nv[ni[k]]) {
			t.Fatalf("shared pair %d: old %q, new %q", k, old[oi[k]], nv[ni[k]])
		}
	}
}
