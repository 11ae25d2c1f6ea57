// Package safetensors reads and writes the safetensors tensor format used by
// Hugging Face checkpoints and PEFT adapters.
//
// # Format
//
// A safetensors file is an 8-byte little-endian unsigned header length N, then N
// bytes of JSON, then the data buffer. The JSON maps each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the start
// of the data buffer) and may hold a "__metadata__" object of string values.
// Tensors are stored row-major (C order), little-endian; a weight matrix of a
// linear layer is out x in.
//
// # Reading
//
// [Open] maps one file read-only with mmap and validates the whole header before
// returning: known dtypes, non-negative dimensions without overflow, a byte span
// equal to shape x dtype width, and offsets that tile the data buffer exactly
// (no gaps, no overlaps, nothing past the end). [OpenDir] opens a checkpoint
// directory: a single model.safetensors or the shards listed by
// model.safetensors.index.json. Both return a [Reader]. [Reader.Bytes] is a
// zero-copy view into the mapping; [Reader.Float32] and [Reader.Float32Rows]
// convert on demand (F32, F16, BF16, F64, I32, I64), so a 150k-row embedding can
// be streamed in row chunks without ever holding the whole matrix as float32.
// Pages a read faulted in stay in the process's resident set until the file is
// closed; [Release] and [ReleaseRows] ([Releaser]) drop them again once a tensor
// has been converted (madvise(MADV_DONTNEED) on Linux, a no-op elsewhere). Data
// and Bytes views stay valid: later reads re-fault the pages from the page cache.
//
// Every error about a file names the file, and the tensor when there is one, and
// wraps [ErrFormat] (malformed file) or [ErrDType] (a dtype this package cannot
// convert). Malformed input never panics.
//
// # Writing
//
// [WriteFile] writes tensors in sorted name order with the header padded by spaces
// to a multiple of 8 bytes, as the reference Python/Rust library does, and keeps
// the "__metadata__" map. It is atomic: a temp file in the target directory is
// written, its size checked, fsynced and renamed over the target, then the
// directory is fsynced. [FromFloat32] encodes float32 values as F32, F16 or BF16
// (round to nearest even, NaN preserved).
package safetensors
