//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// statusKB returns the given fields of /proc/self/status in kB (-1 when absent).
func statusKB(fields ...string) []int64 {
	out := make([]int64, len(fields))
	for i := range out {
		out[i] = -1
	}
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return out
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, val, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		for i, f := range fields {
			if string(key) == f {
				num, _, _ := bytes.Cut(bytes.TrimSpace(val), []byte(" "))
				if n, err := strconv.ParseInt(string(num), 10, 64); err == nil {
					out[i] = n
				}
			}
		}
	}
	return out
}

// resetPeakRSS resets the kernel's peak-RSS counter (VmHWM) to the current
// RSS (Linux >= 4.0). It reports whether that worked.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// peakRSS returns VmHWM in bytes, -1 when unknown.
func peakRSS() int64 {
	if v := statusKB("VmHWM")[0]; v >= 0 {
		return v << 10
	}
	return -1
}

// anonRSS returns RssAnon in bytes, -1 when unknown.
func anonRSS() int64 {
	if v := statusKB("RssAnon")[0]; v >= 0 {
		return v << 10
	}
	return -1
}

// cpuSeconds returns the user + system CPU time of the process so far (all
// threads, OpenBLAS's included), -1 when unknown.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// freeBytes returns the space available to an unprivileged user on the
// filesystem holding path, -1 when unknown.
func freeBytes(path string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * st.Bsize
}
