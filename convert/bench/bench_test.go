package bench

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lorasync/lorasync/convert"
	"github.com/lorasync/lorasync/convert/linalg"
)

// Run with (see doc.go):
//
//	nice go test -tags openblas -run '^$' -bench 'Convert$/Qwen' -benchtime 1x -timeout 2h -v ./convert/bench
//
// -v logs fixture generation and the per-layer progress of the analysis.

// TestMain bounds the heap as cmd/lorasync does (convert.SetMemoryLimit:
// GOMEMLIMIT, else $LORASYNC_MEMORY_LIMIT, else 2 GiB), so that peak-anon-MB
// measures what the command would use.
func TestMain(m *testing.M) {
	if _, err := convert.SetMemoryLimit(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// rank is the LoRA rank of the benchmark adapters (issue 2: r = 16, q/k/v/o).
const rank = 16

// BenchmarkConvert is (a) and (b): pair analysis plus migration of one
// adapter, the pair cache emptied at the start of every iteration. The last
// iteration's analysis stays in the pair's cache directory, where
// BenchmarkConvertCached finds it.
func BenchmarkConvert(b *testing.B) {
	for _, p := range Pairs() {
		b.Run(p.Name, func(b *testing.B) {
			f := fixture(b, p)
			ad := adapter(b, f, 1)
			m := startMeter()
			var res *convert.Result
			for b.Loop() {
				if err := os.RemoveAll(f.PairCache()); err != nil {
					b.Fatal(err)
				}
				res = run(b, f, ad, f.PairCache())
				if res.Provenance.Timings.PairCached {
					b.Fatal("pair analysis came from the cache")
				}
			}
			m.report(b)
			reportStages(b, res)
		})
	}
}

// BenchmarkConvertCached is (c): one more adapter for a pair whose analysis
// is already cached (left by BenchmarkConvert, or computed before the timer
// starts with another adapter).
func BenchmarkConvertCached(b *testing.B) {
	for _, p := range Pairs() {
		b.Run(p.Name, func(b *testing.B) {
			f := fixture(b, p)
			cache := f.PairCache()
			start := time.Now()
			warm := run(b, f, adapter(b, f, 1), cache)
			b.Logf("warm-up (untimed, pair cached: %v): %.1f s", warm.Provenance.Timings.PairCached, time.Since(start).Seconds())
			ad := adapter(b, f, 2)
			m := startMeter()
			var res *convert.Result
			for b.Loop() {
				res = run(b, f, ad, cache)
				if !res.Provenance.Timings.PairCached {
					b.Fatal("pair analysis was recomputed")
				}
			}
			m.report(b)
			b.ReportMetric(res.Provenance.Timings.ProjectSeconds, "project-s")
		})
	}
}

// fixture generates or reuses the pair's models; the Llama pair is skipped in
// the pure-gonum build unless LORASYNC_BENCH_ALL=1 (its analysis takes an hour).
func fixture(b *testing.B, p Pair) *Fixture {
	b.Helper()
	if linalg.Backend() != "openblas" && p.Old.Hidden >= 4096 && os.Getenv("LORASYNC_BENCH_ALL") == "" {
		b.Skipf("%s: pure-gonum analysis at d = %d takes about an hour; build with -tags openblas or set LORASYNC_BENCH_ALL=1", p.Name, p.Old.Hidden)
	}
	root, err := Root()
	if err != nil {
		b.Fatal(err)
	}
	f, err := Ensure(b.Context(), root, p, func(format string, args ...any) {
		if testing.Verbose() {
			fmt.Fprintf(os.Stderr, format+"\n", args...)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%s, backend %s, kernel %s", p.Describe(), linalg.Backend(), linalg.Kernel())
	return f
}

func adapter(b *testing.B, f *Fixture, seed uint64) string {
	b.Helper()
	dir, err := f.Adapter(rank, seed)
	if err != nil {
		b.Fatal(err)
	}
	return dir
}

// run migrates adapter ad with the default options except the layer map,
// pinned to linear (the issue-2 targets predate CKA, whose forward passes
// the default "auto" runs when the depths differ), pair cache in cacheDir,
// output in a fresh temporary directory.
func run(b *testing.B, f *Fixture, ad, cacheDir string) *convert.Result {
	b.Helper()
	o := convert.Options{
		OldBase: f.Old, NewBase: f.New, Adapter: ad,
		LayerMap: convert.LayerMapLinear,
		Out:      filepath.Join(b.TempDir(), "adapter"),
		CacheDir: cacheDir,
		Inputs:   map[string]string{"old_base": f.Pair.OldName, "new_base": f.Pair.NewName},
	}
	if testing.Verbose() {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
		start := time.Now()
		o.Progress = func(stage string, done, total int) {
			if done%4 == 0 || done == total {
				fmt.Fprintf(os.Stderr, "bench: %s %d/%d at %.1f s\n", stage, done, total, time.Since(start).Seconds())
			}
		}
	}
	res, err := convert.Convert(b.Context(), o)
	if err != nil {
		b.Fatal(err)
	}
	return res
}

// reportStages reports the seconds of each stage of the last iteration.
func reportStages(b *testing.B, res *convert.Result) {
	t := res.Provenance.Timings
	b.ReportMetric(t.TransferSeconds, "transfer-s")
	b.ReportMetric(t.LayersSeconds, "layers-s")
	b.ReportMetric(t.ProjectSeconds, "project-s")
	b.ReportMetric(float64(res.Provenance.Vocabulary.SharedTokens), "shared-tokens")
}

// meter tracks peak memory while the timed loop runs: the kernel's VmHWM
// (reset at the start; includes resident pages of the mmap'ed weights) and
// the largest RssAnon sampled every 20 ms (private memory only). It also
// reports cpu-s, the process's CPU seconds per iteration: on a machine
// shared with other work, cpu-s / GOMAXPROCS estimates the wall time the
// run would take with the cores to itself.
type meter struct {
	reset   bool
	cpu0    float64
	stop    chan struct{}
	wg      sync.WaitGroup
	anonMax int64
}

func startMeter() *meter {
	m := &meter{reset: resetPeakRSS(), stop: make(chan struct{}), cpu0: cpuSeconds()}
	m.anonMax = anonRSS()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-tick.C:
				m.anonMax = max(m.anonMax, anonRSS())
			}
		}
	}()
	return m
}

func (m *meter) report(b *testing.B) {
	close(m.stop)
	m.wg.Wait()
	if c := cpuSeconds(); c >= 0 && m.cpu0 >= 0 {
		b.ReportMetric((c-m.cpu0)/float64(b.N), "cpu-s")
	}
	if p := peakRSS(); p >= 0 {
		if !m.reset {
			b.Log("peak RSS could not be reset: it includes fixture generation")
		}
		b.ReportMetric(float64(p)/(1<<20), "peak-RSS-MiB")
	}
	if m.anonMax >= 0 {
		b.ReportMetric(float64(m.anonMax)/(1<<20), "peak-anon-MiB")
	}
}
