package convert

import (
	"encoding/json"
	"math"
	"time"

	"github.com/lorasync/lorasync/convert/lorasuite"
)

// Provenance is what lorasync.json records about a migration: enough to
// reproduce it and to judge it.
type Provenance struct {
	Tool    string    `json:"tool"`
	Created time.Time `json:"created"`
	Backend string    `json:"linalg_backend"`

	Inputs  ProvenanceInputs `json:"inputs"`
	Options ProvenanceOpts   `json:"options"`
	PairKey string           `json:"pair_key"`

	Vocabulary struct {
		Method       string `json:"method"`
		SharedTokens int    `json:"shared_tokens"`
	} `json:"vocabulary"`
	Transfer struct {
		DOld     int       `json:"d_old"`
		DNew     int       `json:"d_new"`
		Identity bool      `json:"identity"`
		Residual jsonFloat `json:"relative_residual"` // null when not measured
		Ridge    float64   `json:"ridge"`
	} `json:"transfer"`
	LayerMap []lorasuite.LayerPair `json:"layer_map"`
	// LayerMapReason says why the auto layer map did not use cka.
	LayerMapReason string `json:"layer_map_reason,omitempty"`
	// LayerSimilarity is the L_old x L_new matrix the order-preserving DP
	// maximised (cka or a user's file), drawn in layer_similarity.png.
	LayerSimilarity [][]float64  `json:"layer_similarity,omitempty"`
	CKA             *CKAInfo     `json:"cka,omitempty"`
	Heads           []HeadReport `json:"heads"`
	Lineage         Lineage      `json:"lineage"`
	Modules         ModuleReport `json:"modules"`
	Timings         Timings      `json:"timings"`
}

// ProvenanceInputs identifies the three inputs.
type ProvenanceInputs struct {
	OldBase Input `json:"old_base"`
	NewBase Input `json:"new_base"`
	Adapter Input `json:"adapter"`
}

// Input is one input directory: its name (a Hub repo@revision when the
// caller knows it) and content identity (commit:... or sha256:...).
type Input struct {
	Name string `json:"name,omitempty"`
	Dir  string `json:"dir"`
	ID   string `json:"id"`
}

// ProvenanceOpts are the method options used.
type ProvenanceOpts struct {
	LayerMap     string `json:"layer_map"` // the map used: linear, explicit, similarity or cka
	LayerMapAsk  string `json:"layer_map_requested"`
	Transfer     string `json:"transfer"`
	HeadTransfer string `json:"head_transfer"`
	InputMap     string `json:"input_map"`
}

// HeadReport is the head mapping of one layer pair and its fit.
type HeadReport struct {
	OldLayer int `json:"old_layer"`
	NewLayer int `json:"new_layer"`
	// HeadMap[b] is the old head assigned to new head b (-1: none);
	// Similarity[b] its cosine similarity (step 3).
	HeadMap        []int       `json:"head_map"`
	Similarity     []jsonFloat `json:"similarity"`
	MeanSimilarity float64     `json:"mean_similarity"`
	DroppedOld     []int       `json:"dropped_old_heads,omitempty"`
	// Fit per role: the fit residual ||T W_o W_x - W_n|| / ||W_n|| of the
	// head transfer used (lstsq or gram; null when unmatched or when the new
	// block is zero) and the gain ||T||_2 of each new head's transfer block.
	Fit map[string]RoleFit `json:"fit"`
}

// RoleFit summarises one role's per-head transfer blocks.
type RoleFit struct {
	Residual     []jsonFloat `json:"residual"`
	Gain         []jsonFloat `json:"gain"`
	MeanResidual float64     `json:"mean_residual"`
	MaxGain      float64     `json:"max_gain"`
}

// Lineage is the verdict on whether the two bases are of one lineage, from
// the head-fit residuals and gains. Upgrades of one lineage measured mean
// residuals 0.17-0.44 and gains <= 1.6; independently trained pairs
// 0.70-0.85 and gains up to 17 (docs/lorasuite-method.md, step 4).
//
// The thresholds were measured on lstsq transfers, whose residual is the
// least-squares fit; a gram transfer's residual is larger for the same pair,
// so with gram there is no verdict (Judged false, Note says why).
type Lineage struct {
	MeanResidual float64 `json:"mean_residual"`
	MaxGain      float64 `json:"max_gain"`
	Judged       bool    `json:"judged"`
	Related      bool    `json:"related"`
	Warning      string  `json:"warning,omitempty"`
	Note         string  `json:"note,omitempty"`
}

// Thresholds of the lineage verdict: between the related (<= 0.44, <= 1.6)
// and unrelated (>= 0.70, up to 17) ranges measured on small trained models.
const (
	lineageResidual = 0.6
	lineageGain     = 4
)

// ModuleReport counts what happened to the adapter's modules.
type ModuleReport struct {
	Migrated int        `json:"migrated"`
	Dropped  []Unmapped `json:"dropped,omitempty"`
}

