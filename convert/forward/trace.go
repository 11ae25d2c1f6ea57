package forward

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/lorasync/lorasync/convert/safetensors"
)

// Trace runs one sequence and returns every stage as a float32 tensor of shape
// [1, s, dim] (dim = Hidden, or Vocab for logits), plus "input_ids" [1, s] I32:
// the layout of the transformers reference activations
// (tiny-llama/expected_activations.safetensors), ready for
// safetensors.WriteFile.
func (m *Model) Trace(ctx context.Context, ids []int, logits bool) ([]safetensors.Tensor, error) {
	s := len(ids)
	var out []safetensors.Tensor
	err := m.Walk(ctx, [][]int{ids}, Options{Logits: logits}, func(stage string, st [][]float32) error {
		dim := 0
		if s > 0 {
			dim = len(st[0]) / s
		} else if stage == Logits {
			dim = m.cfg.Vocab
		} else {
			dim = m.cfg.Hidden
		}
		out = append(out, safetensors.FromFloat32(stage, safetensors.F32, []int{1, s, dim}, st[0]))
		return nil
	})
	if err != nil {
		return nil, err
	}
	raw := make([]byte, 4*s)
	for i, id := range ids {
		if id > 1<<31-1 {
			return nil, fmt.Errorf("%w: token id %d does not fit in I32", ErrBadInput, id)
		}
		binary.LittleEndian.PutUint32(raw[4*i:], uint32(int32(id)))
	}
	out = append(out, safetensors.Tensor{Name: "input_ids", DType: safetensors.I32, Shape: []int{1, s}, Data: raw})
	return out, nil
}
