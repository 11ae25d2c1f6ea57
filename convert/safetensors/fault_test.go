package safetensors

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTruncatedWhileMapped truncates a file after Open: converting a tensor
// whose pages now lie past the end of the file must return ErrChanged naming
// the file and tensor (the fault would otherwise kill the process), and a
// tensor still inside the file must read as before.
func TestTruncatedWhileMapped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.safetensors")
	head := make([]float32, 16)
	tail := make([]float32, 64<<10) // 256 KiB: its pages start well past the first
	for i := range head {
		head[i] = float32(i)
	}
	if err := WriteFile(path, []Tensor{
		FromFloat32("a.head", F32, []int{16}, head),
		FromFloat32("b.tail", F32, []int{len(tail)}, tail),
	}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in, _ := f.Info("b.tail")
	// Keep the header, a.head and the page b.tail starts on; cut the rest.
	const page = 4096
	if err := os.Truncate(path, (f.h.data+in.Begin+page)/page*page); err != nil {
		t.Fatal(err)
	}
	_, err = f.Float32("b.tail")
	if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "b.tail") {
		t.Fatalf("reading a truncated tensor: err = %v, want ErrChanged naming %s and b.tail", err, path)
	}
	got, err := f.Float32("a.head")
	if err != nil || got[15] != 15 {
		t.Errorf("a.head after the truncation: %v, %v", got, err)
	}
}
