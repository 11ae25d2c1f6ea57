package peft

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/safetensors"
)

// File names of a PEFT adapter directory.
const (
	ConfigFile     = "adapter_config.json"
	WeightsFile    = "adapter_model.safetensors"
	PickleFile     = "adapter_model.bin"
	ProvenanceFile = "lorasync.json"
	CardFile       = "README.md"
)

// tensorPrefix starts every LoRA tensor name written by PeftModel.save_pretrained
// for a causal LM.
const tensorPrefix = "base_model.model."

// Adapter is a LoRA adapter held in memory.
type Adapter struct {
	Dir     string // directory it was loaded from ("" when built in memory)
	Config  *Config
	Modules []*Module // sorted by layer, then role order (arch.Roles)
	// Metadata is the safetensors "__metadata__" of the weights file.
	Metadata map[string]string
}

// Module is the LoRA pair of one linear layer: dW = Scale() * B A.
type Module struct {
	Key   string    // module path, "model.layers.3.self_attn.q_proj"
	Layer int       // decoder layer index
	Role  arch.Role // which linear layer
	R     int       // rank
	In    int       // input width of the base layer
	Out   int       // output width of the base layer
	Alpha float64   // lora_alpha after alpha_pattern
	// RSLoRA selects the rank-stabilised scale alpha/sqrt(r).
	RSLoRA bool
	A      []float32 // R x In, row-major
	B      []float32 // Out x R, row-major
	// DType is the safetensors dtype the pair was stored in (written back the same).
	DType safetensors.DType
}

// Scale is alpha/r, or alpha/sqrt(r) with rsLoRA.
func (m *Module) Scale() float64 { return Scale(m.Alpha, m.R, m.RSLoRA) }

// validate checks the module's internal consistency (lengths match R, In, Out).
func (m *Module) validate() error {
	if m.R <= 0 || m.In <= 0 || m.Out <= 0 {
		return fmt.Errorf("module %s: r %d, in %d, out %d must be positive: %w", m.Key, m.R, m.In, m.Out, ErrInvalid)
	}
	if len(m.A) != m.R*m.In || len(m.B) != m.Out*m.R {
		return fmt.Errorf("module %s: A has %d values (want %d x %d), B has %d (want %d x %d): %w",
			m.Key, len(m.A), m.R, m.In, len(m.B), m.Out, m.R, ErrInvalid)
	}
	return nil
}

// Load reads dir/adapter_config.json and dir/adapter_model.safetensors.
// Errors name the file and, where there is one, the module or tensor.
func Load(dir string) (*Adapter, error) {
	cfgPath := filepath.Join(dir, ConfigFile)
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("peft: %w", err)
	}
	cfg, err := ParseConfig(cfgPath, data)
	if err != nil {
		return nil, err
	}
	if err := cfg.supported(cfgPath); err != nil {
		return nil, err
	}
	wPath := filepath.Join(dir, WeightsFile)
	f, err := safetensors.Open(wPath)
	if errors.Is(err, fs.ErrNotExist) {
		if _, perr := os.Stat(filepath.Join(dir, PickleFile)); perr == nil {
			return nil, fmt.Errorf("peft: %s: only a pickle %s is present: %w (pickle files can execute code; convert it to safetensors first)",
				dir, PickleFile, ErrUnsupported)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("peft: %w", err)
	}
	defer f.Close()
	mods, err := readModules(wPath, f, cfg)
	if err != nil {
		return nil, err
	}
	return &Adapter{Dir: dir, Config: cfg, Modules: mods, Metadata: f.Metadata()}, nil
}

