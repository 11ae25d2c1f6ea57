package peft

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
)

// Sentinel errors wrapped by this package's errors.
var (
	// ErrUnsupported: a valid adapter using a feature lorasync cannot migrate
	// (DoRA, another PEFT method, fan_in_fan_out, pickle weights, ...).
	ErrUnsupported = errors.New("unsupported adapter")
	// ErrInvalid: a malformed or self-inconsistent adapter.
	ErrInvalid = errors.New("invalid adapter")
	// ErrMismatch: the adapter does not fit the base model it is checked against.
	ErrMismatch = errors.New("adapter does not fit base model")
)

// Pattern is one entry of rank_pattern or alpha_pattern: a module-name pattern
// (a Python regular expression fragment) and the value it sets.
type Pattern struct {
	Key   string
	Value float64
}

// Config is adapter_config.json. Fields lorasync interprets are decoded; every
// key (known or not) is kept in raw so MarshalJSON can rewrite the file without
// dropping anything.
type Config struct {
	PeftType  string  // "LORA"
	R         int     // default rank
	LoraAlpha float64 // default alpha

	// target_modules: a list of names (TargetModules) or one regular expression
	// matched against whole module paths (TargetRegex); exactly one is set.
	TargetModules []string
	TargetRegex   string
	// exclude_modules, in the same two forms.
	ExcludeModules []string
	ExcludeRegex   string

	RankPattern  []Pattern // in file order: the first matching key wins
	AlphaPattern []Pattern

	UseRSLoRA         bool
	UseDoRA           bool
	FanInFanOut       bool
	Bias              string // "none", "all" or "lora_only"
	LoraBias          bool   // lora_bias: lora_B carries a bias
	LayersToTransform []int  // nil: all layers
	LayersPattern     []string
	ModulesToSave     []string

	BaseModel string // base_model_name_or_path
	Revision  string
	TaskType  string

	raw map[string]json.RawMessage
}

// ParseConfig decodes adapter_config.json; name labels errors.
func ParseConfig(name string, data []byte) (*Config, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("peft: %s: %w: %v", name, ErrInvalid, err)
	}
	c := &Config{raw: raw}
	if err := c.decode(); err != nil {
		return nil, fmt.Errorf("peft: %s: %w", name, err)
	}
	return c, nil
}

// field decodes raw[key] into dst when present and not null.
func (c *Config) field(key string, dst any) error {
	v, ok := c.raw[key]
	if !ok || isNull(v) {
		return nil
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return fmt.Errorf("%s: %w: %v", key, ErrInvalid, err)
	}
	return nil
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

func (c *Config) decode() error {
	var r *float64
	for _, f := range []struct {
		key string
		dst any
	}{
		{"peft_type", &c.PeftType}, {"r", &r}, {"lora_alpha", &c.LoraAlpha},
		{"use_rslora", &c.UseRSLoRA}, {"use_dora", &c.UseDoRA}, {"fan_in_fan_out", &c.FanInFanOut},
		{"bias", &c.Bias}, {"lora_bias", &c.LoraBias}, {"modules_to_save", &c.ModulesToSave},
		{"base_model_name_or_path", &c.BaseModel}, {"revision", &c.Revision}, {"task_type", &c.TaskType},
	} {
		if err := c.field(f.key, f.dst); err != nil {
			return err
		}
	}
	if r == nil {
		return fmt.Errorf("r is missing: %w", ErrInvalid)
	}
	if *r != math.Trunc(*r) || *r < 1 || *r > math.MaxInt32 {
		return fmt.Errorf("r = %v is not a positive integer: %w", *r, ErrInvalid)
	}
	c.R = int(*r)
	if _, ok := c.raw["lora_alpha"]; !ok {
		c.LoraAlpha = 8 // LoraConfig default
	}
	if c.Bias == "" {
		c.Bias = "none"
	}
	var err error
	if c.TargetModules, c.TargetRegex, err = c.listOrString("target_modules"); err != nil {
		return err
	}
	if c.ExcludeModules, c.ExcludeRegex, err = c.listOrString("exclude_modules"); err != nil {
		return err
	}
	var layersPattern string
	if c.LayersPattern, layersPattern, err = c.listOrString("layers_pattern"); err != nil {
		return err
	}
	if layersPattern != "" {
		c.LayersPattern = []string{layersPattern}
	}
	if c.LayersToTransform, err = c.intOrList("layers_to_transform"); err != nil {
		return err
	}
	if c.RankPattern, err = c.patterns("rank_pattern"); err != nil {
		return err
	}
	for _, p := range c.RankPattern {
		if p.Value != math.Trunc(p.Value) || p.Value < 1 {
			return fmt.Errorf("rank_pattern %q: rank %v is not a positive integer: %w", p.Key, p.Value, ErrInvalid)
		}
	}
	if c.AlphaPattern, err = c.patterns("alpha_pattern"); err != nil {
		return err
	}
	return c.compileAll()
}

// listOrString decodes a field that PEFT accepts as a list of strings or one
// string (null and absent give neither).
func (c *Config) listOrString(key string) ([]string, string, error) {
	v, ok := c.raw[key]
	if !ok || isNull(v) {
		return nil, "", nil
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		return nil, s, nil
	}
	var list []string
	if err := json.Unmarshal(v, &list); err != nil {
		return nil, "", fmt.Errorf("%s: want a list of strings or a string: %w", key, ErrInvalid)
	}
	if list == nil {
		list = []string{}
	}
	return list, "", nil
}

// intOrList decodes layers_to_transform: an int or a list of ints.
func (c *Config) intOrList(key string) ([]int, error) {
	v, ok := c.raw[key]
	if !ok || isNull(v) {
		return nil, nil
	}
	var n int
	if json.Unmarshal(v, &n) == nil {
		return []int{n}, nil
	}
	var list []int
	if err := json.Unmarshal(v, &list); err != nil {
		return nil, fmt.Errorf("%s: want an int or a list of ints: %w", key, ErrInvalid)
	}
	return list, nil
}

// patterns decodes an object of pattern -> number keeping the file's key order
// (PEFT takes the first matching key), rejecting repeated keys.
func (c *Config) patterns(key string) ([]Pattern, error) {
	v, ok := c.raw[key]
	if !ok || isNull(v) {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s: %w", key, fmt.Sprintf(format, args...), ErrInvalid)
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, bad("want an object")
	}
	var out []Pattern
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, bad("%v", err)
		}
		k := tok.(string) // object keys are always strings
		tok, err = dec.Token()
		num, isNum := tok.(json.Number)
		if err != nil || !isNum {
			return nil, bad("%q: want a number", k)
		}
		f, err := strconv.ParseFloat(string(num), 64)
		if err != nil {
			return nil, bad("%q: %v", k, err)
		}
		if slices.ContainsFunc(out, func(p Pattern) bool { return p.Key == k }) {
			return nil, bad("duplicate key %q", k)
		}
		out = append(out, Pattern{k, f})
	}
	if _, err := dec.Token(); err != nil {
		return nil, bad("%v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, bad("trailing data")
	}
	return out, nil
}

