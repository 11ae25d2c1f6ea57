package convert

import (
	"math"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/lorasuite"
)

// roleBlocks is a one-layer record with the given per-head residuals and
// gains, every head matched to old head b.
func roleBlocks(res, gain []float64) lorasuite.RoleBlocks {
	src := make([]int, len(res))
	for b := range src {
		src[b] = b
	}
	return lorasuite.RoleBlocks{Src: src, T: make([]lorasuite.Block, len(res)), Residual: res, Gain: gain}
}

// A matched head whose new block is zero has no measurable residual
// (lorasuite reports -1): it must be null in lorasync.json and left out of
// the means, not averaged in as -1 (which would pull an unrelated pair
// under the lineage threshold).
func TestHeadReportsSkipUnmeasuredResiduals(t *testing.T) {
	rb := roleBlocks([]float64{0.8, -1}, []float64{1, 1})
	pa := &lorasuite.PairAnalysis{Layers: []lorasuite.LayerAnalysis{{
		Old: 0, New: 0, Similarity: mat.NewDense(2, 2, []float64{1, 0, 0, 1}), HeadMap: []int{0, 1},
		Q: rb, K: rb, V: rb, O: rb,
	}}}
	reports, lin := headReports(pa)
	fit := reports[0].Fit["q_proj"]
	if fit.MeanResidual != 0.8 {
		t.Errorf("q_proj mean residual %v, want 0.8 (the one measured head)", fit.MeanResidual)
	}
	if r := float64(fit.Residual[1]); !math.IsNaN(r) {
		t.Errorf("unmeasured residual reported as %v, want null", r)
	}
	if lin.MeanResidual != 0.8 || lin.Related {
		t.Errorf("lineage %+v: want mean residual 0.8 and not related", lin)
	}
}
