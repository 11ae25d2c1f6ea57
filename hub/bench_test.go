package hub

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/lorasync/lorasync/hub/hubtest"
)

// BenchmarkSnapshot2GB downloads a 2 GiB snapshot (4 LFS files of 512 MiB,
// deterministic content) from hubtest over loopback into a fresh cache and
// reports throughput and the downloader's peak RSS.
//
// The download runs in a child process (this test binary re-executed with
// HUB_BENCH_CHILD=1, see TestHelperSnapshotProcess) so that the peak RSS
// measured is the client's alone: the fake Hub keeps all content in memory
// in the parent. The child reports its own VmHWM from /proc/self/status
// (getrusage's ru_maxrss would not do: Linux carries the parent's high-water
// mark into a vfork+exec'd child). HUB_BENCH_BYTES overrides the
// total size; HUB_BENCH_CPUPROFILE=file profiles the child. Run with:
//
//	go test ./hub -run '^$' -bench Snapshot2GB -benchtime 1x
func BenchmarkSnapshot2GB(b *testing.B) {
	total := int64(2 << 30)
	if v := os.Getenv("HUB_BENCH_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 4 {
			b.Fatalf("HUB_BENCH_BYTES=%q", v)
		}
		total = n
	}
	const files = 4
	srv := hubtest.New()
	defer srv.Close()
	if err := srv.CreateRepo("bench/big", false); err != nil {
		b.Fatal(err)
	}
	for i := range files {
		// One commit per file: the fake copies content, so only one file's
		// buffer is alive here at a time besides the fake's store.
		content := randBytes(uint64(100+i), int(total/files))
		if _, err := srv.Commit("bench/big", "main", map[string][]byte{fmt.Sprintf("model-%05d.safetensors", i): content}, "part"); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()

	b.SetBytes(total)
	b.ResetTimer()
	var rssKB int64
	var elapsed time.Duration
	for range b.N {
		cache := filepath.Join(benchDir(b), "hub")
		args := []string{"-test.run=^TestHelperSnapshotProcess$", "-test.v", "-test.timeout=5m"}
		if prof := os.Getenv("HUB_BENCH_CPUPROFILE"); prof != "" {
			args = append(args, "-test.cpuprofile="+prof) // profile of the downloader alone
		}
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), "HUB_BENCH_CHILD=1", "HUB_BENCH_ENDPOINT="+srv.URL, "HUB_BENCH_CACHE="+cache)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		elapsed += time.Since(start)
		if err != nil {
			b.Fatalf("child: %v\n%s", err, out)
		}
		m := vmHWMRE.FindSubmatch(out)
		if m == nil {
			b.Fatalf("child did not report VmHWM:\n%s", out)
		}
		kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
		rssKB = max(rssKB, kb)
		b.StopTimer()
		_ = os.RemoveAll(cache) // keep the disk usage of -count runs bounded
		b.StartTimer()
	}
	b.ReportMetric(float64(total)*float64(b.N)/elapsed.Seconds()/1e6, "MB/s")
	b.ReportMetric(float64(rssKB)/1024, "peak-RSS-MiB")
}

// TestHelperSnapshotProcess is the child side of BenchmarkSnapshot2GB. It
// does nothing (and reports a skip) unless HUB_BENCH_CHILD is set.
func TestHelperSnapshotProcess(t *testing.T) {
	if os.Getenv("HUB_BENCH_CHILD") != "1" {
		t.Skip("helper process for BenchmarkSnapshot2GB")
	}
	c, err := New(Options{Endpoint: os.Getenv("HUB_BENCH_ENDPOINT"), CacheDir: os.Getenv("HUB_BENCH_CACHE"),
		Progress: ProgressOff, TrustCache: true})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	dir, err := c.Snapshot(context.Background(), "bench/big", "main", SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot %s in %v", dir, time.Since(start))
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	m := vmHWMRE.FindSubmatch(status)
	if m == nil {
		t.Fatalf("no VmHWM in /proc/self/status")
	}
	t.Logf("VmHWM: %s kB", m[1])
}

// vmHWMRE reads the peak resident set size line of /proc/self/status (also
// matched in the child's log output).
var vmHWMRE = regexp.MustCompile(`VmHWM:\s+(\d+) kB`)

// genBlock is the 1 MiB pattern of streamContent; block i is this pattern
// with i stamped into its first 8 bytes, so no two blocks are equal and the
// content never exists whole in memory.
var genBlock = randBytes(4242, 1<<20)

// streamContent writes bytes [start, end) of the generated content to w.
func streamContent(w io.Writer, start, end int64) error {
	buf := make([]byte, len(genBlock))
	for off := start; off < end; {
		i := off / int64(len(genBlock))
		copy(buf, genBlock)
		binary.LittleEndian.PutUint64(buf, uint64(i))
		lo := off - i*int64(len(genBlock))
		hi := min(int64(len(buf)), end-i*int64(len(genBlock)))
		if _, err := w.Write(buf[lo:hi]); err != nil {
			return err
		}
		off += hi - lo
	}
	return nil
}

// BenchmarkDownloadStream2GB measures the downloader against a minimal
// in-process server that generates its content on the fly (no store, no
// per-request hashing), i.e. the client's own cost: HEAD, GET, write, sha256,
// fsync, rename. It runs in-process; peak-RSS-MB is the whole process's
// VmHWM, which holds no content beyond a few 1 MiB buffers.
//
//	go test ./hub -run '^$' -bench DownloadStream2GB -benchtime 1x
func BenchmarkDownloadStream2GB(b *testing.B) {
	size := int64(2 << 30)
	if v := os.Getenv("HUB_BENCH_BYTES"); v != "" {
		size, _ = strconv.ParseInt(v, 10, 64)
	}
	h := sha256.New()
	if err := streamContent(h, 0, size); err != nil {
		b.Fatal(err)
	}
	etag := hex.EncodeToString(h.Sum(nil))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Repo-Commit", evilCommit)
		w.Header().Set("X-Linked-Etag", etag)
		w.Header().Set("X-Linked-Size", strconv.FormatInt(size, 10))
		if r.Method == http.MethodHead {
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		_ = streamContent(w, 0, size)
	}))
	defer srv.Close()
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		cache := filepath.Join(b.TempDir(), "hub")
		c, err := New(Options{Endpoint: srv.URL, CacheDir: cache, Progress: ProgressOff})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.DownloadFile(context.Background(), "o/r", "main", "w.bin"); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		_ = os.RemoveAll(cache)
		b.StartTimer()
	}
	b.StopTimer()
	if status, err := os.ReadFile("/proc/self/status"); err == nil {
		if m := vmHWMRE.FindSubmatch(status); m != nil {
			kb, _ := strconv.ParseFloat(string(m[1]), 64)
			b.ReportMetric(kb/1024, "peak-RSS-MiB")
		}
	}
}

// benchDir is where the benchmark's cache goes: $HUB_BENCH_DIR when set (e.g.
// /dev/shm, to measure the client and protocol rather than the disk: every
// blob is fsynced, so on a disk the durable write bandwidth caps the
// throughput), else a temp dir.
func benchDir(b *testing.B) string {
	if d := os.Getenv("HUB_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "hubbench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}
