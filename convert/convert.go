package convert

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/linalg"
	"github.com/lorasync/lorasync/convert/peft"
)

// ErrUnmapped is wrapped when adapter modules cannot be migrated (and
// Options did not allow a partial adapter).
var ErrUnmapped = errors.New("adapter modules cannot be migrated")

// HeatmapFile is the PNG of the layer similarity matrix with the chosen
// layer map, written beside the adapter when the map came from a matrix.
const HeatmapFile = "layer_similarity.png"

// Result describes a finished migration.
type Result struct {
	Out        string
	Provenance Provenance
}

// Convert migrates the adapter in o.Adapter (trained on o.OldBase) to
// o.NewBase and writes it to o.Out: the pair analysis (cached under
// o.CacheDir), the projection of every module, a check that the written
// adapter loads back and fits the new base, then the model card and
// lorasync.json. Modules dropped by design (their old layer has no partner in
// a shallower new model) are reported in the provenance; any other module
// that cannot be migrated is an error naming it.
func Convert(ctx context.Context, o Options) (*Result, error) {
	start := time.Now()
	o, lm, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	old, err := openModel(o.OldBase, o.CacheDir)
	if err != nil {
		return nil, fmt.Errorf("convert: old base: %w", err)
	}
	defer old.Close()
	nw, err := openModel(o.NewBase, o.CacheDir)
	if err != nil {
		return nil, fmt.Errorf("convert: new base: %w", err)
	}
	defer nw.Close()
	ad, err := peft.Load(o.Adapter)
	if err != nil {
		return nil, err
	}
	if err := ad.Check(old.cfg); err != nil {
		return nil, fmt.Errorf("convert: adapter %s does not fit the old base %s: %w", o.Adapter, o.OldBase, err)
	}
	adID, err := hashFiles(o.Adapter, func(n string) bool { return n == peft.ConfigFile || strings.HasSuffix(n, ".safetensors") })
	if err != nil {
		return nil, fmt.Errorf("convert: adapter %s: %w", o.Adapter, err)
	}

	pair, cached, err := pairAnalysis(ctx, old, nw, o, lm)
	if err != nil {
		return nil, err
	}
	if o.CacheDir != "" {
		// Hold the pair's cache entry for the rest of the conversion, so that
		// a prune does not remove the MLP operators it is about to read.
		// Without the lock the conversion still works (recomputing them).
		if release, err := lockEntry(ctx, o.CacheDir, pair.Key, true); err == nil {
			defer release()
		}
	}
	if testHookAfterPair != nil {
		testHookAfterPair()
	}
	projStart := time.Now()
	out, dropped, mlpTimings, err := project(ctx, pair, ad, old, nw, o)
	if err != nil {
		return nil, err
	}
	projSeconds := time.Since(projStart).Seconds()

	prov := provenance(o, old, nw, adID, pair, cached)
	prov.Modules = ModuleReport{Migrated: len(out.Modules), Dropped: dropped}
	prov.Timings.ProjectSeconds = projSeconds
	prov.Timings.MLPOperators = mlpTimings
	prov.Timings.TotalSeconds = time.Since(start).Seconds()

	extra := map[string][]byte{}
	if png, err := heatmap(pair); err != nil {
		return nil, fmt.Errorf("convert: layer similarity heatmap: %w", err)
	} else if png != nil {
		extra[HeatmapFile] = png
	}
	if err := peft.Write(o.Out, out, peft.WriteOptions{
		BaseModel:  o.NewBaseName,
		Revision:   o.NewBaseRevision,
		Card:       modelCard(o, &prov),
		Provenance: &prov,
		Extra:      extra,
	}); err != nil {
		return nil, err
	}
	if err := verifyOutput(o.Out, nw.cfg, len(out.Modules)); err != nil {
		// Never leave an adapter that failed its own check where a user or
		// the daemon would pick it up.
		if rmErr := os.RemoveAll(o.Out); rmErr != nil {
			return nil, errors.Join(err, rmErr)
		}
		return nil, err
	}
	return &Result{Out: o.Out, Provenance: prov}, nil
}

