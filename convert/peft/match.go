package peft

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dlclark/regexp2"
)

// PEFT matches module names with Python's re module. regexp2 follows the
// backtracking .NET/Python dialect (lookarounds, backreferences), which Go's
// regexp does not; a match that exceeds matchTimeout counts as no match.
const matchTimeout = 100 * time.Millisecond

// allLinear is PEFT's shorthand target_modules value for every linear layer
// except the output head.
const allLinear = "all-linear"

// pyRegexp compiles expr anchored as the caller's \A...\z wrapper requires.
func pyRegexp(expr string) (*regexp2.Regexp, error) {
	re, err := regexp2.Compile(expr, regexp2.None)
	if err != nil {
		return nil, err
	}
	re.MatchTimeout = matchTimeout
	return re, nil
}

// fullMatch is Python re.fullmatch(pattern, s).
func fullMatch(pattern, s string) bool {
	re, err := pyRegexp(`\A(?:` + pattern + `)\z`)
	if err != nil {
		return false
	}
	ok, err := re.MatchString(s)
	return err == nil && ok
}

// patternKeyMatches is PEFT's get_pattern_key test (peft/utils/other.py):
// re.match(rf"(.*\.)?({key})$", module). The key is a regex fragment that must
// match a whole dot-separated suffix of the module name, or the whole name.
func patternKeyMatches(key, module string) bool {
	return fullMatch(`(?:.*\.)?(?:`+key+`)`, module)
}

// compileAll checks that every regular expression in the config compiles, so
// that later matching cannot fail for syntax reasons.
func (c *Config) compileAll() error {
	check := func(field, expr string) error {
		if _, err := pyRegexp(expr); err != nil {
			return fmt.Errorf("%s %q: not a valid regular expression: %v: %w", field, expr, err, ErrInvalid)
		}
		return nil
	}
	if c.TargetRegex != "" && !strings.EqualFold(c.TargetRegex, allLinear) {
		if err := check("target_modules", c.TargetRegex); err != nil {
			return err
		}
	}
	if c.ExcludeRegex != "" {
		if err := check("exclude_modules", c.ExcludeRegex); err != nil {
			return err
		}
	}
	for _, p := range c.RankPattern {
		if err := check("rank_pattern key", p.Key); err != nil {
			return err
		}
	}
	for _, p := range c.AlphaPattern {
		if err := check("alpha_pattern key", p.Key); err != nil {
			return err
		}
	}
	for _, p := range c.LayersPattern {
		if err := check("layers_pattern", p); err != nil {
			return err
		}
	}
	for _, m := range c.ModulesToSave {
		if err := check("modules_to_save", m); err != nil {
			return err
		}
	}
	return nil
}

// Targets reports whether PEFT would put a LoRA layer on the module at path
// (e.g. "model.layers.3.self_attn.q_proj"), following check_target_module_exists
// in peft/tuners/tuners_utils.py:
//   - exclude_modules (regex: full match; list: equal or a ".name" suffix) wins;
//   - modules_to_save entries exclude their modules;
//   - a target_modules string is a regex that must match the whole path
//     ("all-linear" matches every linear layer but the output head);
//   - a list entry matches when equal to the path; else when the path ends in
//     "."+entry, in which case layers_to_transform (if set) must contain the
//     layer index found after layers_pattern (or after any segment).
func (c *Config) Targets(path string) bool {
	if c.ExcludeRegex != "" && fullMatch(c.ExcludeRegex, path) {
		return false
	}
	if slices.Contains(c.ExcludeModules, path) || slices.ContainsFunc(c.ExcludeModules, suffixOf(path)) {
		return false
	}
	for _, m := range c.ModulesToSave {
		if fullMatch(`(?:^|.*\.)(?:`+m+`)(?:$|\..*)`, path) {
			return false
		}
	}
	if c.TargetRegex != "" {
		if strings.EqualFold(c.TargetRegex, allLinear) {
			return !strings.HasSuffix(path, "lm_head") && !strings.HasSuffix(path, "embed_tokens")
		}
		return fullMatch(c.TargetRegex, path)
	}
	if slices.Contains(c.TargetModules, path) {
		return true
	}
	if !slices.ContainsFunc(c.TargetModules, suffixOf(path)) {
		return false
	}
	if len(c.LayersToTransform) == 0 {
		return true
	}
	layer, ok := c.layerIndex(path)
	return ok && slices.Contains(c.LayersToTransform, layer)
}

// suffixOf returns a predicate: does path end with "."+name?
func suffixOf(path string) func(string) bool {
	return func(name string) bool { return strings.HasSuffix(path, "."+name) }
}

// layerIndexAny is PEFT's default layer finder: r".*\.[^.]*\.(\d+)\.".
var layerIndexAny = regexp.MustCompile(`^.*\.[^.]*\.(\d+)\.`)

// layerIndex finds the layer number in path as PEFT does for layers_to_transform.
func (c *Config) layerIndex(path string) (int, bool) {
	var digits string
	if len(c.LayersPattern) == 0 {
		if m := layerIndexAny.FindStringSubmatch(path); m != nil {
			digits = m[1]
		}
	} else {
		for _, p := range c.LayersPattern {
			re, err := pyRegexp(`\A.*\.(?:` + p + `)\.(\d+)\.`)
			if err != nil {
				continue
			}
			if m, err := re.FindStringMatch(path); err == nil && m != nil {
				digits = m.GroupByNumber(1).String()
				break
			}
		}
	}
	if digits == "" {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	return n, err == nil
}

// RankFor is the rank PEFT gives the module at path: the value of the first
// rank_pattern key that matches (see patternKeyMatches), else r.
func (c *Config) RankFor(path string) int {
	for _, p := range c.RankPattern {
		if patternKeyMatches(p.Key, path) {
			return int(p.Value)
		}
	}
	return c.R
}

// AlphaFor is lora_alpha for the module at path: the first matching
// alpha_pattern key, else lora_alpha.
func (c *Config) AlphaFor(path string) float64 {
	for _, p := range c.AlphaPattern {
		if patternKeyMatches(p.Key, path) {
			return p.Value
		}
	}
	return c.LoraAlpha
}

// Scale is the LoRA scaling s of a module with rank r and alpha:
// alpha/sqrt(r) with rsLoRA (Kalajdzievski 2023), else alpha/r.
func Scale(alpha float64, r int, rslora bool) float64 {
	if rslora {
		return alpha / math.Sqrt(float64(r))
	}
	return alpha / float64(r)
}
