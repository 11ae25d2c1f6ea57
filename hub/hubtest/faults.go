package hubtest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
)

// Fault makes matching requests fail. A request matches when every set
// field among Host, Method, PathPrefix and Match agrees.
//
// What happens then:
//   - Status != 0: the fake answers Status at once, with the Hub's JSON error
//     body, plus Retry-After and RateLimit headers when set;
//   - Status == 0 and CutAfterBytes > 0: the request is served normally but
//     the connection is closed after CutAfterBytes bytes of body (a network
//     failure mid-download);
//   - Status == 0 and CutAfterBytes == 0: the connection is closed before any
//     answer.
//
// With Hold set, the request first waits until Hold is closed (or the client
// gives up); a held fault with neither Status nor CutAfterBytes is then served
// normally. Holding lets tests cancel a client mid-request without timing.
type Fault struct {
	Host       string // "hub", "cdn" or "" for both
	Method     string // "" for any
	PathPrefix string // prefix of the unescaped URL path; "" for any
	Match      func(*http.Request) bool

	Status     int
	Message    string // error message; defaults to the status text
	ErrorCode  string // X-Error-Code, optional
	RetryAfter string // Retry-After header, e.g. "1"
	RateLimit  string // RateLimit header, e.g. `"api";r=0;t=1`

	CutAfterBytes int64
	Hold          <-chan struct{}
	Times         int // how many requests to fail; <= 0 means all of them
}

type faultState struct {
	Fault
	left int // remaining firings; < 0 means unlimited
}

func (f *faultState) matches(host string, r *http.Request) bool {
	return (f.Host == "" || f.Host == host) &&
		(f.Method == "" || f.Method == r.Method) &&
		strings.HasPrefix(r.URL.Path, f.PathPrefix) &&
		(f.Match == nil || f.Match(r))
}

// Inject adds a fault. Faults are tried in order; the first match fires.
func (s *Server) Inject(f Fault) {
	left := f.Times
	if left <= 0 {
		left = -1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &faultState{Fault: f, left: left})
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// takeFault returns the fault firing for this request, if any.
func (s *Server) takeFault(host string, r *http.Request) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if f.left == 0 || !f.matches(host, r) {
			continue
		}
		if f.left > 0 {
			f.left--
		}
		if f.left == 0 {
			s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
		}
		ff := f.Fault
		return &ff
	}
	return nil
}

// Request is one logged request. The Authorization header is never kept:
// Auth only says whether one was sent.
type Request struct {
	Host     string // "hub" or "cdn"
	Method   string
	Path     string // unescaped URL path
	RawQuery string
	Range    string // Range request header
	Auth     bool   // an Authorization header was sent
	Status   int    // 0 when an injected fault dropped the connection before any answer
	BytesIn  int64  // request body bytes read
	BytesOut int64  // response body bytes written
	OID      string // content served (sha256 for LFS, git sha1 otherwise), if any
	Fault    bool   // an injected fault fired
}

// maxLogEntries bounds the request log; past it the older half is dropped.
const maxLogEntries = 1 << 16

// Requests returns a copy of the request log, oldest first (at most the
// latest 65536 requests).
func (s *Server) Requests() []Request {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return append([]Request(nil), s.log...)
}

// ResetRequests clears the request log and the byte counters.
func (s *Server) ResetRequests() {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	s.log = nil
	s.logGen++
	s.served = map[string]int64{}
	s.bytesOut = 0
}

// BytesOut is the total response body bytes sent by both hosts.
func (s *Server) BytesOut() int64 {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.bytesOut
}

// ServedBytes is the number of content bytes of the blob oid (sha256 for LFS
// files, git sha1 for regular files) sent so far, over every request.
func (s *Server) ServedBytes(oid string) int64 {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.served[oid]
}

// Corrupt makes the fake serve f(content) instead of the stored content of
// the blob oid (sha256 for LFS files, git sha1 otherwise), to test checksum
// checks; f must keep the length for the size checks to pass. A nil f
// restores honest serving. The store itself is untouched.
func (s *Server) Corrupt(oid string, f func([]byte) []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f == nil {
		delete(s.corrupt, oid)
		return
	}
	s.corrupt[oid] = f
}

// FlipByte is a ready-made Corrupt function: it flips the bits of the
// middle byte.
func FlipByte(b []byte) []byte {
	out := append([]byte(nil), b...)
	if len(out) > 0 {
		out[len(out)/2] ^= 0xff
	}
	return out
}

// served returns what to send for a blob: the stored bytes or their
// corrupted version.
func (s *Server) servedContent(oid string, data []byte) []byte {
	s.mu.Lock()
	f := s.corrupt[oid]
	s.mu.Unlock()
	if f == nil {
		return data
	}
	return f(append([]byte(nil), data...))
}

