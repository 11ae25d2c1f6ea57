package convert

import (
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"
)

// modelCard is the README.md body (after the YAML front matter peft.Write adds).
func modelCard(o Options, p *Provenance) string {
	var b strings.Builder
	name := func(in Input) string {
		if in.Name != "" {
			return in.Name
		}
		return in.Dir
	}
	fmt.Fprintf(&b, "# LoRA adapter migrated to %s\n\n", o.NewBaseName)
	fmt.Fprintf(&b, "This adapter was migrated by [lorasync](https://github.com/lorasync/lorasync) with the LoRASuite method "+
		"(Li et al., arXiv 2505.13515) from an adapter trained on `%s`, without retraining.\n\n", name(p.Inputs.OldBase))
	fmt.Fprintf(&b, "- source adapter: `%s` (%s)\n", name(p.Inputs.Adapter), p.Inputs.Adapter.ID)
	fmt.Fprintf(&b, "- old base: `%s` (%s)\n", name(p.Inputs.OldBase), p.Inputs.OldBase.ID)
	fmt.Fprintf(&b, "- new base: `%s` (%s)\n", name(p.Inputs.NewBase), p.Inputs.NewBase.ID)
	fmt.Fprintf(&b, "- options: layer map `%s`, transfer `%s`, head transfer `%s`, input map `%s`\n\n",
		p.Options.LayerMap, p.Options.Transfer, p.Options.HeadTransfer, p.Options.InputMap)
	b.WriteString("## Migration quality\n\n")
	WriteSummary(&b, p)
	b.WriteString("\nThe paper follows the projection with a short fine-tune (LFT) on about 100 task samples; " +
		"that step is where most of the accuracy is recovered. `lorasync.json` holds the full provenance: " +
		"layer map, head maps with their similarities, and per-head fit residuals and gains.\n")
	return b.String()
}

// WriteSummary writes the human summary of a migration: the layer map,
// head-match quality per layer, fit residuals and the lineage verdict.
func WriteSummary(w io.Writer, p *Provenance) {
	fmt.Fprintf(w, "transfer matrix: %d -> %d", p.Transfer.DOld, p.Transfer.DNew)
	if p.Transfer.Identity {
		fmt.Fprint(w, " (identity)")
	}
	if r := float64(p.Transfer.Residual); !math.IsNaN(r) {
		fmt.Fprintf(w, ", relative residual %.3g", r)
	}
	fmt.Fprintf(w, " over %d shared tokens (%s)\n", p.Vocabulary.SharedTokens, p.Vocabulary.Method)
	switch {
	case p.CKA != nil:
		fmt.Fprintf(w, "layer map: cka over %d calibration lines (%d samples, %s pooling), order-preserving DP\n", p.CKA.Lines, p.CKA.Samples, p.CKA.Pool)
	case p.LayerMapReason != "":
		fmt.Fprintf(w, "layer map: %s (%s)\n", p.Options.LayerMap, p.LayerMapReason)
	default:
		fmt.Fprintf(w, "layer map: %s\n", p.Options.LayerMap)
	}
	fmt.Fprintf(w, "layers (old -> new, head similarity, q/k/v/o fit residual, max gain):\n")
	for _, h := range p.Heads {
		fmt.Fprintf(w, "  %3d -> %-3d  sim %.3f  fit %.2f/%.2f/%.2f/%.2f  gain %.2f\n", h.OldLayer, h.NewLayer, h.MeanSimilarity,
			h.Fit["q_proj"].MeanResidual, h.Fit["k_proj"].MeanResidual, h.Fit["v_proj"].MeanResidual, h.Fit["o_proj"].MeanResidual,
			math.Max(math.Max(h.Fit["q_proj"].MaxGain, h.Fit["k_proj"].MaxGain), math.Max(h.Fit["v_proj"].MaxGain, h.Fit["o_proj"].MaxGain)))
	}
	fmt.Fprintf(w, "lineage: mean fit residual %.3f, max gain %.2f", p.Lineage.MeanResidual, p.Lineage.MaxGain)
	switch {
	case !p.Lineage.Judged:
		fmt.Fprintf(w, "\n%s\n", p.Lineage.Note)
	case p.Lineage.Related:
		fmt.Fprint(w, " (one lineage)\n")
	default:
		fmt.Fprintf(w, "\nWARNING: %s\n", p.Lineage.Warning)
	}
	fmt.Fprintf(w, "modules: %d migrated", p.Modules.Migrated)
	if n := len(p.Modules.Dropped); n > 0 {
		fmt.Fprintf(w, ", %d dropped:", n)
		for _, d := range p.Modules.Dropped {
			fmt.Fprintf(w, "\n  %s: %s", d.Module, d.Reason)
		}
	}
	fmt.Fprintln(w)
}

// defaultBaseName names a base directory for base_model_name_or_path when the
// caller gave no repo id: "org/name" for a Hub cache snapshot
// (models--org--name/snapshots/<commit>), else the directory's name.
func defaultBaseName(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	if m := snapshotDir.FindStringSubmatch(filepath.ToSlash(abs)); m != nil {
		repo := filepath.Base(filepath.Dir(filepath.Dir(abs)))
		if rest, ok := strings.CutPrefix(repo, "models--"); ok {
			return strings.Replace(rest, "--", "/", 1)
		}
	}
	return filepath.Base(abs)
}