// supported refuses configurations lorasync cannot migrate faithfully.
func (c *Config) supported(path string) error {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("peft: %s: %s: %w", path, fmt.Sprintf(format, args...), ErrUnsupported)
	}
	switch {
	case c.PeftType != "LORA":
		return refuse("peft_type %q: only LORA adapters can be migrated", c.PeftType)
	case c.UseDoRA:
		return refuse("use_dora is true: DoRA magnitude vectors are not migrated")
	case c.FanInFanOut:
		return refuse("fan_in_fan_out is true: that layout is for GPT-2 style Conv1D layers and is unsupported for llama-family Linear layers")
	case c.Bias != "none":
		return refuse("bias %q: adapters that train base-model biases are not supported", c.Bias)
	case c.LoraBias:
		return refuse("lora_bias is true: a bias on lora_B is not supported")
	case len(c.ModulesToSave) > 0:
		return refuse("modules_to_save %v: fully trained copies of base modules cannot be migrated", c.ModulesToSave)
	}
	for _, key := range []string{"target_parameters", "trainable_token_indices", "layer_replication"} {
		if v, ok := c.raw[key]; ok && !isNull(v) && string(v) != "[]" && string(v) != "{}" {
			return refuse("%s is set: not supported", key)
		}
	}
	return nil
}

// pairNames holds the tensor names found for one module.
type pairNames struct{ a, b string }

// readModules groups the tensors of f into LoRA pairs and checks them.
func readModules(path string, f *safetensors.File, cfg *Config) ([]*Module, error) {
	pairs := map[string]*pairNames{}
	var unknown []string
	for _, name := range f.Names() {
		key, half, ok := splitTensorName(name)
		if !ok {
			if strings.Contains(name, "lora_magnitude_vector") {
				return nil, fmt.Errorf("peft: %s: tensor %q: DoRA magnitude vectors are not supported: %w", path, name, ErrUnsupported)
			}
			unknown = append(unknown, name)
			continue
		}
		p := pairs[key]
		if p == nil {
			p = &pairNames{}
			pairs[key] = p
		}
		dst := &p.a
		if half == "B" {
			dst = &p.b
		}
		if *dst != "" {
			return nil, fmt.Errorf("peft: %s: module %s: two lora_%s tensors (%q, %q): %w", path, key, half, *dst, name, ErrInvalid)
		}
		*dst = name
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("peft: %s: tensors that are not LoRA A/B pairs of a linear layer: %s: %w", path, strings.Join(unknown, ", "), ErrUnsupported)
	}
	var mods []*Module
	var unknownMods []string
	keys := slices.Sorted(maps.Keys(pairs)) // deterministic: the first bad module is reported
	for _, key := range keys {
		p := pairs[key]
		layer, role, ok := parseModuleAny(key)
		if !ok {
			unknownMods = append(unknownMods, key)
			continue
		}
		m, err := readPair(path, f, cfg, key, p)
		if err != nil {
			return nil, err
		}
		m.Layer, m.Role = layer, role
		mods = append(mods, m)
	}
	if len(unknownMods) > 0 {
		return nil, fmt.Errorf("peft: %s: modules no supported architecture describes: %s: %w", path, strings.Join(unknownMods, ", "), ErrUnsupported)
	}
	if len(mods) == 0 {
		return nil, fmt.Errorf("peft: %s: no LoRA tensors: %w", path, ErrInvalid)
	}
	sortModules(mods)
	return mods, nil
}

// splitTensorName parses "base_model.model.<key>.lora_A[.<adapter>].weight".
func splitTensorName(name string) (key, half string, ok bool) {
	rest, found := strings.CutPrefix(name, tensorPrefix)
	if !found {
		return "", "", false
	}
	rest, found = strings.CutSuffix(rest, ".weight")
	if !found {
		return "", "", false
	}
	for _, h := range []string{"A", "B"} {
		marker := ".lora_" + h
		i := strings.LastIndex(rest, marker)
		if i <= 0 {
			continue
		}
		tail := rest[i+len(marker):]
		// Either nothing, or one adapter-name segment (".default").
		if tail == "" || (tail[0] == '.' && len(tail) > 1 && !strings.Contains(tail[1:], ".")) {
			return rest[:i], h, true
		}
	}
	return "", "", false
}

