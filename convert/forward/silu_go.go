//go:build !(cgo && openblas)

package forward

// siluMulChunk is siluMul on one goroutine's share.
func siluMulChunk(gate, up []float32) {
	for i, v := range gate {
		gate[i] = silu(v) * up[i]
	}
}
