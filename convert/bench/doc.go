// Package bench holds lorasync's end-to-end conversion benchmarks (issue 2)
// and the fixtures they run on: base models of real published shapes, with
// random bf16 weights, generated once into a cache directory and reused.
//
// The benchmarks time convert.Convert exactly as `lorasync convert` runs it
// (models opened from mmap, shared vocabulary from tokenizer.json, lstsq
// transfer, lstsq head transfer, wx input map, output written and verified),
// with the layer map pinned to linear (CKA from forward passes is timed
// separately, by convert/cka's benchmarks):
//
//	BenchmarkConvert/<pair>        (a), (b): pair analysis + migration of an
//	                               r=16 q/k/v/o adapter, empty pair cache
//	BenchmarkConvertCached/<pair>  (c): one more adapter once the pair
//	                               analysis is cached
//
// for the pairs of Pairs: Qwen1.5-1.8B -> Qwen2.5-3B shapes and Llama-2-7B ->
// Llama-3-8B shapes. Besides ns/op they report the stages' seconds
// (transfer-s, layers-s, project-s), peak-RSS-MB (the process's VmHWM, reset
// after fixture generation; mmap'ed weight pages count while resident) and
// peak-anon-MB (the largest RssAnon sampled every 20 ms: heap and other
// private memory, without file pages). The heap is bounded as in the
// command (convert.SetMemoryLimit: 2 GiB unless GOMEMLIMIT or
// LORASYNC_MEMORY_LIMIT is set). A pair cache written by an older pairFormat
// is not found (the format is part of the key): the warm-up of
// BenchmarkConvertCached then recomputes it, untimed.
//
// Run them with OpenBLAS, one iteration each, at low priority:
//
//	nice go test -tags openblas -run '^$' -bench 'Convert$/Qwen' -benchtime 1x -timeout 2h ./convert/bench
//	nice go test -tags openblas -run '^$' -bench 'Convert$/Llama' -benchtime 1x -timeout 2h ./convert/bench
//	nice go test -tags openblas -run '^$' -bench 'ConvertCached' -benchtime 3x -timeout 2h ./convert/bench
//
// Fixtures (and the pair caches, pair-cache/PAIR) live in $LORASYNC_BENCH_DIR (default: the bench-cache directory at
// the repository root, which git ignores), laid out as a Hugging Face hub
// cache (hub/models--lorasync-bench--NAME/snapshots/COMMIT), so that convert
// identifies a model by its commit as it does for downloaded models. The
// first run generates them, streaming one layer shard at a time
// (synth.WriteRandomSharded): ~10 GB for the Qwen pair and ~30 GB for the
// Llama pair; it checks the free space first and removes partial output on
// failure. Delete the directory to reclaim the space.
//
// In the pure-gonum build the Llama pair's analysis takes about an hour, so
// it is skipped unless LORASYNC_BENCH_ALL=1.
package bench
