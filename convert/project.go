package convert

import (
	"context"
	"fmt"
	"sort"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/lorasuite"
	"github.com/lorasync/lorasync/convert/peft"
)

// project maps every adapter module through the pair analysis and builds the
// new adapter (same r, alpha, rsLoRA and dtype per module; config retargeted
// to the new module paths). Attention modules go through lorasuite.Project in
// one batch; MLP modules one at a time through their lorasuite.MLPOperator
// (from the pair's cache, see mlpCache), with the two base weights of the
// module's role read from the mappings (one module's pair of weights in
// float32 at a time, their mapped pages released once converted). Modules whose old layer has no partner in the layer map
// are returned as dropped. The MLP timings are nil without MLP modules.
func project(ctx context.Context, pair *Pair, ad *peft.Adapter, old, nw *model, o Options) (*peft.Adapter, []Unmapped, *MLPTimings, error) {
	pa := pair.Analysis
	var attn []lorasuite.Module
	var attnSrc []*peft.Module // attnSrc[i] is the adapter module of attn[i]
	var mlp []*peft.Module
	for _, m := range ad.Modules {
		if m.Role.Attention() {
			attn = append(attn, toModule(m))
			attnSrc = append(attnSrc, m)
		} else {
			mlp = append(mlp, m)
		}
	}
	out := &peft.Adapter{Config: ad.Config.Clone(), Metadata: ad.Metadata}
	var dropped []Unmapped
	emit := func(src *peft.Module, pm *lorasuite.Module) {
		outDim, inDim := nw.cfg.Shape(src.Role)
		out.Modules = append(out.Modules, &peft.Module{
			Key: nw.cfg.Module(pm.Layer, src.Role), Layer: pm.Layer, Role: src.Role, R: pm.R,
			In: inDim, Out: outDim, Alpha: src.Alpha, RSLoRA: src.RSLoRA, DType: src.DType,
			A: pm.A, B: pm.B,
		})
	}

	// The pinv input map of attention modules solves with W_x's Gram factor:
	// install the cached one before the first solve.
	cache := newMLPCache(o, pair)
	if len(attn) > 0 && o.InputMap == lorasuite.InputPinv {
		if err := cache.transferPinvFactor(ctx, pa.Transfer); err != nil {
			return nil, nil, nil, fmt.Errorf("convert: adapter %s: %w", o.Adapter, err)
		}
	}

	if len(attn) > 0 {
		proj, err := lorasuite.Project(ctx, pa, attn, lorasuite.ProjectOptions{InputMap: o.InputMap})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("convert: adapter %s: %w", o.Adapter, err)
		}
		skipped := map[string]string{}
		for _, s := range proj.Skipped {
			skipped[fmt.Sprintf("%d/%s", s.Layer, s.Role)] = s.Reason
		}
		// Project returns the migrated modules in input order, without the skipped ones.
		k := 0
		for _, src := range attnSrc {
			if reason, ok := skipped[fmt.Sprintf("%d/%s", src.Layer, src.Role)]; ok {
				dropped = append(dropped, Unmapped{Module: src.Key, Reason: reason})
				continue
			}
			emit(src, &proj.Modules[k])
			k++
		}
		if k != len(proj.Modules) {
			panic(fmt.Sprintf("convert: Project returned %d modules for %d inputs with %d skipped", len(proj.Modules), len(attn), len(proj.Skipped)))
		}
	}

	newLayer := map[int]int{}
	for _, lp := range pa.LayerMap {
		newLayer[lp.Old] = lp.New
	}
	for _, src := range mlp {
		if err := ctx.Err(); err != nil {
			return nil, nil, nil, err
		}
		ln, ok := newLayer[src.Layer]
		if !ok {
			dropped = append(dropped, Unmapped{Module: src.Key, Reason: "old layer not in the layer map"})
			continue
		}
		oldW, err := old.float32(old.cfg.Weight(src.Layer, src.Role))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("convert: %w", err)
		}
		op, err := cache.operator(ctx, pa, lorasuite.Role(src.Role), src.Layer, ln, oldW, old.cfg.Intermediate)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("convert: adapter %s: %s: %w", o.Adapter, src.Key, err)
		}
		newW, err := nw.float32(nw.cfg.Weight(ln, src.Role))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("convert: %w", err)
		}
		pm, err := op.Project(ctx, pa, toModule(src), oldW, newW, nw.cfg.Intermediate, lorasuite.ProjectOptions{InputMap: o.InputMap})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("convert: adapter %s: %s: %w", o.Adapter, src.Key, err)
		}
		emit(src, pm)
	}

	if len(out.Modules) == 0 {
		return nil, nil, nil, fmt.Errorf("convert: adapter %s: %w: no module has a counterpart in the new base", o.Adapter, ErrUnmapped)
	}
	sort.SliceStable(out.Modules, func(i, j int) bool {
		a, b := out.Modules[i], out.Modules[j]
		if a.Layer != b.Layer {
			return a.Layer < b.Layer
		}
		return roleIndex(a.Role) < roleIndex(b.Role)
	})
	out.Retarget(nw.cfg)
	var timings *MLPTimings
	if len(mlp) > 0 {
		timings = &cache.stats
	}
	return out, dropped, timings, nil
}

func toModule(m *peft.Module) lorasuite.Module {
	return lorasuite.Module{Layer: m.Layer, Role: lorasuite.Role(m.Role), R: m.R, A: m.A, B: m.B}
}

func roleIndex(r arch.Role) int {
	for i, x := range arch.Roles {
		if x == r {
			return i
		}
	}
	return len(arch.Roles)
}
