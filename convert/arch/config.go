package arch

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
)

var (
	// ErrUnsupported is wrapped when config.json names a model_type (or a feature)
	// that no descriptor covers.
	ErrUnsupported = errors.New("unsupported architecture")
	// ErrInvalid is wrapped when config.json is malformed or inconsistent.
	ErrInvalid = errors.New("invalid model config")
)

// Config is a parsed, validated config.json. It is read-only after Load/Parse.
type Config struct {
	Path          string // file it was read from (names it in errors)
	ModelType     string
	Architectures []string

	Hidden       int // d
	Layers       int
	Heads        int // H, attention (query) heads
	KVHeads      int // G, key/value heads; Heads when the config omits it
	HeadDim      int // h; explicit head_dim, else Hidden/Heads
	Intermediate int // I, MLP width
	Vocab        int // rows of the embedding (and of lm_head)

	TiedEmbeddings bool // lm_head shares the embedding matrix
	RMSNormEps     float64
	RopeTheta      float64
	RopeScaling    *RopeScaling // nil when absent or null
	AttentionBias  bool         // biases on q/k/v/o (config "attention_bias")
	MLPBias        bool         // biases on gate/up/down (config "mlp_bias", llama)
	QKNorm         bool         // per-head RMSNorm on q and k (qwen3)
	MaxPositions   int          // max_position_embeddings, 0 when absent
	SlidingWindow  int          // attention window when enabled, 0 otherwise
	HiddenAct      string       // e.g. "silu"
	TorchDType     string       // "torch_dtype" (or "dtype"), e.g. "bfloat16"

	// MiniCPM muP scales (1, 0, 0 for other families): the embedding output is
	// multiplied by ScaleEmb; each residual branch by ScaleDepth/sqrt(Layers)
	// when ScaleDepth > 0; the final hidden state is divided by
	// Hidden/DimModelBase before lm_head when DimModelBase > 0.
	ScaleEmb     float64
	DimModelBase int
	ScaleDepth   float64

	Desc *Descriptor
}

// RopeScaling is config "rope_scaling". Type "llama3" is decoded into its
// fields; every type keeps the raw JSON for consumers that know it.
type RopeScaling struct {
	Type                 string  // "rope_type" (or legacy "type"): "llama3", "linear", "yarn", ...
	Factor               float64 // llama3: scale of the long-wavelength band
	LowFreqFactor        float64 // llama3
	HighFreqFactor       float64 // llama3
	OriginalMaxPositions int     // llama3: original_max_position_embeddings
	Raw                  json.RawMessage
}

// rawConfig mirrors the config.json fields read; pointers tell absent from zero.
type rawConfig struct {
	ModelType      string          `json:"model_type"`
	Architectures  []string        `json:"architectures"`
	Hidden         *int            `json:"hidden_size"`
	Layers         *int            `json:"num_hidden_layers"`
	Heads          *int            `json:"num_attention_heads"`
	KVHeads        *int            `json:"num_key_value_heads"`
	HeadDim        *int            `json:"head_dim"`
	Intermediate   *int            `json:"intermediate_size"`
	Vocab          *int            `json:"vocab_size"`
	Tied           *bool           `json:"tie_word_embeddings"`
	Eps            *float64        `json:"rms_norm_eps"`
	Theta          *float64        `json:"rope_theta"`
	RopeScaling    json.RawMessage `json:"rope_scaling"`
	RopeParameters json.RawMessage `json:"rope_parameters"` // transformers v5
	AttentionBias  *bool           `json:"attention_bias"`
	MLPBias        *bool           `json:"mlp_bias"`
	MaxPositions   *int            `json:"max_position_embeddings"`
	SlidingWindow  *int            `json:"sliding_window"`
	UseSliding     *bool           `json:"use_sliding_window"`
	HiddenAct      string          `json:"hidden_act"`
	TorchDType     string          `json:"torch_dtype"`
	DType          string          `json:"dtype"` // transformers v5 name
	ScaleEmb       *float64        `json:"scale_emb"`
	DimModelBase   *int            `json:"dim_model_base"`
	ScaleDepth     *float64        `json:"scale_depth"`
}

