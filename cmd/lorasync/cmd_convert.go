package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/lorasync/lorasync/convert"
	"github.com/lorasync/lorasync/convert/linalg"
	"github.com/lorasync/lorasync/convert/lorasuite"
)

var convertCmd = &cobra.Command{
	Use:   "convert --old DIR --new DIR --adapter DIR --out DIR",
	Short: "Migrate a PEFT LoRA adapter from its base model to an upgraded one (LoRASuite)",
	Long: `Migrate the LoRA adapter in --adapter, trained on the base model in --old, to
the base model in --new, and write the migrated adapter to --out with a model
card (README.md) and a provenance record (lorasync.json).

The analysis of the two base models (transfer matrix, layer map, head maps) is
cached under --cache-dir, so migrating more adapters of the same pair only
costs their projection.

Layer maps: cka (linear CKA between the hidden states both models produce on
calibration text, then the order-preserving DP; needs tokenizer.json on both
sides and a supported architecture), linear (evenly spaced), explicit:J0,J1,...
(for each layer of the shallower model, the layer of the deeper one it pairs
with, strictly increasing), similarity:FILE (the DP over a JSON L_old x L_new
similarity matrix, larger = more similar). The default, auto, is cka when it
can run and linear otherwise; the provenance says which and why. A cka map is
drawn in layer_similarity.png beside the adapter.`,
	Args: cobra.NoArgs,
	RunE: runConvert,
}

func init() {
	f := convertCmd.Flags()
	f.String("old", "", "directory of the base model the adapter was trained on (config.json, safetensors, tokenizer.json)")
	f.String("new", "", "directory of the upgraded base model")
	f.String("adapter", "", "PEFT adapter directory (adapter_config.json, adapter_model.safetensors)")
	f.String("out", "", "output directory for the migrated adapter (replaced atomically)")
	f.String("layer-map", convert.LayerMapAuto, "auto | cka | linear | explicit:J0,J1,... | similarity:FILE")
	f.String("calibration", "", "calibration text for cka, one sample per line (default: the built-in set)")
	f.String("transfer", convert.TransferLstsq, "hidden-space transfer matrix: lstsq | identity")
	f.String("head-transfer", string(lorasuite.HeadLstsq), "per-head transfer: lstsq | gram (the paper's formula)")
	f.String("input-map", string(lorasuite.InputWx), "input-side map of a delta: wx (the paper's) | pinv")
	f.String("new-name", "", "repo id written as the adapter's base_model_name_or_path (default: the new base's directory name)")
	f.String("new-revision", "", "commit of the new base, written as the adapter's revision")
	f.String("cache-dir", defaultCacheDir(), "pair-analysis cache directory (empty: no cache)")
	f.Bool("json", false, "print a machine-readable summary (the provenance) on stdout")
	for _, name := range []string{"old", "new", "adapter", "out"} {
		convertCmd.MarkFlagRequired(name)
	}
	rootCmd.AddCommand(convertCmd)
}

// stageDescription labels a convert.Options.Progress stage for the bar.
func stageDescription(stage string) string {
	switch stage {
	case "cka":
		return "calibration forward passes (layers)"
	case "layers":
		return "analysing layer pairs"
	}
	return stage
}

// logLinalg records the linear-algebra backend and kernels (they set the
// speed of a conversion) and warns when OPENBLAS_CORETYPE holds OpenBLAS
// below what the CPU can do.
func logLinalg(log *slog.Logger) {
	log.Info("linear algebra", "backend", linalg.Backend(), "kernel", linalg.Kernel(), "threads", linalg.Threads())
	if advice := linalg.KernelAdvice(); advice != "" {
		log.Warn(advice)
	}
}

// defaultCacheDir is $XDG_CACHE_HOME/lorasync (or ~/.cache/lorasync).
func defaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "lorasync")
	}
	return ""
}

func runConvert(cmd *cobra.Command, _ []string) error {
	f := cmd.Flags()
	get := func(name string) string { v, _ := f.GetString(name); return v }
	asJSON, _ := f.GetBool("json")
	o := convert.Options{
		OldBase: get("old"), NewBase: get("new"), Adapter: get("adapter"), Out: get("out"),
		LayerMap: get("layer-map"), Calibration: get("calibration"), Transfer: get("transfer"),
		HeadTransfer: lorasuite.HeadTransfer(get("head-transfer")), InputMap: lorasuite.InputMap(get("input-map")),
		NewBaseName: get("new-name"), NewBaseRevision: get("new-revision"), CacheDir: get("cache-dir"),
		Logger: slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	logLinalg(o.Logger)
	var bar *progressbar.ProgressBar
	if isTerminal(cmd.ErrOrStderr()) {
		barStage := ""
		o.Progress = func(stage string, done, total int) {
			if bar == nil || stage != barStage {
				if bar != nil {
					bar.Finish()
				}
				bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(cmd.ErrOrStderr()),
					progressbar.OptionSetDescription(stageDescription(stage)), progressbar.OptionShowCount(),
					progressbar.OptionClearOnFinish())
				barStage = stage
			}
			bar.Set(done)
		}
	}
	res, err := convert.Convert(cmd.Context(), o)
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Out        string              `json:"out"`
			Provenance *convert.Provenance `json:"provenance"`
		}{res.Out, &res.Provenance})
	}
	convert.WriteSummary(out, &res.Provenance)
	t := res.Provenance.Timings
	cached := ""
	if t.PairCached {
		cached = ", pair analysis from cache"
	}
	_, err = fmt.Fprintf(out, "wrote %s (%.1fs%s)\n", res.Out, t.TotalSeconds, cached)
	return err
}

// isTerminal reports whether w is a terminal (progress bars only go there).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
