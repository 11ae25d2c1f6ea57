// Package config loads and validates the lorasync daemon configuration.
//
// A configuration file is YAML. Loading happens in three steps, in the spirit
// of Prometheus' config package:
//
//  1. defaults (Default),
//  2. a strict decode: an unknown key anywhere is an error that names it,
//  3. Validate, whose errors name the key path, e.g.
//     "tracks[1].adapters[0].repo: ...".
//
// A *Config returned by Load is read-only: the daemon swaps whole configs on
// reload and never mutates one in place.
//
// Secrets never live in the YAML. The Hub token comes from hub.token_file, the
// systemd credential "hf_token" ($CREDENTIALS_DIRECTORY/hf_token), or the
// HF_TOKEN environment variable, in that order (see ResolveToken). A literal
// hub.token key is rejected.
package config
