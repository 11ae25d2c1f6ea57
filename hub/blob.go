package hub

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// copyBufferSize is the fixed buffer every download streams through: the
// bytes go network -> buffer -> (file, hash), so memory stays flat whatever
// the file size.
const copyBufferSize = 1 << 20

// blobSpec says which blob to fetch and where from.
type blobSpec struct {
	repo, rev, path string // for errors and logs
	etag            string // sha256 (LFS) or git blob sha1 (regular)
	size            int64  // advertised size
	url             string // GET target: CDN location or resolve URL
}

func (s blobSpec) err(kind error, format string, args ...any) *Error {
	return &Error{Op: "download", Repo: s.repo, Revision: s.rev, Path: s.path, Err: kind,
		Message: fmt.Sprintf(format, args...)}
}

// newContentHash returns the hash whose hex digest equals etag for correct
// content: sha256 for 64-hex etags (LFS), git blob sha1 for 40-hex etags,
// i.e. sha1("blob {size}\x00" + content).
func newContentHash(etag string, size int64) hash.Hash {
	var h hash.Hash = sha256.New()
	if len(etag) != 64 {
		h = sha1.New()
	}
	resetContentHash(h, etag, size)
	return h
}

// resetContentHash empties h and, for git-sha1 etags, writes the blob header again.
func resetContentHash(h hash.Hash, etag string, size int64) {
	h.Reset()
	if len(etag) != 64 {
		fmt.Fprintf(h, "blob %d\x00", size)
	}
}

// verifyFile checks that the file at p has the given size (when size >= 0)
// and hashes to etag. It returns an ErrIntegrity error describing a mismatch.
func verifyFile(p, etag string, size int64) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if size >= 0 && st.Size() != size {
		return fmt.Errorf("%w: %s has %d bytes, want %d", ErrIntegrity, p, st.Size(), size)
	}
	h := newContentHash(etag, st.Size())
	if _, err := io.CopyBuffer(h, f, make([]byte, copyBufferSize)); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != etag {
		return fmt.Errorf("%w: %s hashes to %s, want %s", ErrIntegrity, p, got, etag)
	}
	return nil
}

// ensureBlob makes blobs/{etag} present and verified, downloading it if
// needed, under the per-blob lock shared with Python. It returns the blob path.
func (c *Client) ensureBlob(ctx context.Context, rc *repoCache, s blobSpec, prog *progress) (string, error) {
	blob, err := rc.blobPath(s.etag)
	if err != nil {
		return "", &Error{Op: "download", Repo: s.repo, Revision: s.rev, Path: s.path, Err: ErrProtocol, Cause: err}
	}
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return "", err
	}
	unlock, err := rc.lock(ctx, s.etag)
	if err != nil {
		return "", err
	}
	defer unlock()

	if ok, err := c.cachedBlobOK(blob, s); err != nil || ok {
		if ok {
			prog.add(s.size)
		}
		return blob, err
	}
	if c.offline {
		return "", s.err(ErrOffline, "blob %s is not in the cache", s.etag)
	}
	resumed, err := c.downloadBlob(ctx, blob, s, prog)
	if errors.Is(err, ErrIntegrity) && resumed {
		// The partial file we resumed was not a prefix of this content (left
		// by a broken writer?). It has been removed: start once from zero.
		c.log.Warn("resumed download failed verification; starting over",
			"repo", s.repo, "path", s.path, "error", err.Error())
		prog.add(-s.size)
		_, err = c.downloadBlob(ctx, blob, s, prog)
	}
	if err != nil {
		return "", err
	}
	return blob, nil
}

// cachedBlobOK reports whether blob exists and (unless TrustCache) verifies.
// A blob that fails verification is removed so it gets refetched.
func (c *Client) cachedBlobOK(blob string, s blobSpec) (bool, error) {
	st, err := os.Stat(blob)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if c.trustCache && (s.size < 0 || st.Size() == s.size) {
		return true, nil
	}
	if err := verifyFile(blob, s.etag, s.size); err != nil {
		if !errors.Is(err, ErrIntegrity) {
			return false, err
		}
		c.log.Warn("cached blob failed verification; refetching",
			"repo", s.repo, "path", s.path, "etag", s.etag, "error", err.Error())
		if err := os.Remove(blob); err != nil {
			return false, err
		}
		return false, nil
	}
	return true, nil
}

// findIncomplete returns the partial download to resume, if any: the largest
// of blobs/{etag}.incomplete (older Python) and blobs/{etag}.*.incomplete
// (current Python and us). Others are stale — we hold the lock — and removed.
func findIncomplete(blob string) string {
	matches, _ := filepath.Glob(blob + ".*.incomplete")
	if _, err := os.Stat(blob + ".incomplete"); err == nil {
		matches = append(matches, blob+".incomplete")
	}
	best, bestSize := "", int64(-1)
	for _, m := range matches {
		st, err := os.Stat(m)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		if st.Size() > bestSize {
			if best != "" {
				_ = os.Remove(best)
			}
			best, bestSize = m, st.Size()
		} else {
			_ = os.Remove(m)
		}
	}
	return best
}