// MarshalJSON writes the config as PEFT does (indent 2, sorted keys), keeping
// every key read from the file and overriding the ones this type decodes.
func (c *Config) MarshalJSON() ([]byte, error) {
	out := maps.Clone(c.raw)
	if out == nil {
		out = map[string]json.RawMessage{}
	}
	set := func(key string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			panic("peft: marshal " + key + ": " + err.Error()) // only plain values are marshalled
		}
		out[key] = b
	}
	setOpt := func(key string, v any, present bool) {
		if present {
			set(key, v)
		} else if _, had := out[key]; had {
			out[key] = json.RawMessage("null")
		}
	}
	set("peft_type", c.PeftType)
	set("r", c.R)
	set("lora_alpha", c.LoraAlpha)
	if c.TargetRegex != "" {
		set("target_modules", c.TargetRegex)
	} else {
		setOpt("target_modules", c.TargetModules, c.TargetModules != nil)
	}
	if c.ExcludeRegex != "" {
		set("exclude_modules", c.ExcludeRegex)
	} else {
		setOpt("exclude_modules", c.ExcludeModules, c.ExcludeModules != nil)
	}
	out["rank_pattern"] = orderedPatterns(c.RankPattern)
	out["alpha_pattern"] = orderedPatterns(c.AlphaPattern)
	set("use_rslora", c.UseRSLoRA)
	set("use_dora", c.UseDoRA)
	set("fan_in_fan_out", c.FanInFanOut)
	set("bias", c.Bias)
	if _, had := out["lora_bias"]; had || c.LoraBias {
		set("lora_bias", c.LoraBias)
	}
	setOpt("layers_to_transform", c.LayersToTransform, c.LayersToTransform != nil)
	setOpt("layers_pattern", c.LayersPattern, c.LayersPattern != nil)
	setOpt("modules_to_save", c.ModulesToSave, c.ModulesToSave != nil)
	set("base_model_name_or_path", c.BaseModel)
	setOpt("revision", c.Revision, c.Revision != "")
	setOpt("task_type", c.TaskType, c.TaskType != "")
	return json.MarshalIndent(out, "", "  ")
}

// orderedPatterns encodes patterns as a JSON object in slice order.
func orderedPatterns(ps []Pattern) json.RawMessage {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(p.Key)
		b.Write(k)
		b.WriteByte(':')
		b.WriteString(strconv.FormatFloat(p.Value, 'g', -1, 64))
	}
	b.WriteByte('}')
	return b.Bytes()
}

// Clone returns a deep copy of c.
func (c *Config) Clone() *Config {
	d := *c
	d.TargetModules = slices.Clone(c.TargetModules)
	d.ExcludeModules = slices.Clone(c.ExcludeModules)
	d.RankPattern = slices.Clone(c.RankPattern)
	d.AlphaPattern = slices.Clone(c.AlphaPattern)
	d.LayersToTransform = slices.Clone(c.LayersToTransform)
	d.LayersPattern = slices.Clone(c.LayersPattern)
	d.ModulesToSave = slices.Clone(c.ModulesToSave)
	d.raw = maps.Clone(c.raw)
	return &d
}
