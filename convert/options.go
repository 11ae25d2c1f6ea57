package convert

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lorasync/lorasync/convert/lorasuite"
)

// Transfer-matrix methods (step 1).
const (
	TransferLstsq    = "lstsq"    // least squares over the shared vocabulary (default)
	TransferIdentity = "identity" // W_x = I; same hidden size only
)

// Layer-map kinds (step 2).
const (
	LayerMapLinear     = "linear"     // evenly spaced
	LayerMapExplicit   = "explicit"   // explicit:J0,J1,...
	LayerMapSimilarity = "similarity" // similarity:FILE, DP over a given L_old x L_new matrix
	LayerMapCKA        = "cka"        // DP over CKA of activations (needs the forward pass)
	LayerMapAuto       = "auto"       // cka when both models can be run, else linear (the default)
)

// Options say what to migrate and how. The zero values of the method fields
// select the defaults: lstsq transfer, linear layer map, lstsq head transfer,
// wx input map.
type Options struct {
	OldBase string // directory of the base the adapter was trained on
	NewBase string // directory of the upgraded base
	Adapter string // PEFT adapter directory
	Out     string // output adapter directory (replaced atomically)

	// NewBaseName is written as the adapter's base_model_name_or_path (a Hub
	// repo id); default: the new base directory's name. NewBaseRevision is
	// its commit, when known.
	NewBaseName, NewBaseRevision string

	LayerMap     string                 // "auto" (default), "linear", "explicit:J0,J1,...", "similarity:FILE" or "cka"
	Transfer     string                 // "lstsq" or "identity"
	HeadTransfer lorasuite.HeadTransfer // "lstsq" or "gram"
	InputMap     lorasuite.InputMap     // "wx" or "pinv"

	// Calibration is a text file of calibration lines for cka (one sample
	// per line); empty means the built-in set.
	Calibration string

	// CacheDir holds pair analyses (CacheDir/pairs); "" disables the cache.
	CacheDir string
	// Inputs names where each input came from (e.g. "Qwen/Qwen2.5-1.5B@<commit>"),
	// keyed "old_base", "new_base", "adapter"; recorded in the provenance.
	Inputs map[string]string

	Logger *slog.Logger
	// Progress, if set, is told about long stages: ("cka", done, total)
	// after each decoder layer of the two calibration forward passes, then
	// ("layers", done, total) after each analysed layer pair.
	Progress func(stage string, done, total int)
}

// layerMapSpec is a parsed Options.LayerMap.
type layerMapSpec struct {
	kind    string
	targets []int       // explicit
	file    string      // similarity
	sim     [][]float64 // similarity, read from file
	// calibration lines for cka/auto and their content hash (cache key)
	lines         []string
	calibrationID string
}

// String is the canonical form used in cache keys and provenance.
func (s layerMapSpec) String() string {
	switch s.kind {
	case LayerMapExplicit:
		parts := make([]string, len(s.targets))
		for i, t := range s.targets {
			parts[i] = strconv.Itoa(t)
		}
		return s.kind + ":" + strings.Join(parts, ",")
	case LayerMapSimilarity:
		data, _ := json.Marshal(s.sim)
		return s.kind + ":" + string(data)
	}
	return s.kind
}

// parseLayerMap reads the --layer-map syntax.
func parseLayerMap(v string) (layerMapSpec, error) {
	kind, arg, _ := strings.Cut(v, ":")
	switch kind {
	case "":
		return layerMapSpec{kind: LayerMapAuto}, nil
	case LayerMapLinear, LayerMapCKA, LayerMapAuto:
		if arg != "" {
			return layerMapSpec{}, fmt.Errorf("layer map %q: %s takes no argument", v, kind)
		}
		return layerMapSpec{kind: kind}, nil
	case LayerMapExplicit:
		var s layerMapSpec
		s.kind = kind
		for _, f := range strings.Split(arg, ",") {
			j, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				return s, fmt.Errorf("layer map %q: %q is not a layer index", v, f)
			}
			s.targets = append(s.targets, j)
		}
		return s, nil
	case LayerMapSimilarity:
		data, err := os.ReadFile(arg)
		if err != nil {
			return layerMapSpec{}, fmt.Errorf("layer map: %w", err)
		}
		s := layerMapSpec{kind: kind, file: arg}
		if err := json.Unmarshal(data, &s.sim); err != nil {
			return s, fmt.Errorf("layer map: %s: want a JSON array of L_old rows of L_new similarities: %w", arg, err)
		}
		return s, nil
	}
	return layerMapSpec{}, fmt.Errorf("layer map %q: want auto, cka, linear, explicit:J0,J1,... or similarity:FILE", v)
}

