package convert

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/convert/synth"
)

// calibrationFile writes a few calibration lines, enough for CKA on the tiny
// generated models (their vocabulary is single bytes plus letter words).
func calibrationFile(t *testing.T, dir string) string {
	t.Helper()
	lines := []string{
		"the rain in spain stays mainly in the plain",
		"one two three four five six seven eight nine ten",
		"a quick brown fox jumps over the lazy dog",
		"func main() { fmt.Println(\"hello, world\") }",
		"tea at three, then a walk to the station and back",
		"it was the best of times, it was the worst of times",
		"error: file not found (code 404) at line 17",
		"she sells sea shells on the sea shore",
		"lorem ipsum dolor sit amet, consectetur adipiscing",
		"to be or not to be, that is the question",
		"the train leaves at noon; the bus at half past one",
		"numbers: 3.14159 2.71828 1.41421 1.73205",
	}
	path := filepath.Join(dir, "calibration.txt")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCKARecoversRandomLayerPlacement: the old layers sit at random
// increasing positions of a deeper, wider, rotated model whose other layers
// are small random blocks; CKA of real forward passes plus the DP must find
// the planted placement, and the migrated adapter must then match the truth.
func TestCKARecoversRandomLayerPlacement(t *testing.T) {
	dir, old, nw, truth := fixture(t, synth.UpgradeSpec{Hidden: 48, Layers: 7, Intermediate: 56, ExtraVocab: 30, Rotate: true, RandomLayers: true, Seed: 41})
	o := opts(dir)
	o.LayerMap, o.Calibration = LayerMapAuto, calibrationFile(t, dir)
	var calls []string // stage:done/total, in order
	o.Progress = func(stage string, done, total int) {
		calls = append(calls, fmt.Sprintf("%s:%d/%d", stage, done, total))
	}
	res, err := Convert(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	// Progress: every layer of both calibration passes (3 old + 7 new), in
	// order, before the layer-pair analysis.
	var want []string
	for i := 1; i <= 10; i++ {
		want = append(want, fmt.Sprintf("cka:%d/10", i))
	}
	if len(calls) < 11 || !slices.Equal(calls[:10], want) || !strings.HasPrefix(calls[10], "layers:") {
		t.Errorf("progress calls %v, want %v then the layer pairs", calls, want)
	}
	p := res.Provenance
	if p.Options.LayerMap != LayerMapCKA || p.CKA == nil || p.CKA.Lines != 12 {
		t.Fatalf("auto layer map resolved to %q (%s), cka %+v", p.Options.LayerMap, p.LayerMapReason, p.CKA)
	}
	if !slices.Equal(p.LayerMap, truth.Layers) {
		t.Fatalf("cka layer map %v, planted %v\ncka %+v similarity %v", p.LayerMap, truth.Layers, p.CKA, p.LayerSimilarity)
	}
	if len(p.LayerSimilarity) != 3 || len(p.LayerSimilarity[0]) != 7 {
		t.Fatalf("similarity matrix %d x ?, want 3 x 7", len(p.LayerSimilarity))
	}
	checkAgainstTruth(t, dir, res.Out, old, nw, truth, attentionRoles, exactTol)
	data, err := os.ReadFile(filepath.Join(res.Out, HeatmapFile))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s is not a PNG: %v", HeatmapFile, err)
	}
	if b := img.Bounds(); b.Dx() <= b.Dy() {
		t.Errorf("heatmap %v: 3 old rows x 7 new columns should be wider than tall", b)
	}
}

func TestAutoLayerMapFallsBackWithReason(t *testing.T) {
	// Equal depths: the map is the identity whatever CKA says, so it is not run.
	dir, _, _, _ := fixture(t, synth.UpgradeSpec{Hidden: 40, Seed: 3})
	o := opts(dir)
	o.LayerMap = ""
	res, err := Convert(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	p := res.Provenance
	if p.Options.LayerMap != LayerMapLinear || p.Options.LayerMapAsk != LayerMapAuto || !strings.Contains(p.LayerMapReason, "equal depths") || p.CKA != nil {
		t.Fatalf("layer map %+v reason %q", p.Options, p.LayerMapReason)
	}
	if _, err := os.Stat(filepath.Join(res.Out, HeatmapFile)); err == nil {
		t.Error("a heatmap was written without a similarity matrix")
	}
}
