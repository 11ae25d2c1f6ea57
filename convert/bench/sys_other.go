//go:build !linux

package bench

// Memory and disk probes are Linux-only; elsewhere they report "unknown" and
// the benchmarks omit the metrics and the free-space check.

func resetPeakRSS() bool          { return false }
func peakRSS() int64              { return -1 }
func anonRSS() int64              { return -1 }
func freeBytes(path string) int64 { return -1 }
func cpuSeconds() float64         { return -1 }
