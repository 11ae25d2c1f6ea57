package safetensors

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/x448/float16"
)

// Hand-worked bfloat16 rounding cases. A float32 keeps its top 16 bits; the
// dropped low half decides the rounding: below 0x8000 truncates, above rounds
// up, exactly 0x8000 rounds to the even kept value.
func TestFloat32ToBF16(t *testing.T) {
	cases := []struct {
		in   uint32 // float32 bits
		want uint16
	}{
		{0x3f800000, 0x3f80}, // 1.0 exact
		{0x3f807fff, 0x3f80}, // just below half: truncate
		{0x3f808000, 0x3f80}, // tie, kept 0x3f80 is even: stays
		{0x3f818000, 0x3f82}, // tie, kept 0x3f81 is odd: rounds up to even
		{0x3f808001, 0x3f81}, // just above half: rounds up
		{0xbf808001, 0xbf81}, // sign is carried through
		{0x7f7fffff, 0x7f80}, // max float32 rounds to +Inf
		{0x7f800000, 0x7f80}, // +Inf
		{0xff800000, 0xff80}, // -Inf
		{0x00000001, 0x0000}, // tiny denormal rounds to +0
		{0x80000000, 0x8000}, // -0
	}
	for _, c := range cases {
		if got := Float32ToBF16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("Float32ToBF16(%#08x) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
}

// A NaN whose payload lives only in the low 16 bits would truncate to Inf; the
// encoder must keep it a NaN.
func TestFloat32ToBF16NaN(t *testing.T) {
	for _, bits := range []uint32{0x7fc00000, 0x7f800001, 0xff800001, 0x7fffffff} {
		got := BF16ToFloat32(Float32ToBF16(math.Float32frombits(bits)))
		if !math.IsNaN(float64(got)) {
			t.Errorf("NaN %#08x encoded to non-NaN %v", bits, got)
		}
	}
}

// Property: every bfloat16 value widens to float32 and narrows back unchanged
// (except NaN payloads, which only need to stay NaN).
func TestBF16RoundTripAll(t *testing.T) {
	for b := 0; b < 1<<16; b++ {
		f := BF16ToFloat32(uint16(b))
		got := Float32ToBF16(f)
		if math.IsNaN(float64(f)) {
			if !math.IsNaN(float64(BF16ToFloat32(got))) {
				t.Fatalf("bf16 NaN %#04x lost", b)
			}
			continue
		}
		if got != uint16(b) {
			t.Fatalf("bf16 %#04x -> %v -> %#04x", b, f, got)
		}
	}
}

// Property: bfloat16 rounding is to the nearest representable value, checked
// against the two bracketing candidates for random float32s.
func TestFloat32ToBF16Nearest(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 100000; i++ {
		f := float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(20)-10)))
		got := float64(BF16ToFloat32(Float32ToBF16(f)))
		lo := float64(math.Float32frombits(math.Float32bits(f) &^ 0xffff))
		hi := float64(math.Float32frombits(math.Float32bits(f)&^0xffff + 0x10000))
		dGot, dBest := math.Abs(got-float64(f)), math.Min(math.Abs(lo-float64(f)), math.Abs(hi-float64(f)))
		if dGot > dBest {
			t.Fatalf("f=%v: bf16 %v is %g away, %g possible", f, got, dGot, dBest)
		}
	}
}

// decodeFloat32 on each convertible dtype, against values encoded by hand.
func TestDecodeFloat32(t *testing.T) {
	want := []float32{1.5, -2, 0, 1024}
	ints := []float32{7, -2, 0, 1024}
	enc := map[DType]func(v float32) []byte{
		F32:  func(v float32) []byte { return binary.LittleEndian.AppendUint32(nil, math.Float32bits(v)) },
		F64:  func(v float32) []byte { return binary.LittleEndian.AppendUint64(nil, math.Float64bits(float64(v))) },
		F16:  func(v float32) []byte { return binary.LittleEndian.AppendUint16(nil, float16.Fromfloat32(v).Bits()) },
		BF16: func(v float32) []byte { return binary.LittleEndian.AppendUint16(nil, uint16(math.Float32bits(v)>>16)) },
		I32:  func(v float32) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(int32(v))) },
		I64:  func(v float32) []byte { return binary.LittleEndian.AppendUint64(nil, uint64(int64(v))) },
	}
	for dt, e := range enc {
		want := want
		if dt == I32 || dt == I64 {
			want = ints
		}
		var src []byte
		for _, v := range want {
			src = append(src, e(v)...)
		}
		got := make([]float32, len(want))
		if err := decodeFloat32(got, src, dt); err != nil {
			t.Fatalf("%s: %v", dt, err)
		}
		for i := range want {
			if got[i] != want[i] { // every value is exact in its dtype
				t.Errorf("%s[%d] = %v, want %v", dt, i, got[i], want[i])
			}
		}
	}
	if err := decodeFloat32(make([]float32, 2), []byte{1, 2}, U8); err == nil {
		t.Error("U8 converted, want ErrDType")
	}
}

func TestDTypeSize(t *testing.T) {
	for dt, want := range map[DType]int{F64: 8, F32: 4, BF16: 2, F16: 2, I64: 8, I32: 4, U8: 1, Bool: 1, F8E4M3: 1, "F4": 0, "": 0, "f32": 0} {
		if got := dt.Size(); got != want {
			t.Errorf("%q.Size() = %d, want %d", dt, got, want)
		}
	}
}
