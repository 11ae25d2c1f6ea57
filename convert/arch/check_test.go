package arch

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/convert/safetensors"
)

const tinyQwen2 = `{"model_type":"qwen2","hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,
	"num_key_value_heads":1,"intermediate_size":12,"vocab_size":10,"tie_word_embeddings":false}`

// writeCheckpoint writes zero tensors for specs (after edit) and opens the result.
func writeCheckpoint(t *testing.T, specs []TensorSpec, dtype safetensors.DType) *safetensors.Set {
	t.Helper()
	dir := t.TempDir()
	var ts []safetensors.Tensor
	for _, s := range specs {
		n := 1
		for _, d := range s.Shape {
			n *= d
		}
		ts = append(ts, safetensors.Tensor{Name: s.Name, DType: dtype, Shape: s.Shape, Data: make([]byte, n*dtype.Size())})
	}
	if err := safetensors.WriteFile(filepath.Join(dir, safetensors.SingleFile), ts, nil); err != nil {
		t.Fatal(err)
	}
	s, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestCheckWeights(t *testing.T) {
	c, err := Parse("tiny/config.json", []byte(tinyQwen2))
	if err != nil {
		t.Fatal(err)
	}
	good := c.Tensors()
	// Qwen2 has biases on q/k/v only: 2 layers x 3 biases.
	nBias := 0
	for _, s := range good {
		if strings.HasSuffix(s.Name, ".bias") {
			nBias++
		}
	}
	if nBias != 6 {
		t.Fatalf("%d bias tensors, want 6", nBias)
	}
	if err := c.CheckWeights(writeCheckpoint(t, good, safetensors.BF16)); err != nil {
		t.Fatalf("good checkpoint: %v", err)
	}
	replace := func(name string, shape []int) []TensorSpec {
		var out []TensorSpec
		for _, s := range good {
			if s.Name == name {
				if shape == nil {
					continue
				}
				s.Shape = shape
			}
			out = append(out, s)
		}
		return out
	}
	cases := []struct {
		name  string
		specs []TensorSpec
		dtype safetensors.DType
		want  string
	}{
		{"missing weight", replace("model.layers.1.self_attn.k_proj.weight", nil), safetensors.F32,
			`tensor "model.layers.1.self_attn.k_proj.weight" is missing`},
		{"missing bias", replace("model.layers.0.self_attn.v_proj.bias", nil), safetensors.F32,
			`tensor "model.layers.0.self_attn.v_proj.bias" is missing`},
		{"wrong shape", replace("model.layers.0.mlp.down_proj.weight", []int{12, 8}), safetensors.F32,
			`"model.layers.0.mlp.down_proj.weight" has shape [12 8], config wants [8 12]`},
		{"unexpected o bias", append(replace("", nil), TensorSpec{"model.layers.0.self_attn.o_proj.bias", []int{8}}), safetensors.F32,
			`unexpected tensor "model.layers.0.self_attn.o_proj.bias"`},
		{"extra layer", append(replace("", nil), TensorSpec{"model.layers.2.self_attn.q_proj.weight", []int{8, 8}}), safetensors.F32,
			`unexpected tensor "model.layers.2.self_attn.q_proj.weight"`},
		{"int dtype", good, safetensors.I32, "want a float type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := writeCheckpoint(t, tc.specs, tc.dtype)
			err := c.CheckWeights(r)
			if err == nil {
				t.Fatal("CheckWeights passed")
			}
			msg := err.Error()
			if !errors.Is(err, ErrWeights) || !strings.Contains(msg, tc.want) || !strings.Contains(msg, r.Dir()) || !strings.Contains(msg, "tiny/config.json") {
				t.Errorf("err = %s\nwant ErrWeights naming the checkpoint, the config and %q", msg, tc.want)
			}
		})
	}
	// Ignorable extras: rotary inv_freq buffers, and lm_head when tied.
	tied, _ := Parse("tied", []byte(strings.Replace(tinyQwen2, `"tie_word_embeddings":false`, `"tie_word_embeddings":true`, 1)))
	extra := append(tied.Tensors(), TensorSpec{"lm_head.weight", []int{10, 8}},
		TensorSpec{"model.layers.0.self_attn.rotary_emb.inv_freq", []int{2}})
	if err := tied.CheckWeights(writeCheckpoint(t, extra, safetensors.F32)); err != nil {
		t.Errorf("ignorable extras: %v", err)
	}
}

// A long list of problems is truncated with a count.
func TestCheckWeightsTruncates(t *testing.T) {
	c, _ := Parse("tiny/config.json", []byte(tinyQwen2))
	err := c.CheckWeights(writeCheckpoint(t, []TensorSpec{{"x", []int{1}}}, safetensors.F32))
	if err == nil || !strings.Contains(err.Error(), "more") {
		t.Errorf("err = %v, want a truncated list", err)
	}
}
