package safetensors

import (
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// benchFile writes a rows x cols tensor of dtype dt and opens it.
func benchFile(b *testing.B, dt DType, rows, cols int) *File {
	b.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	v := make([]float32, rows*cols)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	path := filepath.Join(b.TempDir(), "bench.safetensors")
	if err := WriteFile(path, []Tensor{FromFloat32("w", dt, []int{rows, cols}, v)}, nil); err != nil {
		b.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// Streaming an embedding-shaped matrix in 1024-row chunks (the access pattern of
// the transfer-matrix solve). Reports decoded bytes per second.
func BenchmarkFloat32Rows(b *testing.B) {
	const rows, cols, chunk = 8192, 1024, 1024
	for _, dt := range []DType{BF16, F16, F32} {
		b.Run(string(dt), func(b *testing.B) {
			f := benchFile(b, dt, rows, cols)
			b.SetBytes(int64(rows * cols * dt.Size()))
			b.ResetTimer()
			for b.Loop() {
				for lo := 0; lo < rows; lo += chunk {
					if _, err := f.Float32Rows("w", lo, lo+chunk); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

func BenchmarkFromFloat32(b *testing.B) {
	v := make([]float32, 1<<20)
	for i := range v {
		v[i] = float32(i) * 1e-3
	}
	for _, dt := range []DType{BF16, F16, F32} {
		b.Run(string(dt), func(b *testing.B) {
			b.SetBytes(int64(len(v) * 4))
			for b.Loop() {
				FromFloat32("w", dt, []int{len(v)}, v)
			}
		})
	}
}
