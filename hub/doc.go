// Package hub is a Hugging Face Hub client: repository metadata, snapshot
// downloads into the cache that huggingface_hub uses (byte-compatible, so
// Python tools and lorasync share it), and race-safe uploads.
//
// # Protocol
//
// The client follows the official Python client (huggingface_hub:
// file_download.py, _snapshot_download.py, hf_api.py, _commit_api.py,
// lfs.py, utils/_http.py) and is summarised in docs/hub-protocol.md.
//
// # Cache layout
//
//	$HF_HUB_CACHE/
//	  CACHEDIR.TAG
//	  .locks/models--org--name/{etag}.lock        flock(2), shared with Python's filelock
//	  models--org--name/
//	    blobs/{etag}                               content; etag = sha256 (LFS) or git blob sha1
//	    blobs/{etag}.{8 hex}.incomplete            download in flight (resumed by Range)
//	    refs/{revision}                            40-hex commit, written temp + rename
//	    snapshots/{commit}/{path}                  relative symlink to ../../blobs/{etag}
//	    trees/{commit}.json                        tree listing (huggingface_hub format 1)
//	    .no_exist/{commit}/{path}                  empty marker: the file is known absent
//
// Every path that comes from the network is validated (no "..", no absolute
// path, no backslash, no empty segment) before anything is written, and every
// write is checked to land inside the cache directory.
//
// # Errors and retries
//
// Failures are *Error values wrapping a sentinel (ErrRepoNotFound,
// ErrRevisionNotFound, ErrEntryNotFound, ErrGatedRepo, ErrUnauthorized,
// ErrRateLimited, ErrConflict, ...) so errors.Is works; IsRetryable and
// IsPermanent sort them. Requests are retried like Python's http_backoff:
// 408, 429, 500, 502, 503, 504 and network errors, up to 5 retries, waiting
// 1 s doubling to 8 s, or the server's RateLimit/Retry-After plus one second.
// Commit POSTs are never retried blindly: after a lost response the branch
// head is re-read to learn whether the commit landed.
//
// The token is sent only to the endpoint host, never to CDN or presigned
// storage hosts, and never appears in logs or error strings.
package hub
