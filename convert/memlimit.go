package convert

import (
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// DefaultMemoryLimit is the soft limit on the Go heap that SetMemoryLimit
// installs: 2 GiB.
//
// Go's collector otherwise lets the heap grow to twice the live set before
// it runs (GOGC=100). A migration's live set peaks while the pair is
// analysed (one old and one new layer in float32, their float64 products and
// the growing analysis: ~1.5-2 GB at Llama-2-7B -> Llama-3-8B shapes), so
// without a limit the heap reached 4.8 GB there; with this one it stays at
// ~2.3 GB at the same speed (measured, issue 2 (b)). The limit is soft: a
// live set above it makes the collector run more often (the runtime caps its
// CPU share at 50%), never fails an allocation.
const DefaultMemoryLimit int64 = 2 << 30

// MemoryLimitEnv names the variable that overrides DefaultMemoryLimit for
// SetMemoryLimit, in GOMEMLIMIT's syntax ("3GiB", "1500MiB", bytes) or "off".
const MemoryLimitEnv = "LORASYNC_MEMORY_LIMIT"

// SetMemoryLimit bounds the Go heap of this process for conversions and
// returns the limit in effect (math.MaxInt64 for none). A GOMEMLIMIT in the
// environment wins (the runtime has applied it already); else
// $LORASYNC_MEMORY_LIMIT, else DefaultMemoryLimit. The limit is process-wide
// (runtime/debug.SetMemoryLimit), which is why Convert does not set it itself:
// main calls this once, for one-shot conversions and the daemon alike.
func SetMemoryLimit() (int64, error) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1), nil
	}
	limit := DefaultMemoryLimit
	if v := os.Getenv(MemoryLimitEnv); v != "" {
		var err error
		if limit, err = ParseMemoryLimit(v); err != nil {
			return 0, fmt.Errorf("convert: $%s: %w", MemoryLimitEnv, err)
		}
	}
	debug.SetMemoryLimit(limit)
	return limit, nil
}

// ParseMemoryLimit reads a limit in GOMEMLIMIT's syntax: a byte count with an
// optional B, KiB, MiB, GiB or TiB suffix, or "off" (math.MaxInt64).
func ParseMemoryLimit(v string) (int64, error) {
	s := strings.TrimSpace(v)
	if s == "off" {
		return math.MaxInt64, nil
	}
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("memory limit %q: want a positive byte count with an optional B, KiB, MiB, GiB or TiB suffix, or off", v)
	}
	return n * mult, nil
}
