//go:build !linux

package safetensors

// dropPages does nothing: Release is a Linux-only optimisation.
func dropPages(m []byte, start, end int64) error { return nil }
