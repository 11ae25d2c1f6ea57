package forward

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/safetensors"
)

func parseCfg(t *testing.T, js string) *arch.Config {
	t.Helper()
	c, err := arch.Parse("test/config.json", []byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestInvFreqLlama3HandWorked checks the three llama3 bands on numbers worked
// by hand from transformers' _compute_llama3_parameters.
func TestInvFreqLlama3HandWorked(t *testing.T) {
	c := parseCfg(t, refConfigs["llama3"]) // head_dim 16, theta 5e5, factor 8, bands 8/1=8 and 8/4=2
	f, err := invFreq(c)
	if err != nil {
		t.Fatal(err)
	}
	// i=0: base 1, wavelength 2pi in [2, 8]: smooth = (8/2pi - 1)/3.
	s := (8/(2*math.Pi) - 1) / 3
	want0 := (1-s)/8 + s
	// i=1: base 5e5^(-2/16) = 0.19403, wavelength 32.4 > 8: divided by 8.
	want1 := math.Pow(500000, -2.0/16) / 8
	const tol = 1e-6 // float32 rounding of the base frequencies
	if math.Abs(f[0]-want0) > tol || math.Abs(f[1]-want1) > tol {
		t.Errorf("invFreq = %v..., want %.6f, %.6f", f[:2], want0, want1)
	}
	plain := parseCfg(t, refConfigs["qwen2"]) // head_dim 8, theta 1e6, no scaling
	f, _ = invFreq(plain)
	for i, v := range f {
		if w := math.Pow(1e6, -float64(2*i)/8); math.Abs(v-w) > 1e-6*w {
			t.Errorf("qwen2 invFreq[%d] = %g, want %g", i, v, w)
		}
	}
	bad := parseCfg(t, `{"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1,
		"intermediate_size": 8, "vocab_size": 4, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}`)
	if _, err := invFreq(bad); err == nil {
		t.Error("yarn scaling accepted")
	}
}

// TestRopeRelativePosition checks the property RoPE exists for: the score
// <R_p q, R_r k> depends only on p - r, and rotation keeps norms.
func TestRopeRelativePosition(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const hd = 8
	freq := []float64{1, 0.3, 0.05, 0.001}
	tab := newRopeTable(freq, 12)
	q := make([]float32, hd)
	k := make([]float32, hd)
	for i := range q {
		q[i], k[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
	}
	score := func(p, r int) float64 {
		qs := make([]float32, 12*hd)
		ks := make([]float32, 12*hd)
		copy(qs[p*hd:], q)
		copy(ks[r*hd:], k)
		tab.apply(qs, 12, 1)
		tab.apply(ks, 12, 1)
		var dot, nq, nq0 float64
		for i := 0; i < hd; i++ {
			dot += float64(qs[p*hd+i]) * float64(ks[r*hd+i])
			nq += float64(qs[p*hd+i]) * float64(qs[p*hd+i])
			nq0 += float64(q[i]) * float64(q[i])
		}
		if math.Abs(nq-nq0) > 1e-5*nq0 {
			t.Errorf("rotation at %d changed the norm: %g -> %g", p, nq0, nq)
		}
		return dot
	}
	const tol = 1e-5 // float32 rounding of products of O(1) values
	for _, c := range [][4]int{{5, 2, 8, 5}, {3, 3, 11, 11}, {9, 1, 10, 2}} {
		a, b := score(c[0], c[1]), score(c[2], c[3])
		if math.Abs(a-b) > tol*math.Max(1, math.Abs(a)) {
			t.Errorf("score(%d,%d) = %g but score(%d,%d) = %g", c[0], c[1], a, c[2], c[3], b)
		}
	}
}

func TestLinearHandWorked(t *testing.T) {
	x := []float32{1, 2, 3, 4, 5, 6}      // 2 x 3
	w := []float32{1, 0, -1, 0.5, 0.5, 0} // 2 x 3
	got := linear(x, 2, 3, w, 2, []float32{10, 20})
	want := []float32{1 - 3 + 10, 1.5 + 20, 4 - 6 + 10, 4.5 + 20}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("linear = %v, want %v", got, want)
		}
	}
}

func TestRMSNormHandWorked(t *testing.T) {
	// mean(3^2, 4^2) = 12.5, so x / sqrt(12.5) scaled by (1, 2).
	got := rmsNorm([]float32{3, 4}, 2, []float32{1, 2}, 0)
	r := 1 / math.Sqrt(12.5)
	if math.Abs(float64(got[0])-3*r) > 1e-6 || math.Abs(float64(got[1])-8*r) > 1e-6 {
		t.Errorf("rmsNorm = %v, want [%g %g]", got, 3*r, 8*r)
	}
}

func TestMeanPoolAndWalkPooled(t *testing.T) {
	if got := MeanPool([]float32{1, 2, 3, 6}, 2); got[0] != 2 || got[1] != 4 {
		t.Errorf("MeanPool = %v, want [2 4]", got)
	}
	dir := writeModel(t, refConfigs["qwen3"], safetensors.BF16, 3)
	m, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	seqs := [][]int{{1, 2, 3}, {4}, {5, 6, 7, 8, 9}}
	full := map[string][][]float32{}
	err = m.Walk(context.Background(), seqs, Options{}, func(stage string, st [][]float32) error {
		for _, s := range st {
			full[stage] = append(full[stage], append([]float32(nil), s...))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	d := m.Config().Hidden
	err = m.Walk(context.Background(), seqs, Options{MeanPool: true}, func(stage string, st [][]float32) error {
		for k, s := range st {
			if len(s) != d {
				t.Fatalf("%s: pooled length %d, want %d", stage, len(s), d)
			}
			want := MeanPool(full[stage][k], d)
			for i := range s {
				if s[i] != want[i] {
					t.Fatalf("%s seq %d: pooled walk differs from pooling the full walk", stage, k)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Sequences are independent: running one alone gives the same states.
	err = m.Walk(context.Background(), seqs[2:], Options{}, func(stage string, st [][]float32) error {
		for i, v := range st[0] {
			if v != full[stage][2][i] {
				t.Fatalf("%s: sequence 2 alone differs from the batch at %d", stage, i)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestWalkErrors(t *testing.T) {
	dir := writeModel(t, refConfigs["qwen2"], safetensors.F32, 4)
	m, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	noop := func(string, [][]float32) error { return nil }
	if err := m.Walk(context.Background(), [][]int{{1, 40}}, Options{}, noop); !errors.Is(err, ErrBadInput) {
		t.Errorf("id 40 of vocab 40: err = %v, want ErrBadInput", err)
	}
	if err := m.Walk(context.Background(), [][]int{{-1}}, Options{}, noop); !errors.Is(err, ErrBadInput) {
		t.Errorf("id -1: err = %v, want ErrBadInput", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Walk(ctx, [][]int{{1}}, Options{}, noop); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
	stop := errors.New("stop")
	if err := m.Walk(context.Background(), [][]int{{1}}, Options{}, func(string, [][]float32) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("visit error not returned: %v", err)
	}
}