// verifyOutput checks the adapter Convert just wrote (VerifyAdapter) and
// that it holds every module migrated.
func verifyOutput(dir string, base *arch.Config, want int) error {
	a, err := VerifyAdapter(dir, base)
	if err != nil {
		return fmt.Errorf("convert: written adapter: %w", err)
	}
	if len(a.Modules) != want {
		return fmt.Errorf("convert: written adapter %s has %d modules, migrated %d", dir, len(a.Modules), want)
	}
	return nil
}

// VerifyAdapter loads the PEFT adapter in dir and checks it is usable on
// base: it parses, has modules, every module fits base, and every value is
// finite. Errors name the directory and the module.
func VerifyAdapter(dir string, base *arch.Config) (*peft.Adapter, error) {
	a, err := peft.Load(dir)
	if err != nil {
		return nil, err
	}
	if len(a.Modules) == 0 {
		return nil, fmt.Errorf("adapter %s has no modules", dir)
	}
	if err := a.Check(base); err != nil {
		return nil, fmt.Errorf("adapter %s does not fit %s: %w", dir, base.Path, err)
	}
	for _, m := range a.Modules {
		for name, v := range map[string][]float32{"lora_A": m.A, "lora_B": m.B} {
			for i, x := range v {
				if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
					return nil, fmt.Errorf("adapter %s: module %s %s[%d] = %v", dir, m.Key, name, i, x)
				}
			}
		}
	}
	return a, nil
}

// provenance assembles lorasync.json (modules and timings are filled by the caller).
func provenance(o Options, old, nw *model, adID string, pair *Pair, cached bool) Provenance {
	pa := pair.Analysis
	p := Provenance{Tool: "lorasync", Created: time.Now().UTC().Truncate(time.Second), Backend: linalg.Backend(), PairKey: pair.Key}
	abs := func(d string) string {
		if a, err := filepath.Abs(d); err == nil {
			return a
		}
		return d
	}
	p.Inputs = ProvenanceInputs{
		OldBase: Input{Name: o.Inputs["old_base"], Dir: abs(old.dir), ID: old.id},
		NewBase: Input{Name: o.Inputs["new_base"], Dir: abs(nw.dir), ID: nw.id},
		Adapter: Input{Name: o.Inputs["adapter"], Dir: abs(o.Adapter), ID: "sha256:" + adID},
	}
	p.Options = ProvenanceOpts{LayerMap: pair.LayerMapKind, LayerMapAsk: pair.LayerMap, Transfer: o.Transfer, HeadTransfer: string(pa.HeadTransfer), InputMap: string(o.InputMap)}
	p.Vocabulary.Method, p.Vocabulary.SharedTokens = pair.VocabMethod, pair.SharedTokens
	tr := pa.Transfer
	p.Transfer.DOld, p.Transfer.DNew, p.Transfer.Identity, p.Transfer.Ridge = tr.DOld, tr.DNew, tr.Identity, tr.Ridge
	p.Transfer.Residual = jsonFloat(math.NaN())
	if tr.ResidualKnown {
		p.Transfer.Residual = jsonFloat(tr.Residual)
	}
	p.LayerMap = pa.LayerMap
	p.LayerMapReason, p.LayerSimilarity, p.CKA = pair.LayerMapReason, pair.Similarity, pair.CKA
	p.Heads, p.Lineage = headReports(pa)
	p.Timings = Timings{PairCached: cached, TransferSeconds: pair.TransferSeconds, LayersSeconds: pair.LayersSeconds}
	return p
}

// testHookAfterPair, when set by tests, runs once the pair analysis is in
// hand and its cache entry held, before the adapter is projected.
var testHookAfterPair func()
