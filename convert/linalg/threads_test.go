package linalg

import (
	"math/rand/v2"
	"sync"
	"testing"
)

// SerialBLAS holders nest and overlap: one thread while any is held, the
// original count once the last releases, and a second release is a no-op.
func TestSerialBLASNesting(t *testing.T) {
	before := Threads()
	t.Logf("backend %s: %d BLAS threads", Backend(), before)
	r1 := SerialBLAS()
	if n := Threads(); n != 1 {
		t.Fatalf("Threads() = %d while serial, want 1", n)
	}
	r2 := SerialBLAS()
	r1()
	r1() // idempotent: must not release r2's hold
	if n := Threads(); n != 1 {
		t.Fatalf("Threads() = %d with one holder left, want 1", n)
	}
	r2()
	if n := Threads(); n != before {
		t.Fatalf("Threads() = %d after the last release, want the original %d", n, before)
	}
}

// Concurrent holders running small solves get the same singular values as a
// plain call (the thread count changes speed, never results), and the count
// is restored once they are all done.
func TestSerialBLASConcurrent(t *testing.T) {
	before := Threads()
	rng := rand.New(rand.NewPCG(21, 22))
	a := randDense(rng, 64, 64)
	want, err := SingularValues(a)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	got := make([][]float64, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			release := SerialBLAS()
			defer release()
			got[i], errs[i] = SingularValues(a)
		}()
	}
	wg.Wait()
	for i := range errs {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		for k := range want {
			// Same algorithm, different blocking: agreement to a few ulps of s[0].
			if d := got[i][k] - want[k]; d > 1e-13*want[0] || d < -1e-13*want[0] {
				t.Fatalf("goroutine %d: s[%d] = %.17g, want %.17g", i, k, got[i][k], want[k])
			}
		}
	}
	if n := Threads(); n != before {
		t.Fatalf("Threads() = %d after all releases, want %d", n, before)
	}
}