// wrap logs, counts and applies faults around a host's router. The log
// entry and the byte counters are updated before the bytes they count reach
// the client, so a test that has read a response sees them.
func (s *Server) wrap(host string, route http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "Root=1-hubtest-"+itoa(s.reqSeq.Add(1)))
		s.logMu.Lock()
		if len(s.log) >= maxLogEntries {
			// A long-running demo must not grow without bound: keep the newer
			// half (in-flight requests then stop updating their entries).
			s.log = append([]Request(nil), s.log[len(s.log)/2:]...)
			s.logGen++
		}
		s.log = append(s.log, Request{Host: host, Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
			Range: r.Header.Get("Range"), Auth: r.Header.Get("Authorization") != ""})
		cw := &countingWriter{ResponseWriter: w, s: s, idx: len(s.log) - 1, gen: s.logGen, cutAfter: -1}
		s.logMu.Unlock()
		r.Body = &countingReader{r: r.Body, w: cw}
		defer cw.record(func(rec *Request) {
			if rec.Status == 0 && !cw.cut {
				rec.Status = http.StatusOK // the handler wrote nothing: net/http answers 200
			}
		})
		if f := s.takeFault(host, r); f != nil {
			cw.record(func(rec *Request) { rec.Fault = true })
			if applyFault(cw, r, f) {
				return
			}
		}
		route(cw, r)
	})
}

// applyFault carries out f (see Fault) and reports whether it answered the
// request; false means the request is to be served, perhaps cut mid-body.
func applyFault(cw *countingWriter, r *http.Request, f *Fault) bool {
	if f.Hold != nil {
		select {
		case <-f.Hold:
		case <-r.Context().Done():
			cw.cut = true // the client went away while held: logged with status 0
			return true
		}
		if f.Status == 0 && f.CutAfterBytes == 0 {
			return false
		}
	}
	switch {
	case f.Status != 0:
		if f.RetryAfter != "" {
			cw.Header().Set("Retry-After", f.RetryAfter)
		}
		if f.RateLimit != "" {
			cw.Header().Set("RateLimit", f.RateLimit)
			cw.Header().Set("RateLimit-Policy", `"fixed window";"api";q=500;w=300`)
		}
		msg := f.Message
		if msg == "" {
			msg = http.StatusText(f.Status)
		}
		writeError(cw, f.Status, f.ErrorCode, msg)
		return true
	case f.CutAfterBytes <= 0:
		cw.hangUp()
		return true
	}
	cw.cutAfter = f.CutAfterBytes
	return false
}

// countingWriter counts body bytes into the request log and the byte
// counters, and can cut the connection mid-body.
type countingWriter struct {
	http.ResponseWriter
	s        *Server
	idx      int   // this request's index in s.log
	gen      int64 // s.logGen when the request arrived
	status   int
	n        int64
	oid      string
	cutAfter int64 // < 0: never
	cut      bool
}

// record updates this request's log entry, unless the log was reset since.
func (c *countingWriter) record(f func(*Request)) {
	c.s.logMu.Lock()
	defer c.s.logMu.Unlock()
	if c.s.logGen == c.gen && c.idx < len(c.s.log) {
		f(&c.s.log[c.idx])
	}
}

// setOID names the blob this response serves.
func (c *countingWriter) setOID(oid string) {
	c.oid = oid
	c.record(func(rec *Request) { rec.OID = oid })
}

// account counts n body bytes about to be written.
func (c *countingWriter) account(n int) {
	c.n += int64(n)
	c.s.logMu.Lock()
	defer c.s.logMu.Unlock()
	c.s.bytesOut += int64(n)
	if c.oid != "" {
		c.s.served[c.oid] += int64(n)
	}
	if c.s.logGen == c.gen && c.idx < len(c.s.log) {
		c.s.log[c.idx].BytesOut += int64(n)
	}
}

func (c *countingWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
		c.record(func(rec *Request) { rec.Status = code })
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.cut {
		return 0, errCut
	}
	if c.status == 0 {
		c.WriteHeader(http.StatusOK)
	}
	if c.cutAfter >= 0 && c.n+int64(len(p)) >= c.cutAfter {
		keep := c.cutAfter - c.n
		c.account(int(keep))
		n, _ := c.ResponseWriter.Write(p[:keep])
		c.hangUp()
		return n, errCut
	}
	c.account(len(p))
	return c.ResponseWriter.Write(p)
}

// hangUp flushes what was written and closes the TCP connection.
func (c *countingWriter) hangUp() {
	c.cut = true
	if f, ok := c.ResponseWriter.(http.Flusher); ok && c.status != 0 {
		f.Flush()
	}
	hj, ok := c.ResponseWriter.(http.Hijacker)
	if !ok {
		panic("hubtest: response writer cannot be hijacked")
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	if buf != nil {
		buf.Flush() //nolint:errcheck // the connection is being dropped anyway
	}
	conn.Close()
}

// Flush lets handlers stream.
func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok && !c.cut {
		f.Flush()
	}
}

// Hijack exposes the underlying connection.
func (c *countingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := c.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("hubtest: not hijackable")
	}
	return hj.Hijack()
}

var errCut = errors.New("hubtest: connection cut by an injected fault")

type countingReader struct {
	r io.ReadCloser
	w *countingWriter
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.w.record(func(rec *Request) { rec.BytesIn += int64(n) })
	}
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }
