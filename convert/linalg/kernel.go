package linalg

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/cpu"
)

// Kernel names the BLAS kernels in use: OpenBLAS's core type in the openblas
// build ("Haswell", "SkylakeX", "Cooperlake", ...), "go" in the pure-Go
// build. Logs and benchmark reports carry it because it sets the speed: on
// an AVX-512 CPU, OpenBLAS's AVX-512 kernels run single-precision GEMM about
// twice as fast as its AVX2 (Haswell) ones.
func Kernel() string { return kernelName() }

// avx512Kernels are OpenBLAS core types whose GEMM kernels use AVX-512.
var avx512Kernels = []string{"skylakex", "cooperlake", "sapphirerapids"}

// KernelAdvice returns a warning for the operator when the environment
// variable OPENBLAS_CORETYPE forces OpenBLAS onto kernels without AVX-512 on
// a CPU that has it (OpenBLAS would otherwise pick AVX-512 kernels itself),
// and "" otherwise. lorasync honours the setting, which an operator may have
// chosen for reproducibility across hosts; the advice only makes its cost
// visible.
func KernelAdvice() string {
	return kernelAdvice(Backend(), Kernel(), os.Getenv("OPENBLAS_CORETYPE"), cpu.X86.HasAVX512F)
}

func kernelAdvice(backend, kernel, forced string, avx512 bool) string {
	if backend != "openblas" || forced == "" || !avx512 {
		return ""
	}
	for _, k := range avx512Kernels {
		if strings.EqualFold(kernel, k) {
			return ""
		}
	}
	return fmt.Sprintf("OPENBLAS_CORETYPE=%s makes OpenBLAS use its %s kernels, which lack AVX-512, on a CPU that has it: "+
		"unset it (or set SkylakeX) for about twice the matrix-multiply speed", forced, kernel)
}