// downloadBlob streams s into blobs/{etag}.{rand}.incomplete (or resumes an
// existing partial file with a Range request), hashing while writing, then
// checks size and hash, fsyncs and renames it to blob. A partial file is kept
// after network errors and cancellation (to resume later) and removed when
// its content proves wrong. resumed reports whether it continued an existing
// partial file.
func (c *Client) downloadBlob(ctx context.Context, blob string, s blobSpec, prog *progress) (resumed bool, err error) {
	tmp := findIncomplete(blob)
	if tmp == "" {
		tmp = blob + "." + randHex(4) + ".incomplete"
	}
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return resumed, err
	}
	defer func() {
		if f != nil {
			f.Close()
		}
		if errors.Is(err, ErrIntegrity) {
			_ = os.Remove(tmp)
		}
	}()

	// Hash what is already there, so resuming costs no network bytes.
	h := newContentHash(s.etag, s.size)
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return resumed, err
	}
	if have > s.size {
		have = 0
	}
	if have > 0 {
		resumed = true
		if _, err := io.CopyBuffer(h, io.NewSectionReader(f, 0, have), make([]byte, copyBufferSize)); err != nil {
			return resumed, err
		}
		c.log.Info("resuming download", "repo", s.repo, "path", s.path, "offset", have, "size", s.size)
	}
	if err := f.Truncate(have); err != nil {
		return resumed, err
	}
	if _, err := f.Seek(have, io.SeekStart); err != nil {
		return resumed, err
	}
	prog.add(have)

	bo := c.newBackoff()
	for have < s.size {
		n, restart, rerr := c.fetchRange(ctx, f, h, have, s, prog)
		if restart {
			prog.add(-have)
			have = 0
		}
		have += n
		if rerr == nil {
			continue
		}
		if ctx.Err() != nil {
			return resumed, ctx.Err()
		}
		var sent *requestFailed
		if errors.As(rerr, &sent) {
			// c.do has already retried it (honouring Retry-After): retrying
			// here again would multiply the attempts.
			return resumed, sent.err
		}
		if !IsRetryable(rerr) { // disk errors, integrity and protocol failures are final
			return resumed, rerr
		}
		if n > 0 {
			bo.reset() // progress was made: like Python, start counting again
		}
		c.log.Warn("download interrupted, resuming", "repo", s.repo, "path", s.path,
			"offset", have, "size", s.size, "error", rerr.Error())
		ok, werr := bo.wait(ctx, 0)
		if werr != nil {
			return resumed, werr
		}
		if !ok {
			return resumed, rerr
		}
	}
	if have != s.size {
		return resumed, s.err(ErrIntegrity, "got %d bytes, want %d", have, s.size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != s.etag {
		return resumed, s.err(ErrIntegrity, "content hashes to %s, want %s", got, s.etag)
	}
	if err := f.Sync(); err != nil {
		return resumed, err
	}
	if err := f.Close(); err != nil {
		f = nil
		return resumed, err
	}
	f = nil
	if err := os.Rename(tmp, blob); err != nil {
		return resumed, err
	}
	return resumed, syncDir(filepath.Dir(blob))
}

// requestFailed marks an error of the request itself (no response), which
// c.do has already retried as far as the policy allows; only failures while
// reading the body are retried by downloadBlob's loop.
type requestFailed struct{ err error }

func (e *requestFailed) Error() string { return e.err.Error() }
func (e *requestFailed) Unwrap() error { return e.err }

// idleReader re-arms timer for idle whenever a read returns bytes.
type idleReader struct {
	r     io.Reader
	timer *time.Timer
	idle  time.Duration
}

func (ir *idleReader) Read(p []byte) (int, error) {
	n, err := ir.r.Read(p)
	if n > 0 {
		ir.timer.Reset(ir.idle)
	}
	return n, err
}

// contentRangeRE parses "bytes START-END/TOTAL".
var contentRangeRE = regexp.MustCompile(`^bytes (\d+)-(\d+)/(\d+|\*)$`)

// fetchRange GETs s.url from offset have and appends the body to f, hashing it.
// It returns how many bytes it appended and whether the file was restarted
// from zero first (the server ignored the Range and sent everything).
func (c *Client) fetchRange(ctx context.Context, f *os.File, h hash.Hash, have int64,
	s blobSpec, prog *progress) (n int64, restart bool, err error) {
	hdr := http.Header{"Accept-Encoding": {"identity"}}
	if have > 0 {
		hdr.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
	}
	cl := &call{method: http.MethodGet, url: s.url, header: hdr, auth: true,
		op: "download", repo: s.repo, rev: s.rev, path: s.path}
	// A watchdog cancels the request when the body stalls for c.idle; the
	// caller then resumes from the bytes received, as after a cut connection.
	reqCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp, err := c.do(reqCtx, cl)
	if err != nil {
		return 0, false, &requestFailed{err}
	}
	defer resp.Body.Close()
	var stalled atomic.Bool
	watchdog := time.AfterFunc(c.idle, func() { stalled.Store(true); cancel() })
	defer watchdog.Stop()
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
		m := contentRangeRE.FindStringSubmatch(resp.Header.Get("Content-Range"))
		if m == nil || m[1] != strconv.FormatInt(have, 10) {
			return 0, false, s.err(ErrProtocol, "Content-Range %q does not start at %d", resp.Header.Get("Content-Range"), have)
		}
	case resp.StatusCode == http.StatusOK:
		if have > 0 {
			// Range ignored (Python: "server ignored our Range header"): start over.
			c.log.Info("server ignored Range; restarting download", "repo", s.repo, "path", s.path)
			if err := f.Truncate(0); err != nil {
				return 0, false, err
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return 0, false, err
			}
			resetContentHash(h, s.etag, s.size)
			restart, have = true, 0
		}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		// Our partial file is not a prefix the server can extend: start over.
		if err := f.Truncate(0); err != nil {
			return 0, false, err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return 0, false, err
		}
		resetContentHash(h, s.etag, s.size)
		return 0, true, &Error{Op: "download", Repo: s.repo, Revision: s.rev, Path: s.path,
			Status: resp.StatusCode, Err: ErrUnavailable, Message: "range not satisfiable; restarting"}
	default:
		if _, err := c.check(resp, cl); err != nil {
			return 0, false, err
		}
		return 0, false, s.err(ErrProtocol, "unexpected HTTP %d for a download", resp.StatusCode)
	}
	if enc := resp.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		return 0, restart, s.err(ErrProtocol, "server sent Content-Encoding %q despite identity", enc)
	}
	// Read at most one byte more than we expect, to notice an oversized body.
	// Every read that delivers bytes re-arms the watchdog: a slow body is
	// not a stalled one, even if it fills a copy buffer slower than c.idle.
	body := io.LimitReader(&idleReader{r: resp.Body, timer: watchdog, idle: c.idle}, s.size-have+1)
	aw := newAsyncWriter(f, asyncWriteDepth)
	defer func() {
		if werr := aw.close(); werr != nil {
			// A local write failure outranks whatever the network did.
			err = fmt.Errorf("hub: download %s@%s %s: write %s: %w", s.repo, s.rev, s.path, f.Name(), werr)
		}
	}()
	for {
		// Fill a whole buffer before handing it on: a few large write
		// syscalls instead of one per network read. The disk write runs on
		// the writer goroutine while this one hashes and reads the next buffer.
		buf := aw.next()
		k, rerr := io.ReadFull(body, buf)
		if rerr == io.ErrUnexpectedEOF {
			rerr = io.EOF
		}
		if k > 0 {
			if have+n+int64(k) > s.size {
				aw.release(buf)
				return n, restart, s.err(ErrIntegrity, "server sent more than the advertised %d bytes", s.size)
			}
			h.Write(buf[:k])
			aw.submit(buf[:k])
			n += int64(k)
			prog.add(int64(k))
		} else {
			aw.release(buf)
		}
		if aw.failed() {
			return n, restart, nil // the deferred close reports the write error
		}
		if rerr == io.EOF {
			if have+n < s.size {
				return n, restart, s.err(ErrUnavailable, "connection closed at byte %d of %d", have+n, s.size)
			}
			return n, restart, nil
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return n, restart, ctx.Err()
			}
			if stalled.Load() {
				return n, restart, s.err(ErrUnavailable, "no data for %v at byte %d of %d", c.idle, have+n, s.size)
			}
			return n, restart, &Error{Op: "download", Repo: s.repo, Revision: s.rev, Path: s.path,
				Err: ErrUnavailable, Cause: rerr}
		}
	}
}

