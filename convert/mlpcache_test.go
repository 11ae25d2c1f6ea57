package convert

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/lorasuite"
	"github.com/lorasync/lorasync/convert/peft"
	"github.com/lorasync/lorasync/convert/synth"
)

// mlpAdapter writes a random gate/up/down (+ q) adapter for the old base.
func mlpAdapter(t *testing.T, dir string, base *arch.Config, seed uint64) string {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("adapter-mlp-%d", seed))
	if _, err := synth.WriteAdapter(path, base, "synth/old", synth.AdapterSpec{R: 3, Seed: seed,
		Targets: []arch.Role{arch.Gate, arch.Up, arch.Down, arch.Q}}); err != nil {
		t.Fatal(err)
	}
	return path
}

// sameModules fails unless both adapters hold bit-identical modules.
func sameModules(t *testing.T, what, dirA, dirB string) {
	t.Helper()
	a, err := peft.Load(dirA)
	if err != nil {
		t.Fatal(err)
	}
	b, err := peft.Load(dirB)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Modules) != len(b.Modules) {
		t.Fatalf("%s: %d and %d modules", what, len(a.Modules), len(b.Modules))
	}
	for i := range a.Modules {
		if a.Modules[i].Key != b.Modules[i].Key || !slices.Equal(a.Modules[i].A, b.Modules[i].A) || !slices.Equal(a.Modules[i].B, b.Modules[i].B) {
			t.Fatalf("%s: %s differs", what, a.Modules[i].Key)
		}
	}
}