// parseModuleAny maps a module path to (layer, role) with the first
// architecture descriptor that knows it.
func parseModuleAny(key string) (int, arch.Role, bool) {
	for _, mt := range arch.Supported() {
		d, _ := arch.Lookup(mt)
		if l, r, ok := d.ParseModule(key); ok {
			return l, r, true
		}
	}
	return 0, "", false
}

// readPair loads and checks one module's A and B.
func readPair(path string, f *safetensors.File, cfg *Config, key string, p *pairNames) (*Module, error) {
	bad := func(sentinel error, format string, args ...any) error {
		return fmt.Errorf("peft: %s: module %s: %s: %w", path, key, fmt.Sprintf(format, args...), sentinel)
	}
	if p.a == "" || p.b == "" {
		missing := "lora_A"
		if p.b == "" {
			missing = "lora_B"
		}
		return nil, bad(ErrInvalid, "%s is missing", missing)
	}
	ia, _ := f.Info(p.a)
	ib, _ := f.Info(p.b)
	if len(ia.Shape) != 2 || len(ib.Shape) != 2 {
		return nil, bad(ErrInvalid, "lora_A shape %v and lora_B shape %v must both be 2-D", ia.Shape, ib.Shape)
	}
	r, in, out := ia.Shape[0], ia.Shape[1], ib.Shape[0]
	if ib.Shape[1] != r {
		return nil, bad(ErrInvalid, "rank mismatch: lora_A is %v (r x in) but lora_B is %v (out x r)", ia.Shape, ib.Shape)
	}
	if want := cfg.RankFor(key); r != want {
		return nil, bad(ErrInvalid, "rank %d in the tensors but %d from the config (r / rank_pattern)", r, want)
	}
	if ia.DType != ib.DType {
		return nil, bad(ErrInvalid, "lora_A is %s but lora_B is %s", ia.DType, ib.DType)
	}
	if !cfg.Targets(key) {
		return nil, bad(ErrInvalid, "has tensors but adapter_config.json target_modules does not target it")
	}
	a, err := f.Float32(p.a)
	if err != nil {
		return nil, fmt.Errorf("peft: %w", err)
	}
	b, err := f.Float32(p.b)
	if err != nil {
		return nil, fmt.Errorf("peft: %w", err)
	}
	m := &Module{Key: key, R: r, In: in, Out: out, Alpha: cfg.AlphaFor(key), RSLoRA: cfg.UseRSLoRA, A: a, B: b, DType: ia.DType}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("peft: %s: %w", path, err)
	}
	return m, nil
}

// sortModules orders modules by layer, then by role order in arch.Roles.
func sortModules(mods []*Module) {
	slices.SortFunc(mods, func(x, y *Module) int {
		if x.Layer != y.Layer {
			return x.Layer - y.Layer
		}
		return slices.Index(arch.Roles, x.Role) - slices.Index(arch.Roles, y.Role)
	})
}

// Check verifies that every module fits base: the path names a linear layer of
// base's descriptor within its depth, and (Out, In) equals base.Shape(role).
// The error lists every misfit and wraps ErrMismatch.
func (a *Adapter) Check(base *arch.Config) error {
	var problems []string
	for _, m := range a.Modules {
		layer, role, ok := base.ParseModule(m.Key)
		if !ok {
			problems = append(problems, fmt.Sprintf("module %s is not a linear layer of this %d-layer %s model", m.Key, base.Layers, base.ModelType))
			continue
		}
		if layer != m.Layer || role != m.Role {
			problems = append(problems, fmt.Sprintf("module %s parsed as layer %d %s, base says layer %d %s", m.Key, m.Layer, m.Role, layer, role))
			continue
		}
		if out, in := base.Shape(role); out != m.Out || in != m.In {
			problems = append(problems, fmt.Sprintf("module %s is %d x %d (out x in), base %s is %d x %d", m.Key, m.Out, m.In, role, out, in))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	where := "adapter"
	if a.Dir != "" {
		where = filepath.Join(a.Dir, WeightsFile)
	}
	return fmt.Errorf("peft: %s vs base %s: %w: %s", where, base.Path, ErrMismatch, strings.Join(problems, "; "))
}
