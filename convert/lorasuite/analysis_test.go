package lorasuite

import (
	"bytes"
	"context"
	"encoding/gob"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// A PairAnalysis survives gob (and, for its plain parts, JSON) and projects
// identically afterwards.
func TestPairAnalysisGobRoundTrip(t *testing.T) {
	pl := buildPlanted(t, 5, plantedOld, plantedNew, false, false)
	pa := pl.analyze(t, HeadLstsq)
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(pa); err != nil {
		t.Fatalf("gob encode: %v", err)
	}
	t.Logf("gob size of the test analysis: %d bytes", buf.Len())
	var back PairAnalysis
	if err := gob.NewDecoder(&buf).Decode(&back); err != nil {
		t.Fatalf("gob decode: %v", err)
	}
	rng := rand.New(rand.NewPCG(6, 6))
	var mods []Module
	for _, role := range []Role{RoleQ, RoleK, RoleV, RoleO} {
		mods = append(mods, randModule(rng, pl.od, 1, role, 2))
	}
	for _, im := range []InputMap{InputWx, InputPinv} {
		a, err := Project(context.Background(), pa, mods, ProjectOptions{InputMap: im})
		if err != nil {
			t.Fatal(err)
		}
		b, err := Project(context.Background(), &back, mods, ProjectOptions{InputMap: im})
		if err != nil {
			t.Fatal(err)
		}
		for i := range a.Modules {
			for j := range a.Modules[i].B {
				if a.Modules[i].B[j] != b.Modules[i].B[j] {
					t.Fatalf("%s: module %d differs after a gob round trip", im, i)
				}
			}
		}
	}
	// The per-head records are plain data: JSON must not fail on them.
	if _, err := json.Marshal(pa.Layers[0].Q); err != nil {
		t.Fatalf("json of RoleBlocks: %v", err)
	}
}

// errSource fails on one layer, or returns weights of the wrong size.
type errSource struct {
	inner   LayerSource
	failAt  int
	corrupt bool
}

var errDisk = errors.New("disk read failed")

func (s *errSource) Layer(ctx context.Context, i int) (*LayerWeights, error) {
	if i != s.failAt {
		return s.inner.Layer(ctx, i)
	}
	if !s.corrupt {
		return nil, errDisk
	}
	w, err := s.inner.Layer(ctx, i)
	if err != nil {
		return nil, err
	}
	bad := *w
	bad.K = append([]float32(nil), w.K...)
	bad.K[3] = float32(math.Inf(1))
	return &bad, nil
}

func TestAnalyzeErrors(t *testing.T) {
	pl := buildPlanted(t, 6, plantedOld, plantedNew, false, false)
	ctx := context.Background()
	tr := NewTransfer(pl.p)
	good := func() (LayerSource, LayerSource) { return sourceOf(pl.old), sourceOf(pl.new) }
	o, n := good()
	_, err := Analyze(ctx, pl.od, pl.nd, tr, pl.layerMap, &errSource{inner: o, failAt: 1}, n, Options{})
	if !errors.Is(err, errDisk) || !strings.Contains(err.Error(), "old layer 1") {
		t.Errorf("failing source: err = %v", err)
	}
	o, n = good()
	_, err = Analyze(ctx, pl.od, pl.nd, tr, pl.layerMap, o, &errSource{inner: n, failAt: 2, corrupt: true}, Options{})
	if err == nil || !strings.Contains(err.Error(), "new layer 2 k_proj[0, 3] is +Inf") {
		t.Errorf("non-finite weight: err = %v", err)
	}
	o, n = good()
	short := &memSource{layers: []*LayerWeights{{Q: make([]float32, 5)}}}
	_, err = Analyze(ctx, pl.od, pl.nd, tr, pl.layerMap, short, n, Options{})
	if err == nil || !strings.Contains(err.Error(), "old layer 0 q_proj has 5 values") {
		t.Errorf("short weights: err = %v", err)
	}
	for _, tc := range []struct {
		name string
		od   Dims
		tr   *Transfer
		lm   []LayerPair
		opt  Options
		msg  string
	}{
		{"gqa", Dims{Hidden: 10, Layers: 2, Heads: 4, KVHeads: 3, HeadDim: 2}, tr, pl.layerMap, Options{}, "not a multiple"},
		{"transfer", pl.od, IdentityTransfer(3), pl.layerMap, Options{}, "transfer matrix shape"},
		{"layer map", pl.od, tr, []LayerPair{{1, 0}, {0, 2}}, Options{}, "not strictly increasing"},
		{"layer range", pl.od, tr, []LayerPair{{0, 5}}, Options{}, "out of range"},
		{"method", pl.od, tr, pl.layerMap, Options{HeadTransfer: "magic"}, "unknown head transfer"},
	} {
		o, n = good()
		if _, err := Analyze(ctx, tc.od, pl.nd, tc.tr, tc.lm, o, n, tc.opt); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: err = %v, want one containing %q", tc.name, err, tc.msg)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	o, n = good()
	if _, err := Analyze(cctx, pl.od, pl.nd, tr, pl.layerMap, o, n, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
	var progress []int
	o, n = good()
	if _, err := Analyze(ctx, pl.od, pl.nd, tr, pl.layerMap, o, n, Options{Progress: func(done, total int) {
		progress = append(progress, done*10+total)
	}}); err != nil {
		t.Fatal(err)
	}
	if len(progress) != 2 || progress[0] != 12 || progress[1] != 22 {
		t.Errorf("progress calls %v, want [12 22] (done*10+total)", progress)
	}
}
