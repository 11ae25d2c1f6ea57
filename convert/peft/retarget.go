package peft

import (
	"fmt"
	"regexp"
	"slices"

	"github.com/lorasync/lorasync/convert/arch"
)

// Retarget rewrites a.Config so that PEFT, loading the adapter onto base, creates
// LoRA layers on exactly a.Modules with each module's rank and alpha. Use it
// after changing Modules (a migration maps layers, so the old target_modules,
// layers_to_transform and patterns may no longer describe them). It reports
// whether the config changed; a config that is already exact is left alone.
//
// The new target_modules is the list of role names, plus layers_to_transform
// when not every layer is adapted, if the modules form a full layers x roles
// grid; otherwise it is the list of exact module paths. rank_pattern and
// alpha_pattern are rebuilt (with escaped exact paths as keys, the most common
// value as r / lora_alpha) only when the current ones resolve a module wrongly.
func (a *Adapter) Retarget(base *arch.Config) bool {
	if len(a.Modules) == 0 {
		panic("peft: Retarget of an adapter without modules")
	}
	changed := false
	cfg := a.Config
	rs := a.Modules[0].RSLoRA
	for _, m := range a.Modules {
		if m.RSLoRA != rs {
			panic("peft: Retarget: modules disagree on RSLoRA, which one config cannot express")
		}
	}
	if cfg.UseRSLoRA != rs {
		cfg.UseRSLoRA, changed = rs, true
	}
	want := map[string]bool{}
	for _, m := range a.Modules {
		want[m.Key] = true
	}
	if !sameTargets(cfg, base, want) {
		retargetModules(cfg, base, a.Modules)
		changed = true
	}
	if !patternsResolve(cfg, a.Modules) {
		cfg.R, cfg.RankPattern = rebuild(a.Modules, func(m *Module) float64 { return float64(m.R) }, func(v float64) int { return int(v) })
		cfg.LoraAlpha, cfg.AlphaPattern = rebuild(a.Modules, func(m *Module) float64 { return m.Alpha }, func(v float64) float64 { return v })
		changed = true
	}
	if err := a.consistent(); err != nil {
		panic(fmt.Sprintf("peft: Retarget left an inconsistent config: %v", err))
	}
	return changed
}

// sameTargets reports whether cfg targets exactly the modules in want among all
// linear layers of base.
func sameTargets(cfg *Config, base *arch.Config, want map[string]bool) bool {
	for l := 0; l < base.Layers; l++ {
		for _, r := range arch.Roles {
			key := base.Module(l, r)
			if cfg.Targets(key) != want[key] {
				return false
			}
		}
	}
	for key := range want { // modules base does not even have
		if _, _, ok := base.ParseModule(key); !ok {
			return false
		}
	}
	return true
}

// retargetModules sets target_modules (and layers_to_transform) for mods.
func retargetModules(cfg *Config, base *arch.Config, mods []*Module) {
	var layers []int
	var roles []arch.Role
	for _, m := range mods {
		if !slices.Contains(layers, m.Layer) {
			layers = append(layers, m.Layer)
		}
		if !slices.Contains(roles, m.Role) {
			roles = append(roles, m.Role)
		}
	}
	slices.Sort(layers)
	slices.SortFunc(roles, func(x, y arch.Role) int { return slices.Index(arch.Roles, x) - slices.Index(arch.Roles, y) })
	cfg.TargetRegex, cfg.ExcludeModules, cfg.ExcludeRegex, cfg.LayersPattern = "", nil, "", nil
	if len(mods) == len(layers)*len(roles) {
		cfg.TargetModules = make([]string, len(roles))
		for i, r := range roles {
			cfg.TargetModules[i] = string(r)
		}
		cfg.LayersToTransform = layers
		if len(layers) == base.Layers {
			cfg.LayersToTransform = nil
		}
		return
	}
	cfg.TargetModules = make([]string, len(mods))
	for i, m := range mods {
		cfg.TargetModules[i] = m.Key
	}
	slices.Sort(cfg.TargetModules)
	cfg.LayersToTransform = nil
}

// patternsResolve reports whether cfg gives every module its rank and alpha.
func patternsResolve(cfg *Config, mods []*Module) bool {
	for _, m := range mods {
		if cfg.RankFor(m.Key) != m.R || cfg.AlphaFor(m.Key) != m.Alpha {
			return false
		}
	}
	return true
}

// rebuild picks the most common value (ties: the smallest) as the default and
// returns exact-path patterns for the modules that differ from it.
func rebuild[T any](mods []*Module, get func(*Module) float64, conv func(float64) T) (T, []Pattern) {
	count := map[float64]int{}
	for _, m := range mods {
		count[get(m)]++
	}
	best, bestN := 0.0, -1
	for v, n := range count {
		if n > bestN || (n == bestN && v < best) {
			best, bestN = v, n
		}
	}
	var ps []Pattern
	for _, m := range mods {
		if v := get(m); v != best {
			ps = append(ps, Pattern{Key: regexp.QuoteMeta(m.Key), Value: v})
		}
	}
	return conv(best), ps
}