// asyncWriteDepth is how many copy buffers one download may have in flight
// (being filled, hashed or written): 3 MiB per download.
const asyncWriteDepth = 3

// bufPool recycles copy buffers across downloads.
var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// asyncWriter writes buffers to a file on its own goroutine, so that disk
// writes overlap network reads and hashing. Buffers cycle between the
// caller (next, then submit or release) and the writer.
type asyncWriter struct {
	w      io.Writer
	free   chan []byte
	full   chan []byte
	done   chan struct{}
	err    error // set by the writer goroutine; read after done is closed
	broken atomic.Bool
}

func newAsyncWriter(w io.Writer, depth int) *asyncWriter {
	a := &asyncWriter{w: w, free: make(chan []byte, depth), full: make(chan []byte, depth), done: make(chan struct{})}
	for range depth {
		a.free <- *bufPool.Get().(*[]byte)
	}
	go a.loop()
	return a
}

func (a *asyncWriter) loop() {
	defer close(a.done)
	for b := range a.full {
		if a.err == nil {
			if _, err := a.w.Write(b); err != nil {
				a.err = err
				a.broken.Store(true)
			}
		}
		a.free <- b[:cap(b)]
	}
}

// next returns an empty full-size buffer.
func (a *asyncWriter) next() []byte { return <-a.free }

// submit queues b (from next) to be written in order.
func (a *asyncWriter) submit(b []byte) { a.full <- b }

// release returns an unused buffer from next.
func (a *asyncWriter) release(b []byte) { a.free <- b[:cap(b)] }

// failed reports whether a write has failed (close returns the error).
func (a *asyncWriter) failed() bool { return a.broken.Load() }

// close waits for queued writes, recycles the buffers and returns the first
// write error. Every buffer taken with next must have been submitted or
// released.
func (a *asyncWriter) close() error {
	close(a.full)
	<-a.done
	for range cap(a.free) {
		b := <-a.free
		bufPool.Put(&b)
	}
	return a.err
}