// The MLP operators of a pair are computed by the first MLP adapter, stored
// next to the pair analysis, and read back (files untouched) by the next
// adapter of the pair, whose result is bit for bit a cache-less migration's.
// A corrupt operator file is recomputed, not trusted.
func TestMLPOperatorsCached(t *testing.T) {
	dir, old, _, _ := fixture(t, synth.UpgradeSpec{Hidden: 48, Layers: 6, Intermediate: 64, ExtraVocab: 5, Seed: 41})
	ctx := context.Background()
	o := opts(dir)
	o.Adapter, o.Out = mlpAdapter(t, dir, old.Config, 1), filepath.Join(dir, "out-1")
	first, err := Convert(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	nMLP := 3 * old.Config.Layers // gate, up, down on every old layer (3 -> 6: all mapped)
	mt := first.Provenance.Timings.MLPOperators
	if mt == nil || mt.Computed != nMLP || mt.Cached != 0 || mt.TransferPinv != "computed" {
		t.Fatalf("first MLP adapter: operators %+v, want %d computed and W_x's pinv factor computed", mt, nMLP)
	}
	opDir := filepath.Join(o.CacheDir, "pairs", first.Provenance.PairKey+".mlp")
	files, _ := filepath.Glob(filepath.Join(opDir, "*.safetensors"))
	if len(files) != nMLP+1 {
		t.Fatalf("operator cache holds %d files, want %d: %v", len(files), nMLP+1, files)
	}
	mtimes := map[string]time.Time{}
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		mtimes[f] = st.ModTime()
	}

	// A second adapter of the pair: every operator from the cache.
	second := mlpAdapter(t, dir, old.Config, 2)
	o.Adapter, o.Out = second, filepath.Join(dir, "out-2")
	res, err := Convert(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	mt = res.Provenance.Timings.MLPOperators
	if !res.Provenance.Timings.PairCached || mt == nil || mt.Cached != nMLP || mt.Computed != 0 || mt.TransferPinv != "cached" {
		t.Fatalf("second MLP adapter: pair cached %v, operators %+v; want all %d from the cache", res.Provenance.Timings.PairCached, mt, nMLP)
	}
	for f, m := range mtimes {
		if st, err := os.Stat(f); err != nil || !st.ModTime().Equal(m) {
			t.Errorf("%s rewritten by the second adapter", filepath.Base(f))
		}
	}
	// The same adapter without a cache: everything computed in memory.
	fresh := o
	fresh.CacheDir, fresh.Out = "", filepath.Join(dir, "out-2-fresh")
	res, err = Convert(ctx, fresh)
	if err != nil {
		t.Fatal(err)
	}
	if mt := res.Provenance.Timings.MLPOperators; mt.Computed != nMLP || mt.Cached != 0 {
		t.Fatalf("cache-less migration: operators %+v", mt)
	}
	sameModules(t, "cached vs cache-less operators", filepath.Join(dir, "out-2"), fresh.Out)

	// A corrupt operator file (a truncated copy of another) is recomputed.
	victim := files[len(files)/2]
	if filepath.Base(victim) == "wx-pinv.safetensors" {
		victim = files[0]
	}
	data, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(victim, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	o.Out = filepath.Join(dir, "out-2-again")
	res, err = Convert(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if mt := res.Provenance.Timings.MLPOperators; mt.Computed != 1 || mt.Cached != nMLP-1 {
		t.Fatalf("after corrupting one operator: %+v, want it alone recomputed", mt)
	}
	sameModules(t, "recomputed operator", filepath.Join(dir, "out-2"), o.Out)

	// The pinv input map: attention modules solve with W_x's cached Gram
	// factor, and the result is a cache-less migration's bit for bit.
	o.InputMap, o.Out = lorasuite.InputPinv, filepath.Join(dir, "out-pinv")
	for i, cacheDir := range []string{o.CacheDir, o.CacheDir, ""} {
		oo := o
		oo.CacheDir, oo.Out = cacheDir, fmt.Sprintf("%s-%d", o.Out, i)
		if _, err := Convert(ctx, oo); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			sameModules(t, fmt.Sprintf("pinv input map, run %d", i), o.Out+"-0", oo.Out)
		}
	}
	if _, err := os.Stat(filepath.Join(opDir, pinvFactorFile)); err != nil {
		t.Errorf("pinv input map: W_x's factor not cached: %v", err)
	}
	o.InputMap = ""

	// An adapter without MLP modules reports no MLP operators.
	o.Adapter, o.Out = filepath.Join(dir, "adapter"), filepath.Join(dir, "out-attn")
	res, err = Convert(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Provenance.Timings.MLPOperators != nil {
		t.Errorf("attention-only adapter: MLP operators %+v", res.Provenance.Timings.MLPOperators)
	}
}

// Records round-trip exactly; a file whose metadata names another operator
// is refused, and so is a Gram record that fails validation.
func TestCacheRecordRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.safetensors")
	g := &lorasuite.GramFactor{Kind: lorasuite.GramInverse, N: 2, Ridge: 1e-12, Packed: []float64{2, 1.0 / 3, 0.7}}
	want := map[string]string{"role": "up_proj", "format": mlpFormat}
	if err := writeRecord(path, gramRecord(g), want); err != nil {
		t.Fatal(err)
	}
	r, err := readRecord(path, want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := gramOf(r)
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != g.Kind || got.N != 2 || got.Ridge != g.Ridge || !slices.Equal(got.Packed, g.Packed) {
		t.Fatalf("read back %+v, wrote %+v", got, g)
	}
	if _, err := readRecord(path, map[string]string{"role": "gate_proj"}); err == nil {
		t.Error("a gate_proj request accepted an up_proj file")
	}
	bad := &lorasuite.GramFactor{Kind: lorasuite.GramInverse, N: 2, Packed: []float64{-1, 0, 1}}
	if err := writeRecord(path, gramRecord(bad), want); err != nil {
		t.Fatal(err)
	}
	if r, err := readRecord(path, want); err != nil {
		t.Fatal(err)
	} else if err := gramCheck(r); err == nil {
		t.Error("a Gram inverse with a negative diagonal was accepted")
	}
	if _, err := readRecord(filepath.Join(t.TempDir(), "none.safetensors"), want); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v", err)
	}
}
