package linalg

import (
	"os"
	"strings"
	"testing"
)

func TestKernelAdvice(t *testing.T) {
	for _, c := range []struct {
		backend, kernel, forced string
		avx512, advise          bool
	}{
		{"openblas", "Haswell", "Haswell", true, true},    // forced AVX2 on an AVX-512 CPU
		{"openblas", "Zen", "zen", true, true},            // Zen kernels are AVX2 too
		{"openblas", "Cooperlake", "", true, false},       // OpenBLAS chose
		{"openblas", "Haswell", "", true, false},          // OpenBLAS chose AVX2 itself
		{"openblas", "SkylakeX", "SKYLAKEX", true, false}, // forced, but to AVX-512
		{"openblas", "Haswell", "Haswell", false, false},  // no AVX-512 to gain
		{"gonum", "go", "Haswell", true, false},           // the setting does not apply
	} {
		got := kernelAdvice(c.backend, c.kernel, c.forced, c.avx512)
		if (got != "") != c.advise {
			t.Errorf("kernelAdvice(%q, %q, %q, %v) = %q, want advice %v", c.backend, c.kernel, c.forced, c.avx512, got, c.advise)
		}
		if got != "" && !strings.Contains(got, "OPENBLAS_CORETYPE="+c.forced) {
			t.Errorf("advice %q does not name the setting", got)
		}
	}
}

// TestKernelName checks that the kernel reported is the backend's: "go" in
// the pure-Go build; in the openblas build OpenBLAS's core name, which is the
// one OPENBLAS_CORETYPE asks for when it is set.
func TestKernelName(t *testing.T) {
	k := Kernel()
	switch Backend() {
	case "gonum":
		if k != "go" {
			t.Errorf("Kernel() = %q in the pure-Go build, want go", k)
		}
	case "openblas":
		if k == "" || k == "go" {
			t.Errorf("Kernel() = %q in the openblas build", k)
		}
		if forced := os.Getenv("OPENBLAS_CORETYPE"); forced != "" && !strings.EqualFold(k, forced) {
			t.Errorf("Kernel() = %q, but OPENBLAS_CORETYPE=%s", k, forced)
		}
	}
}
