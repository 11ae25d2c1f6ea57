// Package demo runs lorasync's whole loop offline, in one process: a fake
// Hugging Face Hub (hub/hubtest) on loopback, a generated base model and a
// LoRA adapter trained on it, the daemon watching the base, a new base
// release (wider, deeper, with grouped-query attention), and the daemon
// noticing it, migrating the adapter with LoRASuite and pushing the result.
//
// It is `lorasync demo`, the README's first command: it needs nothing but
// Go, no network and no model downloads, and it leaves everything it made in
// a work directory to look at.
package demo
