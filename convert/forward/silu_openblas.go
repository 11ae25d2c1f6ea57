//go:build cgo && openblas

package forward

/*
#cgo CFLAGS: -O3

// lorasync_silu_mul sets gate[i] = silu(gate[i]) * up[i] with the same
// exp as exp32 (Cody-Waite reduction, Cephes' degree-6 polynomial), written
// branch-free so that GCC vectorises it; target_clones builds AVX-512, AVX2
// and baseline versions and picks one for the CPU at load time. The argument
// of the exp is clamped to [-87, 88], where e^x and 2^n stay normal floats:
// beyond it silu(g) is g (to within 1e-38) or 0 (to within 1e-36).
__attribute__((target_clones("avx512f", "avx2", "default")))
static void lorasync_silu_mul(float *gate, const float *up, long n) {
	for (long i = 0; i < n; i++) {
		float x = -gate[i];
		x = x < -87.0f ? -87.0f : x;
		x = x > 88.0f ? 88.0f : x;
		// n = round(x / ln2) by the 1.5 * 2^23 trick, then r = x - n ln2.
		float t = x * 1.44269504088896341f + 12582912.0f;
		float k = t - 12582912.0f;
		float r = x - k * 0.693359375f;
		r = r - k * -2.12194440e-4f;
		float p = 1.9875691500e-4f;
		p = p * r + 1.3981999507e-3f;
		p = p * r + 8.3334519073e-3f;
		p = p * r + 4.1665795894e-2f;
		p = p * r + 1.6666665459e-1f;
		p = p * r + 5.0000001201e-1f;
		float y = p * r * r + r + 1.0f;
		union { float f; int i; } s = { .i = ((int)k + 127) << 23 };
		gate[i] = gate[i] / (1.0f + y * s.f) * up[i];
	}
}
*/
import "C"

import "unsafe"

// siluMulChunk is siluMul on one goroutine's share, in vectorised C: the
// scalar Go loop costs about 5 ns an element, which is 10 % of a CKA
// calibration's time next to OpenBLAS's GEMMs.
func siluMulChunk(gate, up []float32) {
	if len(gate) == 0 {
		return
	}
	C.lorasync_silu_mul((*C.float)(unsafe.Pointer(&gate[0])), (*C.float)(unsafe.Pointer(&up[0])), C.long(len(gate)))
}
