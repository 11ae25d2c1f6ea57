package safetensors

import (
	"errors"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
)

// releaseFixture writes three tensors, the middle one large ("big", rows x
// cols F32, seeded values), and opens the file.
func releaseFixture(t *testing.T, rows, cols int) (*File, []float32) {
	t.Helper()
	rng := rand.New(rand.NewPCG(11, 12))
	big := make([]float32, rows*cols)
	for i := range big {
		big[i] = float32(rng.NormFloat64())
	}
	small := []float32{1, 2, 3} // 12 bytes: big starts off a page boundary
	path := filepath.Join(t.TempDir(), "release.safetensors")
	err := WriteFile(path, []Tensor{
		FromFloat32("a", F32, []int{3}, small),
		FromFloat32("big", F32, []int{rows, cols}, big),
		FromFloat32("c", BF16, []int{3}, small),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, big
}

// Releasing never changes what is read: whole tensors, row spans, a
// neighbour sharing a page, and a Bytes view taken before the release.
func TestReleaseKeepsData(t *testing.T) {
	const rows, cols = 300, 257 // rows of 1028 bytes: spans never page aligned
	f, want := releaseFixture(t, rows, cols)
	view, err := f.Bytes("big")
	if err != nil {
		t.Fatal(err)
	}
	before := slices.Clone(view)
	for _, rel := range []func() error{
		func() error { return f.Release("big") },
		func() error { return f.ReleaseRows("big", 7, 123) },
		func() error { return f.ReleaseRows("big", 0, rows) },
		func() error { return f.ReleaseRows("big", 5, 5) }, // empty span
		func() error { return f.Release("a") },             // shares a page with big
	} {
		if err := rel(); err != nil {
			t.Fatal(err)
		}
		got, err := f.Float32("big")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatal("big changed after a release")
		}
		if !slices.Equal(view, before) {
			t.Fatal("Bytes view taken before the release changed")
		}
		if a, _ := f.Float32("a"); !slices.Equal(a, []float32{1, 2, 3}) {
			t.Fatalf("neighbour a = %v after a release", a)
		}
		if c, _ := f.Float32("c"); !slices.Equal(c, []float32{1, 2, 3}) {
			t.Fatalf("neighbour c = %v after a release", c)
		}
	}
}

func TestReleaseErrors(t *testing.T) {
	f, _ := releaseFixture(t, 4, 4)
	if err := f.Release("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Release of a missing tensor: %v, want ErrNotFound", err)
	}
	for _, r := range [][2]int{{-1, 2}, {3, 2}, {0, 5}} {
		if err := f.ReleaseRows("big", r[0], r[1]); err == nil {
			t.Errorf("ReleaseRows(%d, %d) of 4 rows: no error", r[0], r[1])
		}
	}
	// The package-level helpers ignore readers that are not Releasers.
	if err := Release(struct{ Reader }{f}, "nope"); err != nil {
		t.Errorf("Release through a non-Releaser: %v", err)
	}
	if err := ReleaseRows(struct{ Reader }{f}, "nope", 0, 1); err != nil {
		t.Errorf("ReleaseRows through a non-Releaser: %v", err)
	}
	// Through a Set, errors name the missing tensor.
	s := newSet(filepath.Dir(f.Path()), []*File{f})
	if err := s.Release("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Set.Release of a missing tensor: %v, want ErrNotFound", err)
	}
	if err := s.ReleaseRows("big", 0, 4); err != nil {
		t.Errorf("Set.ReleaseRows: %v", err)
	}
	f.Close()
	if err := f.Release("big"); err == nil {
		t.Error("Release after Close: no error")
	}
}
