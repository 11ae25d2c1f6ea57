package main

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/convert/safetensors"
)

func TestTokenizeCommand(t *testing.T) {
	out, err := runCLI(t, "tokenize", "--tokenizer", filepath.Join("..", "..", "convert", "tokenizer", "testdata", "sentencepiece.json"), "the the")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "1,13,13" {
		t.Errorf("tokenize printed %q, want 1,13,13", out)
	}
}

// TestActivationsCommand writes the tiny-llama activations for the fixture's
// ids and compares them with the transformers reference, tensor by tensor
// (max-abs-diff / max-abs-ref <= 1e-4, the forward pass's acceptance bound).
func TestActivationsCommand(t *testing.T) {
	const fixture = "/work/shared/fixtures/tiny-llama"
	ids := "1,57,300,4,128,499,42,42,7,260,15,511,0,33,210,5" // expected_activations.meta.json
	path := filepath.Join(t.TempDir(), "act.safetensors")
	if _, err := runCLI(t, "activations", "--model", fixture, "--ids", ids, "--out", path); err != nil {
		if strings.Contains(err.Error(), "no such file") {
			t.Skipf("fixture not available: %v", err)
		}
		t.Fatal(err)
	}
	got, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	ref, err := safetensors.Open(filepath.Join(fixture, "expected_activations.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	for _, name := range []string{"embeddings", "layers.0", "layers.1", "final_norm", "logits"} {
		a, err := got.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ref.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		var diff, scale float64
		for i := range b {
			diff = math.Max(diff, math.Abs(float64(a[i]-b[i])))
			scale = math.Max(scale, math.Abs(float64(b[i])))
		}
		if diff/scale > 1e-4 {
			t.Errorf("%s: relative error %.2e", name, diff/scale)
		}
	}
	if _, err := runCLI(t, "activations", "--model", fixture, "--ids", "1,-2", "--out", path); err == nil {
		t.Error("negative id accepted")
	}
}
