package convert

import (
	"bytes"
	"context"
	"encoding/gob"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/convert/safetensors"
	"github.com/lorasync/lorasync/convert/synth"
)

// pairFixture computes a pair analysis (a wider, deeper GQA upgrade: W_x is
// a fitted matrix, K/V blocks come from shared KV heads) through the cache in
// o.CacheDir, and returns it with the options used.
func pairFixture(t *testing.T) (*Pair, Options, *model, *model, layerMapSpec) {
	t.Helper()
	dir, _, _, _ := fixture(t, synth.UpgradeSpec{Hidden: 48, Layers: 5, KVHeads: 2, Seed: 5})
	o, lm, err := opts(dir).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	old, err := openModel(o.OldBase, o.CacheDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { old.Close() })
	nw, err := openModel(o.NewBase, o.CacheDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nw.Close() })
	p, cached, err := pairAnalysis(context.Background(), old, nw, o, lm)
	if err != nil {
		t.Fatal(err)
	}
	if cached {
		t.Fatal("a fresh cache directory served a cached pair")
	}
	return p, o, old, nw, lm
}

// gobOf encodes every exported field of p, bulk arrays included.
func gobOf(t *testing.T, p *Pair) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(p); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// The cached pair is the computed one, bit for bit: every exported field,
// W_x and every T block.
func TestPairCacheRoundTripsExactly(t *testing.T) {
	p, o, old, nw, lm := pairFixture(t)
	path := pairPath(o.CacheDir, p.Key)
	q, err := loadPair(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gobOf(t, p), gobOf(t, q)) {
		t.Fatal("the pair read back differs from the computed one")
	}
	if w, v := p.Analysis.Transfer.W.RawMatrix().Data, q.Analysis.Transfer.W.RawMatrix().Data; !slices.Equal(w, v) || len(w) != 48*oldSpec.Hidden {
		t.Fatalf("W_x: %d values read back, %d computed (or they differ)", len(v), len(w))
	}
	if n := len(pairBulk(q.Analysis)); n == 0 {
		t.Fatal("the analysis has no T blocks")
	}
	// encodePair only borrows p's arrays: p is whole after the save.
	if err := p.Analysis.Validate(); err != nil {
		t.Fatalf("computed pair after savePair: %v", err)
	}
	// And pairAnalysis serves exactly that.
	r, cached, err := pairAnalysis(context.Background(), old, nw, o, lm)
	if err != nil || !cached {
		t.Fatalf("second pairAnalysis: cached %v, %v", cached, err)
	}
	if !bytes.Equal(gobOf(t, p), gobOf(t, r)) {
		t.Fatal("the cached pair differs from the computed one")
	}
}

// A damaged cache file is an error for loadPair and is recomputed (and
// replaced) by pairAnalysis.
func TestPairCacheDamaged(t *testing.T) {
	p, o, old, nw, lm := pairFixture(t)
	path := pairPath(o.CacheDir, p.Key)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var all []safetensors.Tensor
	for _, n := range f.Names() {
		in, _ := f.Info(n)
		b, _ := f.Bytes(n)
		all = append(all, safetensors.Tensor{Name: n, DType: in.DType, Shape: in.Shape, Data: slices.Clone(b)})
	}
	meta := f.Metadata()
	f.Close()
	rewrite := func(edit func([]safetensors.Tensor) []safetensors.Tensor) {
		t.Helper()
		if err := safetensors.WriteFile(path, edit(slices.Clone(all)), meta); err != nil {
			t.Fatal(err)
		}
	}
	block := blockTensor(0, "k_proj", 0)
	for _, c := range []struct {
		name, want string
		damage     func()
	}{
		{"truncated", "malformed", func() { os.WriteFile(path, good[:len(good)-8], 0o644) }},
		{"block missing", "no tensor", func() {
			rewrite(func(ts []safetensors.Tensor) []safetensors.Tensor {
				return slices.DeleteFunc(ts, func(t safetensors.Tensor) bool { return t.Name == block })
			})
		}},
		{"block misshapen", "want F64", func() {
			rewrite(func(ts []safetensors.Tensor) []safetensors.Tensor {
				for i := range ts {
					if ts[i].Name == block {
						ts[i].Shape = []int{ts[i].Shape[0] * ts[i].Shape[1]}
					}
				}
				return ts
			})
		}},
		{"extra tensor", "tensors", func() {
			rewrite(func(ts []safetensors.Tensor) []safetensors.Tensor {
				return append(ts, safetensors.Tensor{Name: "zz", DType: safetensors.F64, Shape: []int{1}, Data: make([]byte, 8)})
			})
		}},
		{"no metadata gob", "pair", func() {
			rewrite(func(ts []safetensors.Tensor) []safetensors.Tensor {
				return slices.DeleteFunc(ts, func(t safetensors.Tensor) bool { return t.Name == pairMetaTensor })
			})
		}},
	} {
		c.damage()
		if _, err := loadPair(path); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), filepath.Base(path)) {
			t.Errorf("%s: loadPair error %v, want one naming the file and %q", c.name, err, c.want)
		}
		q, cached, err := pairAnalysis(context.Background(), old, nw, o, lm)
		if err != nil || cached {
			t.Fatalf("%s: pairAnalysis cached %v, %v; want a recomputed pair", c.name, cached, err)
		}
		if !bytes.Equal(gobOf(t, withoutTimings(p)), gobOf(t, withoutTimings(q))) {
			t.Fatalf("%s: the recomputed pair differs", c.name)
		}
		if _, err := loadPair(path); err != nil {
			t.Fatalf("%s: the recomputed pair was not stored: %v", c.name, err)
		}
	}
}

// withoutTimings is p with its measured seconds zeroed (a copy).
func withoutTimings(p *Pair) *Pair {
	q := *p
	q.TransferSeconds, q.LayersSeconds = 0, 0
	return &q
}