// Load reads and validates dir/config.json.
func Load(dir string) (*Config, error) {
	path := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("arch: %w", err)
	}
	return Parse(path, data)
}

// Parse parses and validates config.json contents; name (usually the file path)
// names the config in errors and becomes Config.Path.
func Parse(name string, data []byte) (*Config, error) {
	var raw rawConfig
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("arch: %s: %w: %v", name, ErrInvalid, err)
	}
	desc, ok := Lookup(raw.ModelType)
	if !ok {
		return nil, fmt.Errorf("arch: %s: model_type %q: %w (supported: %s)",
			name, raw.ModelType, ErrUnsupported, strings.Join(Supported(), ", "))
	}
	c := &Config{Path: name, ModelType: raw.ModelType, Architectures: raw.Architectures, Desc: desc}
	if err := c.fill(&raw); err != nil {
		return nil, fmt.Errorf("arch: %s: %w", name, err)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("arch: %s: %w", name, err)
	}
	return c, nil
}

// invalid formats a field error wrapping ErrInvalid.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalid)
}

// fill copies raw fields into c, applying the family's defaults.
func (c *Config) fill(raw *rawConfig) error {
	required := []struct {
		key string
		src *int
		dst *int
	}{
		{"hidden_size", raw.Hidden, &c.Hidden},
		{"num_hidden_layers", raw.Layers, &c.Layers},
		{"num_attention_heads", raw.Heads, &c.Heads},
		{"intermediate_size", raw.Intermediate, &c.Intermediate},
		{"vocab_size", raw.Vocab, &c.Vocab},
	}
	for _, f := range required {
		if f.src == nil {
			return invalid("%s is missing", f.key)
		}
		*f.dst = *f.src
	}
	d := c.Desc
	c.KVHeads = deref(raw.KVHeads, c.Heads)
	if raw.HeadDim != nil {
		c.HeadDim = *raw.HeadDim
	} else if c.Heads > 0 {
		if c.Hidden%c.Heads != 0 {
			return invalid("hidden_size %d is not divisible by num_attention_heads %d (and head_dim is not given)", c.Hidden, c.Heads)
		}
		c.HeadDim = c.Hidden / c.Heads
	}
	c.TiedEmbeddings = deref(raw.Tied, d.TiedDefault)
	c.RMSNormEps = deref(raw.Eps, d.EpsDefault)
	c.RopeTheta = deref(raw.Theta, d.ThetaDefault)
	c.AttentionBias = deref(raw.AttentionBias, false)
	c.MLPBias = deref(raw.MLPBias, false)
	c.QKNorm = d.QNorm != "" && d.KNorm != ""
	c.MaxPositions = deref(raw.MaxPositions, 0)
	c.HiddenAct = raw.HiddenAct
	c.TorchDType = raw.TorchDType
	if c.TorchDType == "" {
		c.TorchDType = raw.DType
	}
	// Mistral's window is on when sliding_window is set; Qwen's only when
	// use_sliding_window is also true.
	if raw.SlidingWindow != nil && deref(raw.UseSliding, raw.UseSliding == nil) {
		c.SlidingWindow = *raw.SlidingWindow
	}
	c.ScaleEmb = 1
	if d.MuP {
		c.ScaleEmb = deref(raw.ScaleEmb, 1)
		c.DimModelBase = deref(raw.DimModelBase, 0)
		c.ScaleDepth = deref(raw.ScaleDepth, 0)
	}
	scaling := raw.RopeScaling
	if isNull(scaling) && !isNull(raw.RopeParameters) {
		// transformers v5 folds rope_theta and the scaling into rope_parameters.
		var p struct {
			Theta *float64 `json:"rope_theta"`
		}
		if err := json.Unmarshal(raw.RopeParameters, &p); err != nil {
			return invalid("rope_parameters: %v", err)
		}
		if p.Theta != nil && raw.Theta == nil {
			c.RopeTheta = *p.Theta
		}
		scaling = raw.RopeParameters
	}
	rs, err := parseRopeScaling(scaling)
	if err != nil {
		return err
	}
	c.RopeScaling = rs
	return nil
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

// parseRopeScaling decodes rope_scaling (or v5 rope_parameters). A "default"
// rope type is no scaling at all and yields nil.
func parseRopeScaling(raw json.RawMessage) (*RopeScaling, error) {
	if isNull(raw) {
		return nil, nil
	}
	var r struct {
		RopeType       string   `json:"rope_type"`
		Type           string   `json:"type"`
		Factor         *float64 `json:"factor"`
		LowFreqFactor  *float64 `json:"low_freq_factor"`
		HighFreqFactor *float64 `json:"high_freq_factor"`
		OriginalMax    *int     `json:"original_max_position_embeddings"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, invalid("rope_scaling: %v", err)
	}
	rs := &RopeScaling{Type: r.RopeType, Raw: append(json.RawMessage(nil), raw...)}
	if rs.Type == "" {
		rs.Type = r.Type
	}
	switch rs.Type {
	case "", "default":
		return nil, nil
	case "llama3":
		if r.Factor == nil || r.LowFreqFactor == nil || r.HighFreqFactor == nil || r.OriginalMax == nil {
			return nil, invalid("rope_scaling llama3 needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings")
		}
		rs.Factor, rs.LowFreqFactor, rs.HighFreqFactor, rs.OriginalMaxPositions = *r.Factor, *r.LowFreqFactor, *r.HighFreqFactor, *r.OriginalMax
		if !(rs.Factor > 0) || !(rs.LowFreqFactor > 0) || !(rs.HighFreqFactor > rs.LowFreqFactor) || rs.OriginalMaxPositions <= 0 {
			return nil, invalid("rope_scaling llama3: need factor > 0, 0 < low_freq_factor < high_freq_factor, original_max_position_embeddings > 0; got %g, %g, %g, %d",
				rs.Factor, rs.LowFreqFactor, rs.HighFreqFactor, rs.OriginalMaxPositions)
		}
	default:
		if r.Factor != nil {
			rs.Factor = *r.Factor
		}
	}
	return rs, nil
}

// validate checks sizes and their consistency.
func (c *Config) validate() error {
	for _, f := range []struct {
		key string
		v   int
	}{
		{"hidden_size", c.Hidden}, {"num_hidden_layers", c.Layers},
		{"num_attention_heads", c.Heads}, {"num_key_value_heads", c.KVHeads},
		{"head_dim", c.HeadDim}, {"intermediate_size", c.Intermediate}, {"vocab_size", c.Vocab},
	} {
		if f.v <= 0 {
			return invalid("%s must be positive, got %d", f.key, f.v)
		}
	}
	if c.Heads%c.KVHeads != 0 {
		return invalid("num_attention_heads %d is not a multiple of num_key_value_heads %d", c.Heads, c.KVHeads)
	}
	if !(c.RMSNormEps > 0) || math.IsInf(c.RMSNormEps, 0) {
		return invalid("rms_norm_eps must be positive, got %g", c.RMSNormEps)
	}
	if !(c.RopeTheta > 0) || math.IsInf(c.RopeTheta, 0) {
		return invalid("rope_theta must be positive, got %g", c.RopeTheta)
	}
	if c.MaxPositions < 0 || c.SlidingWindow < 0 {
		return invalid("max_position_embeddings %d and sliding_window %d must not be negative", c.MaxPositions, c.SlidingWindow)
	}
	if c.Desc.MuP {
		if !(c.ScaleEmb > 0) || c.DimModelBase < 0 || c.ScaleDepth < 0 {
			return invalid("scale_emb %g must be positive, dim_model_base %d and scale_depth %g not negative", c.ScaleEmb, c.DimModelBase, c.ScaleDepth)
		}
	}
	return nil
}
