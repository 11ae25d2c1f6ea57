package bench

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/lorasync/lorasync/convert"
	"github.com/lorasync/lorasync/convert/peft"
	"github.com/lorasync/lorasync/convert/synth"
)

// tinyPair has the structure of the benchmark pairs (wider, deeper, MHA ->
// GQA, larger vocabulary) at test size.
var tinyPair = Pair{
	Name: "tiny", OldName: "tiny-old", NewName: "tiny-new",
	Old:        synth.Spec{ModelType: "llama", Hidden: 64, Layers: 2, Heads: 4, KVHeads: 4, HeadDim: 16, Intermediate: 96, Vocab: 600},
	New:        synth.Spec{ModelType: "qwen2", Hidden: 96, Layers: 3, Heads: 4, KVHeads: 2, HeadDim: 16, Intermediate: 128, Vocab: 700, Tied: true},
	ExtraVocab: 100,
}

var snapshot = regexp.MustCompile(`/hub/models--lorasync-bench--[^/]+/snapshots/[0-9a-f]{40}$`)

// TestFixturesConvert: Ensure lays the pair out as hub-cache snapshots, reuses
// it on a second call, and convert.Convert migrates a fixture adapter across
// it, identifying the models by commit and matching the vocabulary by bytes.
func TestFixturesConvert(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	f, err := Ensure(ctx, root, tinyPair, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{f.Old, f.New} {
		if !snapshot.MatchString(filepath.ToSlash(d)) {
			t.Errorf("model directory %s is not a hub-cache snapshot", d)
		}
	}
	shard := filepath.Join(f.New, "model-00002-of-00005.safetensors")
	before, err := os.Stat(shard)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Ensure(ctx, root, tinyPair, func(format string, _ ...any) { t.Errorf("second Ensure generated: "+format, "") })
	if err != nil || again.Old != f.Old || again.New != f.New {
		t.Fatalf("second Ensure: %+v, %v", again, err)
	}
	if after, err := os.Stat(shard); err != nil || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("second Ensure rewrote %s", shard)
	}
	if left, _ := filepath.Glob(filepath.Join(root, "hub", "*", ".partial-*")); len(left) > 0 {
		t.Errorf("partial output left behind: %v", left)
	}

	ad, err := f.Adapter(rank, 1)
	if err != nil {
		t.Fatal(err)
	}
	res, err := convert.Convert(ctx, convert.Options{OldBase: f.Old, NewBase: f.New, Adapter: ad, Out: filepath.Join(t.TempDir(), "out"), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	p := res.Provenance
	if !regexp.MustCompile(`^commit:[0-9a-f]{40}$`).MatchString(p.Inputs.OldBase.ID) {
		t.Errorf("old base identified as %q, want its snapshot commit", p.Inputs.OldBase.ID)
	}
	if p.Vocabulary.Method != convert.VocabBytes || p.Vocabulary.SharedTokens != tinyPair.Old.Vocab-1 {
		t.Errorf("vocabulary matched by %s, %d shared tokens; want %s, %d (every regular old token)",
			p.Vocabulary.Method, p.Vocabulary.SharedTokens, convert.VocabBytes, tinyPair.Old.Vocab-1)
	}
	out, err := peft.Load(res.Out)
	if err != nil {
		t.Fatal(err)
	}
	// Every old layer maps to a new one (2 -> 3 layers), 4 modules each.
	if got, want := len(out.Modules), tinyPair.Old.Layers*4; got != want {
		t.Errorf("migrated %d modules, want %d", got, want)
	}
	for _, m := range out.Modules {
		if m.R != rank {
			t.Errorf("%s has rank %d, want %d", m.Key, m.R, rank)
		}
	}
}

func TestRootFromEnv(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(DirEnv, dir)
	if got, err := Root(); err != nil || got != dir {
		t.Errorf("Root() = %q, %v; want %s", got, err, dir)
	}
	t.Setenv(DirEnv, "")
	got, err := Root()
	if err != nil || filepath.Base(got) != "bench-cache" {
		t.Errorf("Root() = %q, %v; want a bench-cache directory", got, err)
	}
}

func TestEnsureRejectsInconsistentPair(t *testing.T) {
	bad := tinyPair
	bad.ExtraVocab = 7
	if _, err := Ensure(context.Background(), t.TempDir(), bad, nil); err == nil {
		t.Error("pair whose vocab sizes disagree with ExtraVocab accepted")
	}
}
