package forward

import (
	"fmt"
	"math"

	"github.com/lorasync/lorasync/convert/arch"
)

// invFreq returns the headDim/2 rotary inverse frequencies of cfg, as
// Hugging Face's ROPE_INIT_FUNCTIONS compute them:
// theta^(-2i/headDim), then adjusted by rope_scaling:
//   - "linear": divided by factor (positions / factor);
//   - "llama3": wavelengths longer than original_max/low_freq_factor are
//     divided by factor, shorter than original_max/high_freq_factor kept, and
//     the band between interpolated (_compute_llama3_parameters);
//   - "dynamic" (NTK): unchanged up to max_position_embeddings, which every
//     sequence this package runs stays under (Walk checks).
//
// Other types (yarn, longrope, ...) return an error naming the type.
func invFreq(cfg *arch.Config) ([]float64, error) {
	hd := cfg.HeadDim
	if hd%2 != 0 {
		return nil, fmt.Errorf("head_dim %d is odd: rotary embedding needs pairs", hd)
	}
	f := make([]float64, hd/2)
	for i := range f {
		// HF: 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)) in float32.
		f[i] = float64(float32(1 / math.Pow(cfg.RopeTheta, float64(2*i)/float64(hd))))
	}
	rs := cfg.RopeScaling
	if rs == nil {
		return f, nil
	}
	switch rs.Type {
	case "linear":
		if !(rs.Factor > 0) {
			return nil, fmt.Errorf("rope_scaling linear: factor %g must be positive", rs.Factor)
		}
		for i := range f {
			f[i] /= rs.Factor
		}
	case "dynamic":
		// Only changes frequencies beyond max_position_embeddings.
	case "llama3":
		old := float64(rs.OriginalMaxPositions)
		lowWavelen := old / rs.LowFreqFactor
		highWavelen := old / rs.HighFreqFactor
		for i, v := range f {
			wavelen := 2 * math.Pi / v
			switch {
			case wavelen > lowWavelen:
				f[i] = v / rs.Factor
			case wavelen < highWavelen:
				// kept
			default:
				smooth := (old/wavelen - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
				f[i] = (1-smooth)*v/rs.Factor + smooth*v
			}
		}
	default:
		return nil, fmt.Errorf("rope_scaling type %q is not supported by the forward pass (supported: linear, dynamic, llama3)", rs.Type)
	}
	return f, nil
}
