package safetensors

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// rssFile reads RssFile (file-backed resident pages) of this process, bytes.
func rssFile(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RssFile:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("RssFile line %q: %v", sc.Text(), err)
			}
			return kb << 10
		}
	}
	t.Skip("no RssFile in /proc/self/status")
	return 0
}

// Reading a 32 MB tensor makes its pages resident; Release takes them out of
// the process again, ReleaseRows a part of them, and reading re-faults them.
func TestReleaseDropsResidentPages(t *testing.T) {
	const rows, cols = 2048, 4096 // 32 MiB of F32
	const size = rows * cols * 4
	// Slack for other file pages (the test binary's text) faulted or dropped
	// meanwhile: a quarter of the tensor.
	const slack = size / 4
	f, want := releaseFixture(t, rows, cols)
	touch := func() {
		got, err := f.Float32("big")
		if err != nil {
			t.Fatal(err)
		}
		if got[len(got)-1] != want[len(want)-1] || got[0] != want[0] {
			t.Fatal("data changed")
		}
	}
	touch()
	resident := rssFile(t)
	if err := f.Release("big"); err != nil {
		t.Fatal(err)
	}
	released := rssFile(t)
	if drop := resident - released; drop < size-slack {
		t.Fatalf("Release dropped %d bytes of RssFile (%d -> %d), want about %d", drop, resident, released, size)
	}
	touch()
	if back := rssFile(t) - released; back < size-slack {
		t.Fatalf("re-reading faulted %d bytes back in, want about %d", back, size)
	}
	// Half the rows.
	before := rssFile(t)
	if err := f.ReleaseRows("big", 0, rows/2); err != nil {
		t.Fatal(err)
	}
	if drop := before - rssFile(t); drop < size/2-slack || drop > size/2+slack {
		t.Fatalf("ReleaseRows of half the rows dropped %d bytes, want about %d", drop, size/2)
	}
}
