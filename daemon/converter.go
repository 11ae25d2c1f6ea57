package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/lorasync/lorasync/convert"
	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/lorasuite"
	"github.com/lorasync/lorasync/daemon/config"
)

// LoRASuite is the Converter backed by convert.Convert.
type LoRASuite struct {
	Logger *slog.Logger
}

// convertOptions maps the daemon's request onto convert.Options.
func convertOptions(req ConvertRequest, log *slog.Logger) convert.Options {
	return convert.Options{
		OldBase: req.OldBaseDir, NewBase: req.NewBaseDir, Adapter: req.AdapterDir, Out: req.OutDir,
		NewBaseName: req.NewBaseRepo, NewBaseRevision: req.NewBaseCommit,
		LayerMap:     layerMapArg(req.Options),
		Calibration:  req.Options.Calibration,
		Transfer:     req.Options.Transfer,
		HeadTransfer: lorasuite.HeadTransfer(req.Options.HeadTransfer),
		InputMap:     lorasuite.InputMap(req.Options.InputMap),
		CacheDir:     req.CacheDir,
		Inputs: map[string]string{
			"old_base": req.OldBaseRepo + "@" + req.OldBaseCommit,
			"new_base": req.NewBaseRepo + "@" + req.NewBaseCommit,
			"adapter":  req.AdapterID + "@" + req.AdapterCommit,
		},
		Logger:   log,
		Progress: progressLog(log),
	}
}

// progressLog logs a conversion's long stages (the CKA calibration passes,
// the layer-pair analysis: minutes each on large bases) at each quarter, so
// an operator following the journal sees a job advance.
func progressLog(log *slog.Logger) func(stage string, done, total int) {
	var mu sync.Mutex
	last := map[string]int{} // stage -> quarters logged
	return func(stage string, done, total int) {
		if total <= 0 {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		q := 4 * done / total
		if q <= last[stage] {
			return
		}
		last[stage] = q
		log.Info("conversion progress", "stage", stage, "done", done, "total", total)
	}
}

// layerMapArg renders the config's layer map in convert's syntax:
// "linear", "explicit:J0,J1,...", "similarity:FILE" or "cka".
func layerMapArg(c config.ConvertConfig) string {
	switch c.LayerMap {
	case "explicit":
		parts := make([]string, len(c.Layers))
		for i, l := range c.Layers {
			parts[i] = strconv.Itoa(l)
		}
		return "explicit:" + strings.Join(parts, ",")
	case "similarity":
		return "similarity:" + c.SimilarityFile
	}
	return c.LayerMap
}

// Convert implements Converter. convert.Convert fails on its inputs (a
// malformed or misfitting adapter, an unsupported architecture, an
// unavailable option), which retrying cannot fix, so those errors are
// permanent; a resource shortage on the machine (disk full, out of memory
// or file descriptors, an I/O error) may pass, so it is retried, and so is
// cancellation.
func (l LoRASuite) Convert(ctx context.Context, req ConvertRequest) (ConvertResult, error) {
	log := l.Logger
	if log == nil {
		log = slog.Default()
	}
	res, err := convert.Convert(ctx, convertOptions(req, log))
	if err != nil {
		if ctx.Err() != nil || transientIO(err) {
			return ConvertResult{}, err
		}
		return ConvertResult{}, Permanent(err)
	}
	p := res.Provenance
	summary := fmt.Sprintf("%d modules migrated, %d dropped; transfer residual %s; layer map %s",
		p.Modules.Migrated, len(p.Modules.Dropped), fmtResidual(float64(p.Transfer.Residual)), p.Options.LayerMap)
	if p.Lineage.Warning != "" {
		summary += "; WARNING: " + p.Lineage.Warning
	}
	metrics := map[string]float64{
		"modules_migrated":      float64(p.Modules.Migrated),
		"modules_dropped":       float64(len(p.Modules.Dropped)),
		"lineage_mean_residual": p.Lineage.MeanResidual,
		"lineage_max_gain":      p.Lineage.MaxGain,
		"shared_tokens":         float64(p.Vocabulary.SharedTokens),
		"total_seconds":         p.Timings.TotalSeconds,
	}
	if r := float64(p.Transfer.Residual); !math.IsNaN(r) {
		metrics["transfer_relative_residual"] = r
	}
	return ConvertResult{Summary: summary, Metrics: metrics}, nil
}

func fmtResidual(r float64) string {
	if math.IsNaN(r) {
		return "n/a"
	}
	return strconv.FormatFloat(r, 'g', 3, 64)
}

// Verify implements Converter: the adapter in dir loads, fits the base in
// baseDir, and every factor value is finite.
func (LoRASuite) Verify(ctx context.Context, dir, baseDir string) error {
	cfg, err := arch.Load(baseDir)
	if err != nil {
		return fmt.Errorf("base %s: %w", baseDir, err)
	}
	_, err = convert.VerifyAdapter(dir, cfg)
	return err
}

// transientIO reports whether err comes from a machine resource that may
// recover (as opposed to bad input).
func transientIO(err error) bool {
	for _, e := range []error{syscall.ENOSPC, syscall.EDQUOT, syscall.EIO, syscall.ENOMEM, syscall.EMFILE, syscall.ENFILE, syscall.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
