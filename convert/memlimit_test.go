package convert

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestParseMemoryLimit(t *testing.T) {
	for in, want := range map[string]int64{
		"2GiB": 2 << 30, "1400MiB": 1400 << 20, "512KiB": 512 << 10, "1TiB": 1 << 40,
		"123": 123, "77B": 77, " 3GiB ": 3 << 30, "off": math.MaxInt64,
	} {
		got, err := ParseMemoryLimit(in)
		if err != nil || got != want {
			t.Errorf("ParseMemoryLimit(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1GiB", "2GB", "2 GiB", "GiB", "1.5GiB", "99999999999TiB"} {
		if got, err := ParseMemoryLimit(in); err == nil {
			t.Errorf("ParseMemoryLimit(%q) = %d, want an error", in, got)
		}
	}
}

func TestSetMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })

	t.Setenv("GOMEMLIMIT", "")
	t.Setenv(MemoryLimitEnv, "")
	if got, err := SetMemoryLimit(); err != nil || got != DefaultMemoryLimit || debug.SetMemoryLimit(-1) != DefaultMemoryLimit {
		t.Errorf("default: SetMemoryLimit() = %d, %v; runtime limit %d; want %d", got, err, debug.SetMemoryLimit(-1), DefaultMemoryLimit)
	}
	t.Setenv(MemoryLimitEnv, "3GiB")
	if got, err := SetMemoryLimit(); err != nil || got != 3<<30 || debug.SetMemoryLimit(-1) != 3<<30 {
		t.Errorf("%s=3GiB: SetMemoryLimit() = %d, %v", MemoryLimitEnv, got, err)
	}
	t.Setenv(MemoryLimitEnv, "lots")
	if _, err := SetMemoryLimit(); err == nil {
		t.Errorf("%s=lots: no error", MemoryLimitEnv)
	}
	// GOMEMLIMIT is the runtime's own; SetMemoryLimit leaves whatever it set.
	debug.SetMemoryLimit(5 << 30)
	t.Setenv("GOMEMLIMIT", "5GiB")
	t.Setenv(MemoryLimitEnv, "1GiB")
	if got, err := SetMemoryLimit(); err != nil || got != 5<<30 {
		t.Errorf("with GOMEMLIMIT: SetMemoryLimit() = %d, %v; want the runtime's 5 GiB", got, err)
	}
}
