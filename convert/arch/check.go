package arch

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/lorasync/lorasync/convert/safetensors"
)

// ErrWeights is wrapped by CheckWeights when a checkpoint does not match its
// config.
var ErrWeights = errors.New("checkpoint does not match config")

// maxReported bounds the problems listed in one CheckWeights error.
const maxReported = 8

// CheckWeights verifies that r holds every tensor of Tensors with the right
// shape and a float dtype, and no tensor the config does not explain (a bias
// the config says is absent, an extra layer, an unknown module), except
// tensors matching the descriptor's Ignore suffixes and a redundant lm_head when
// embeddings are tied. The error lists up to 8 problems, each naming the tensor
// and its file, and wraps ErrWeights.
func (c *Config) CheckWeights(r safetensors.Reader) error {
	var problems []string
	expected := map[string]bool{}
	for _, spec := range c.Tensors() {
		expected[spec.Name] = true
		in, ok := r.Info(spec.Name)
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("tensor %q is missing", spec.Name))
		case !slices.Equal(in.Shape, spec.Shape):
			problems = append(problems, fmt.Sprintf("%s: tensor %q has shape %v, config wants %v", in.File, spec.Name, in.Shape, spec.Shape))
		case !isFloat(in.DType):
			problems = append(problems, fmt.Sprintf("%s: tensor %q has dtype %s, want a float type", in.File, spec.Name, in.DType))
		}
	}
	for _, name := range r.Names() {
		if expected[name] || c.ignorable(name) {
			continue
		}
		in, _ := r.Info(name)
		problems = append(problems, fmt.Sprintf("%s: unexpected tensor %q (not described by the %s config)", in.File, name, c.ModelType))
	}
	if len(problems) == 0 {
		return nil
	}
	more := ""
	if len(problems) > maxReported {
		more = fmt.Sprintf("; and %d more", len(problems)-maxReported)
		problems = problems[:maxReported]
	}
	return fmt.Errorf("arch: %s (config %s): %w: %s%s", readerName(r), c.Path, ErrWeights, strings.Join(problems, "; "), more)
}

func isFloat(d safetensors.DType) bool {
	return d == safetensors.F32 || d == safetensors.F16 || d == safetensors.BF16 || d == safetensors.F64
}

func (c *Config) ignorable(name string) bool {
	if c.TiedEmbeddings && name == c.Desc.LMHead {
		return true
	}
	for _, suf := range c.Desc.Ignore {
		if strings.HasSuffix(name, suf) {
			return true
		}
	}
	return false
}

// readerName names a checkpoint in errors: its directory or file when the
// reader can tell.
func readerName(r safetensors.Reader) string {
	switch v := r.(type) {
	case interface{ Dir() string }:
		return v.Dir()
	case interface{ Path() string }:
		return v.Path()
	}
	return "checkpoint"
}