// withDefaults validates o and fills the method defaults.
func (o Options) withDefaults() (Options, layerMapSpec, error) {
	for _, f := range []struct{ name, v string }{{"old base", o.OldBase}, {"new base", o.NewBase}, {"adapter", o.Adapter}, {"output", o.Out}} {
		if f.v == "" {
			return o, layerMapSpec{}, fmt.Errorf("convert: no %s directory given", f.name)
		}
	}
	if err := checkOutput(o); err != nil {
		return o, layerMapSpec{}, err
	}
	if o.Transfer == "" {
		o.Transfer = TransferLstsq
	}
	if o.Transfer != TransferLstsq && o.Transfer != TransferIdentity {
		return o, layerMapSpec{}, fmt.Errorf("convert: transfer %q: want lstsq or identity", o.Transfer)
	}
	if o.HeadTransfer == "" {
		o.HeadTransfer = lorasuite.HeadLstsq
	}
	if o.HeadTransfer != lorasuite.HeadLstsq && o.HeadTransfer != lorasuite.HeadGram {
		return o, layerMapSpec{}, fmt.Errorf("convert: head transfer %q: want lstsq or gram", o.HeadTransfer)
	}
	if o.InputMap == "" {
		o.InputMap = lorasuite.InputWx
	}
	if o.InputMap != lorasuite.InputWx && o.InputMap != lorasuite.InputPinv {
		return o, layerMapSpec{}, fmt.Errorf("convert: input map %q: want wx or pinv", o.InputMap)
	}
	lm, err := parseLayerMap(o.LayerMap)
	if err != nil {
		return o, lm, fmt.Errorf("convert: %w", err)
	}
	if lm.kind == LayerMapCKA || lm.kind == LayerMapAuto {
		if lm.lines, lm.calibrationID, err = calibration(o.Calibration); err != nil {
			return o, lm, fmt.Errorf("convert: %w", err)
		}
	}
	o.LayerMap = lm.kind
	if o.NewBaseName == "" {
		o.NewBaseName = defaultBaseName(o.NewBase)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, lm, nil
}

// checkOutput refuses an output directory that is, or contains, an input or
// the cache directory: peft.Write replaces the output directory wholesale
// (an existing one is moved aside and removed), so such an output would
// delete a base model, the source adapter or the cache. Paths are compared
// absolute, cleaned and with symlinks resolved as far as they exist.
func checkOutput(o Options) error {
	out := resolvePath(o.Out)
	for _, in := range []struct{ name, dir string }{
		{"old base", o.OldBase}, {"new base", o.NewBase}, {"adapter", o.Adapter}, {"cache", o.CacheDir},
	} {
		if in.dir == "" {
			continue
		}
		d := resolvePath(in.dir)
		if rel, err := filepath.Rel(out, d); err == nil && (rel == "." || filepath.IsLocal(rel)) {
			return fmt.Errorf("convert: output directory %s would replace the %s directory %s (the output is replaced as a whole): choose another output", o.Out, in.name, in.dir)
		}
	}
	return nil
}

// resolvePath returns p absolute and cleaned, with symlinks resolved in its
// longest existing prefix (the rest, not yet created, appended as is).
func resolvePath(p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return filepath.Clean(p)
	}
	rest := ""
	for dir := abs; ; {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return abs
		}
		rest = filepath.Join(filepath.Base(dir), rest)
		dir = parent
	}
}
