package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/lorasync/lorasync/convert/peft"
	"github.com/lorasync/lorasync/convert/safetensors"
	"github.com/lorasync/lorasync/convert/synth"
	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/daemon/state"
)

// dirFiles reads every regular file under dir, keyed by slash path.
func dirFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)], err = os.ReadFile(p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// The whole daemon on real parts: hub.Client over HTTP to hubtest, and
// convert.Convert on generated models with a planted upgrade (wider, deeper,
// larger vocabulary). A successor repo appears; the adapter is migrated,
// checked and pushed with card and provenance; a malformed adapter parks
// with an error naming its file while the good one succeeds.
func TestEndToEndWithLoRASuite(t *testing.T) {
	h, srv := hubtestBed(t, `
tracks:
  - name: synth
    base: {repo: org/base}
    follow: {successors: [org/base-next]}
    adapters: [{repo: acme/lora}, {repo: acme/broken}]
    target: {repo_template: "{adapter}-{base_name}"}
`)
	h.realConv = LoRASuite{Logger: slog.New(slog.DiscardHandler)}
	dir := t.TempDir()
	old, err := synth.Random(synth.Spec{ModelType: "llama", Hidden: 32, Layers: 3, Heads: 4, Intermediate: 48, Vocab: 600, DType: safetensors.F32}, 11)
	if err != nil {
		t.Fatal(err)
	}
	nw, _, err := synth.Upgrade(old, synth.UpgradeSpec{Hidden: 48, Layers: 5, Intermediate: 64, ExtraVocab: 40, Seed: 13})
	if err != nil {
		t.Fatal(err)
	}
	for name, m := range map[string]*synth.Model{"old": old, "new": nw} {
		if err := m.Write(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := synth.WriteAdapter(filepath.Join(dir, "adapter"), old.Config, "org/base", synth.AdapterSpec{R: 4, Seed: 12}); err != nil {
		t.Fatal(err)
	}
	seed(t, srv, "org/base", dirFiles(t, filepath.Join(dir, "old")))
	seed(t, srv, "acme/lora", dirFiles(t, filepath.Join(dir, "adapter")))
	broken := dirFiles(t, filepath.Join(dir, "adapter"))
	broken[adapterConfigFile] = []byte(`{"peft_type": "LORA", "r": "four"}`)
	seed(t, srv, "acme/broken", broken)

	h.runOnce()
	newCommit := seed(t, srv, "org/base-next", dirFiles(t, filepath.Join(dir, "new")))
	h.runOnce()

	j := h.job("acme/lora")
	if j.Status != state.Done || j.OutputRepo != "acme/lora-base-next" {
		t.Fatalf("good adapter: %+v", j)
	}
	if !strings.Contains(j.Summary, "modules migrated") {
		t.Errorf("summary %q", j.Summary)
	}
	b := h.job("acme/broken")
	if b.Status != state.Parked || b.Attempts != 1 || !strings.Contains(b.LastError, "adapter_config.json") {
		t.Errorf("broken adapter: %+v", b)
	}

	// What was pushed loads as a PEFT adapter that fits the new base and
	// names it.
	got := t.TempDir()
	files, err := srv.Files("acme/lora-base-next", "main")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := srv.File("acme/lora-base-next", "main", f)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(got, f), data, 0o644)
	}
	ad, err := peft.Load(got)
	if err != nil {
		t.Fatal(err)
	}
	if err := ad.Check(nw.Config); err != nil {
		t.Errorf("pushed adapter does not fit the new base: %v", err)
	}
	if ad.Config.BaseModel != "org/base-next" {
		t.Errorf("base_model_name_or_path = %q", ad.Config.BaseModel)
	}
	var prov map[string]json.RawMessage
	data, _ := os.ReadFile(filepath.Join(got, ProvenanceFile))
	if err := json.Unmarshal(data, &prov); err != nil {
		t.Fatal(err)
	}
	p := readProvenance(t, data)
	if p.NewBase.Commit != newCommit || len(p.Convert) == 0 || !strings.Contains(string(p.Convert), "pair_key") {
		t.Errorf("provenance: new base %s, convert record %d bytes", p.NewBase.Commit, len(p.Convert))
	}
	if _, err := os.Stat(filepath.Join(got, "README.md")); err != nil {
		t.Errorf("no model card pushed: %v", err)
	}
}

func TestLayerMapArg(t *testing.T) {
	cases := map[string]config.ConvertConfig{
		"linear":                 {LayerMap: "linear"},
		"cka":                    {LayerMap: "cka"},
		"explicit:0,2,5":         {LayerMap: "explicit", Layers: []int{0, 2, 5}},
		"similarity:/tmp/s.json": {LayerMap: "similarity", SimilarityFile: "/tmp/s.json"},
	}
	for want, c := range cases {
		if got := layerMapArg(c); got != want {
			t.Errorf("layerMapArg(%+v) = %q, want %q", c, got, want)
		}
	}
}

// Bad input parks a job at once; a full disk is retried.
func TestConvertErrorClasses(t *testing.T) {
	conv := LoRASuite{Logger: slog.New(slog.DiscardHandler)}
	dir := t.TempDir()
	_, err := conv.Convert(context.Background(), ConvertRequest{AdapterDir: dir, OldBaseDir: dir, NewBaseDir: dir, OutDir: filepath.Join(dir, "out")})
	if err == nil || !IsPermanent(err) {
		t.Fatalf("missing config.json: err = %v, want a permanent error", err)
	}
	full := fmt.Errorf("convert: write %s: %w", dir, &os.PathError{Op: "write", Path: dir, Err: syscall.ENOSPC})
	if !transientIO(full) || transientIO(errors.New("peft: bad adapter")) {
		t.Fatal("transientIO misclassifies")
	}
}

// TestProgressLog: a conversion's stages are logged at each quarter done,
// once per quarter, per stage.
func TestProgressLog(t *testing.T) {
	var buf bytes.Buffer
	p := progressLog(slog.New(slog.NewTextHandler(&buf, nil)))
	for i := 1; i <= 10; i++ {
		p("cka", i, 10)
	}
	p("layers", 1, 2)
	p("layers", 1, 2) // again: nothing new
	p("layers", 2, 2)
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		_, rest, _ := strings.Cut(line, "stage=")
		got = append(got, rest)
	}
	want := []string{"cka done=3 total=10", "cka done=5 total=10", "cka done=8 total=10", "cka done=10 total=10",
		"layers done=1 total=2", "layers done=2 total=2"}
	if !slices.Equal(got, want) {
		t.Errorf("logged %q, want %q", got, want)
	}
}
