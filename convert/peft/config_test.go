package peft

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

// MarshalJSON is a fixed point after one rewrite, keeps keys it does not know,
// and writes null for a cleared revision.
func TestConfigMarshal(t *testing.T) {
	in := with(baseConfig(), "revision", "abc", "layers_to_transform", 3, "layers_pattern", "layers")
	b, _ := json.Marshal(in)
	c, err := ParseConfig("adapter_config.json", b)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.LayersToTransform, []int{3}) || !slices.Equal(c.LayersPattern, []string{"layers"}) || c.Revision != "abc" {
		t.Errorf("decoded %+v", c)
	}
	c.Revision = ""
	once, err := c.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ParseConfig("rewritten", once)
	if err != nil {
		t.Fatal(err)
	}
	twice, _ := c2.MarshalJSON()
	if !bytes.Equal(once, twice) {
		t.Errorf("not a fixed point:\n%s\n%s", once, twice)
	}
	var m map[string]any
	json.Unmarshal(once, &m)
	if v, ok := m["revision"]; !ok || v != nil {
		t.Errorf("revision = %v, %v; want null", v, ok)
	}
	for _, k := range []string{"x_custom_key", "lora_dropout", "megatron_core", "loftq_config", "auto_mapping"} {
		if _, ok := m[k]; !ok {
			t.Errorf("key %s dropped", k)
		}
	}
	if c2.Clone().RankFor("model.layers.0.self_attn.q_proj") != 4 {
		t.Error("Clone lost r")
	}
}

func TestParseConfigBad(t *testing.T) {
	for name, js := range map[string]string{
		"not json":          `{`,
		"target number":     `{"peft_type":"LORA","r":4,"target_modules":3}`,
		"layers string":     `{"peft_type":"LORA","r":4,"layers_to_transform":"0"}`,
		"pattern non-num":   `{"peft_type":"LORA","r":4,"rank_pattern":{"q":"x"}}`,
		"pattern zero rank": `{"peft_type":"LORA","r":4,"rank_pattern":{"q":0}}`,
		"negative r":        `{"peft_type":"LORA","r":-1}`,
	} {
		if _, err := ParseConfig("adapter_config.json", []byte(js)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

// FuzzParseConfig: arbitrary JSON never panics, and an accepted config
// survives MarshalJSON and a re-parse.
func FuzzParseConfig(f *testing.F) {
	seed, _ := json.Marshal(baseConfig())
	f.Add(seed)
	f.Add([]byte(`{"peft_type":"LORA","r":8,"rank_pattern":{"a":2,"b.c":3},"target_modules":".*"}`))
	f.Add([]byte(`{"r":1,"layers_to_transform":[1,2],"layers_pattern":["h"],"exclude_modules":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("fuzz", data)
		if err != nil {
			return
		}
		out, err := c.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		c2, err := ParseConfig("fuzz rewritten", out)
		if err != nil {
			t.Fatalf("rewritten config rejected: %v\n%s", err, out)
		}
		if c2.R != c.R || len(c2.RankPattern) != len(c.RankPattern) {
			t.Fatalf("rewrite changed r or rank_pattern")
		}
		c.Targets("model.layers.0.self_attn.q_proj")
	})
}
