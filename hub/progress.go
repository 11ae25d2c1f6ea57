package hub

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress aggregates the bytes of one Snapshot, DownloadFile or Upload and
// reports them: a bar on a terminal, periodic structured log records
// otherwise. A nil *progress ignores everything, so callers need no checks.
type progress struct {
	done  atomic.Int64
	total atomic.Int64

	bar  *progressbar.ProgressBar
	barM sync.Mutex

	log      *slog.Logger
	attrs    []any
	start    time.Time
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// isTerminal reports whether w is a terminal (only *os.File can be).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// startProgress begins reporting an operation on total bytes (adjustable
// later with grow). desc names it ("download org/name@main").
func (c *Client) startProgress(ctx context.Context, desc string, total int64, attrs ...any) *progress {
	mode := c.progress
	if mode == ProgressAuto {
		mode = ProgressLog
		if isTerminal(c.progressOut) {
			mode = ProgressBar
		}
	}
	if mode == ProgressOff {
		return nil
	}
	p := &progress{log: c.log, attrs: attrs, start: time.Now(), stop: make(chan struct{})}
	p.total.Store(total)
	switch mode {
	case ProgressBar:
		out := c.progressOut
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetDescription(desc),
			progressbar.OptionSetWriter(out),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowTotalBytes(true),
			progressbar.OptionSetWidth(20),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(out) }),
			progressbar.OptionFullWidth(),
		)
	case ProgressLog:
		p.wg.Add(1)
		go p.logLoop(ctx, desc, c.progressInt)
	}
	return p
}

func (p *progress) logLoop(ctx context.Context, desc string, every time.Duration) {
	defer p.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.stop:
			return
		case <-t.C:
			p.logRecord(ctx, desc+" progress")
		}
	}
}

func (p *progress) logRecord(ctx context.Context, msg string) {
	done, total := p.done.Load(), p.total.Load()
	secs := time.Since(p.start).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(done) / secs / 1e6
	}
	args := append([]any{"bytes", done, "total", total, "mb_per_s", fmt.Sprintf("%.1f", rate)}, p.attrs...)
	p.log.InfoContext(ctx, msg, args...)
}

// add records n more bytes (negative after a restart).
func (p *progress) add(n int64) {
	if p == nil || n == 0 {
		return
	}
	p.done.Add(n)
	if p.bar != nil {
		p.barM.Lock()
		_ = p.bar.Add64(n)
		p.barM.Unlock()
	}
}

// grow raises the expected total by n.
func (p *progress) grow(n int64) {
	if p == nil || n == 0 {
		return
	}
	t := p.total.Add(n)
	if p.bar != nil {
		p.barM.Lock()
		p.bar.ChangeMax64(t)
		p.barM.Unlock()
	}
}

// finish stops reporting; ok says whether the operation succeeded.
func (p *progress) finish(ctx context.Context, desc string, ok bool) {
	if p == nil {
		return
	}
	p.stopOnce.Do(func() { close(p.stop) })
	p.wg.Wait()
	if p.bar != nil {
		p.barM.Lock()
		if ok {
			_ = p.bar.Finish()
		} else {
			_ = p.bar.Exit()
		}
		p.barM.Unlock()
		return
	}
	if ok {
		p.logRecord(ctx, desc+" done")
	}
}
