package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/convert/synth"
)

// TestConvertCommand runs `lorasync convert` on a generated pair, once for the
// human summary and once with --json, the second served from the pair cache.
func TestConvertCommand(t *testing.T) {
	dir := t.TempDir()
	old, err := synth.Random(synth.Spec{Hidden: 32, Layers: 2, Heads: 4, Intermediate: 40, Vocab: 400}, 1)
	if err != nil {
		t.Fatal(err)
	}
	nw, _, err := synth.Upgrade(old, synth.UpgradeSpec{Hidden: 48, Layers: 3, KVHeads: 2, ExtraVocab: 20, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Write(filepath.Join(dir, "old")); err != nil {
		t.Fatal(err)
	}
	if err := nw.Write(filepath.Join(dir, "new")); err != nil {
		t.Fatal(err)
	}
	if _, err := synth.WriteAdapter(filepath.Join(dir, "adapter"), old.Config, "old", synth.AdapterSpec{R: 4}); err != nil {
		t.Fatal(err)
	}
	args := []string{"convert", "--old", filepath.Join(dir, "old"), "--new", filepath.Join(dir, "new"),
		"--adapter", filepath.Join(dir, "adapter"), "--cache-dir", filepath.Join(dir, "cache"), "--new-name", "org/new"}
	out, err := runCLI(t, append(args, "--out", filepath.Join(dir, "out"))...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"transfer matrix: 32 -> 48", "layer map: cka over", "one lineage", "modules: 8 migrated", "wrote " + filepath.Join(dir, "out")} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, append(args, "--out", filepath.Join(dir, "out2"), "--json")...)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Out        string
		Provenance struct {
			Timings struct {
				PairCached bool `json:"pair_cached"`
			}
			LayerMap []struct{ Old, New int } `json:"layer_map"`
		}
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	if res.Out != filepath.Join(dir, "out2") || !res.Provenance.Timings.PairCached || len(res.Provenance.LayerMap) != 2 {
		t.Fatalf("--json summary %+v", res)
	}
	if _, err := runCLI(t, append(args, "--out", filepath.Join(dir, "out3"), "--layer-map", "explicit:0")...); err == nil ||
		!strings.Contains(err.Error(), "layer map") {
		t.Fatalf("a wrong explicit map gave %v", err)
	}
}