// Unmapped is an adapter module that has no counterpart in the new adapter.
type Unmapped struct {
	Module string `json:"module"`
	Reason string `json:"reason"`
}

// Timings in seconds.
type Timings struct {
	PairCached      bool    `json:"pair_cached"`
	TransferSeconds float64 `json:"transfer_seconds"`
	LayersSeconds   float64 `json:"layers_seconds"`
	ProjectSeconds  float64 `json:"project_seconds"`
	TotalSeconds    float64 `json:"total_seconds"`
	// MLPOperators says where the pair-only factors of the MLP projection
	// came from (nil when the adapter has no MLP module to migrate).
	MLPOperators *MLPTimings `json:"mlp_operators,omitempty"`
}

// MLPTimings counts the MLP operators (one per layer pair and role: the
// inverse of the old base weight's ridged Gram) a migration used.
type MLPTimings struct {
	Cached   int `json:"cached"`   // read from the pair cache
	Computed int `json:"computed"` // computed now (and stored, with a cache)
	// TransferPinv is "cached" or "computed" for the explicit pinv(W_x) the
	// operators share, "" when W_x is the identity.
	TransferPinv string `json:"transfer_pinv,omitempty"`
	// Seconds spent reading or computing the operators and pinv(W_x) (part
	// of ProjectSeconds).
	Seconds float64 `json:"seconds"`
}

// jsonFloat is a float64 that marshals NaN and infinities as null (JSON has
// no NaN; unmatched heads have NaN residuals).
type jsonFloat float64

func (f jsonFloat) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(f))
}

func (f *jsonFloat) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*f = jsonFloat(math.NaN())
		return nil
	}
	return json.Unmarshal(b, (*float64)(f))
}

// matchedOnly keeps v[b] for matched heads (src[b] >= 0) and null for the others.
func matchedOnly(v []float64, src []int) []jsonFloat {
	out := make([]jsonFloat, len(v))
	for b, x := range v {
		out[b] = jsonFloat(x)
		if src[b] < 0 {
			out[b] = jsonFloat(math.NaN())
		}
	}
	return out
}

func jsonFloats(v []float64) []jsonFloat {
	out := make([]jsonFloat, len(v))
	for i, x := range v {
		out[i] = jsonFloat(x)
	}
	return out
}

// headReports summarises the analysis per layer pair and gives the lineage verdict.
func headReports(pa *lorasuite.PairAnalysis) ([]HeadReport, Lineage) {
	var reports []HeadReport
	var sumRes float64
	var nRes int
	maxGain := 0.0
	for _, la := range pa.Layers {
		r := HeadReport{OldLayer: la.Old, NewLayer: la.New, HeadMap: la.HeadMap, DroppedOld: la.DroppedOld, Fit: map[string]RoleFit{}}
		var sims []float64
		var simSum float64
		for b, a := range la.HeadMap {
			s := math.NaN()
			if a >= 0 {
				s = la.Similarity.At(a, b)
				simSum += s
			}
			sims = append(sims, s)
		}
		r.Similarity = jsonFloats(sims)
		if n := matched(la.HeadMap); n > 0 {
			r.MeanSimilarity = simSum / float64(n)
		}
		for role, rb := range map[string]lorasuite.RoleBlocks{"q_proj": la.Q, "k_proj": la.K, "v_proj": la.V, "o_proj": la.O} {
			f := RoleFit{Residual: matchedOnly(rb.Residual, rb.Src), Gain: matchedOnly(rb.Gain, rb.Src)}
			var s float64
			var n int
			for b := range rb.Residual {
				if rb.Src[b] < 0 {
					continue
				}
				f.MaxGain = math.Max(f.MaxGain, rb.Gain[b])
				if rb.Residual[b] < 0 {
					// A zero new block has no relative residual (lorasuite
					// reports -1): null, and not part of the means.
					f.Residual[b] = jsonFloat(math.NaN())
					continue
				}
				s += rb.Residual[b]
				n++
			}
			if n > 0 {
				f.MeanResidual = s / float64(n)
			}
			sumRes += s
			nRes += n
			maxGain = math.Max(maxGain, f.MaxGain)
			r.Fit[role] = f
		}
		reports = append(reports, r)
	}
	lin := Lineage{MaxGain: maxGain, Judged: true, Related: true}
	if nRes > 0 {
		lin.MeanResidual = sumRes / float64(nRes)
	}
	if pa.HeadTransfer != lorasuite.HeadLstsq {
		lin.Judged, lin.Related = false, false
		lin.Note = "no lineage verdict: its thresholds were measured on lstsq head transfers (run with --head-transfer lstsq to get one)"
		return reports, lin
	}
	if lin.MeanResidual > lineageResidual || lin.MaxGain > lineageGain {
		lin.Related = false
		lin.Warning = "the head-fit residual or gain says these bases are not of one lineage: a migrated adapter may be worse than none until it is fine-tuned (LFT)"
	}
	return reports, lin
}

func matched(hm []int) int {
	n := 0
	for _, a := range hm {
		if a >= 0 {
			n++
		}
	}
	return n
}
