package cka

import (
	_ "embed"
	"fmt"
	"os"
	"strings"
)

// builtinText is the built-in calibration set: one sample per line, written
// for this project (prose on many topics, dialogue, numbers and units, code
// in several languages, logs, and short passages in a dozen languages).
//
//go:embed calibration.txt
var builtinText string

// Builtin returns the built-in calibration lines (a fresh slice each call).
func Builtin() []string { return splitLines(builtinText) }

// ReadLines reads a user calibration file: one sample per line, blank lines
// skipped, a trailing "\r" removed. It errors when the file has no samples.
func ReadLines(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cka: calibration file: %w", err)
	}
	lines := splitLines(string(data))
	if len(lines) < 2 {
		return nil, fmt.Errorf("cka: calibration file %s: %d non-blank lines, need at least 2", path, len(lines))
	}
	return lines, nil
}

func splitLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSuffix(l, "\r")
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}
