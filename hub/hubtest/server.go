package hubtest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// DefaultLFSThreshold is the size from which the Hub stores any file with LFS
// (10 MiB), whatever its name.
const DefaultLFSThreshold = 10 << 20

// DefaultMultipartChunkSize is the part size of multipart LFS uploads offered
// for objects larger than it. The real Hub uses a few hundred MB; the fake
// keeps it small enough for tests to exercise multipart cheaply.
const DefaultMultipartChunkSize = 8 << 20

// Server is an in-process fake of the Hugging Face Hub. It answers on two
// listeners: URL is the Hub endpoint, CDNURL stands for the CDN and S3 and has
// a different host name, so clients must drop their Authorization header when
// redirected there.
type Server struct {
	// URL is the Hub endpoint, e.g. http://127.0.0.1:41234 (no trailing slash).
	URL string
	// CDNURL is the CDN/S3 endpoint, e.g. http://localhost:41235.
	CDNURL string

	hub    *httptest.Server
	cdn    *httptest.Server
	cdn6   *http.Server // best-effort IPv6 loopback twin of cdn, for clients resolving localhost to ::1
	secret []byte
	reqSeq atomic.Int64 // numbers X-Request-Id

	hubAddr        string // listen addresses; "" means a free loopback port
	cdnAddr        string
	now            func() time.Time
	lfsThreshold   int64
	multipartChunk int64

	mu      sync.Mutex
	repos   map[string]*repo
	tokens  map[string]string          // token -> user
	orgs    map[string]map[string]bool // org -> members
	regular map[string][]byte          // git blob sha1 -> content
	lfs     map[string][]byte          // sha256 -> content
	cdnTags map[string]string          // sha256 -> the CDN's MD5 ETag, computed once
	uploads map[string]*pendingUpload  // sha256 -> multipart upload in progress
	corrupt map[string]func([]byte) []byte
	faults  []*faultState

	// logMu guards the request log and the byte counters. It is separate
	// from mu because handlers write responses (and so count bytes) while
	// holding mu; it is never held while taking mu.
	logMu    sync.Mutex
	log      []Request
	logGen   int64            // bumped by ResetRequests
	served   map[string]int64 // content oid -> body bytes sent
	bytesOut int64
}

// Option configures a Server.
type Option func(*Server)

// WithClock sets the clock used for commit dates, repo timestamps and the
// expiry of presigned CDN URLs (one hour, as X-Amz-Expires says). It is
// called from the server's goroutines: make it safe for concurrent use.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithLFSThreshold sets the size from which every file is stored with LFS.
func WithLFSThreshold(n int64) Option { return func(s *Server) { s.lfsThreshold = n } }

// WithMultipartChunkSize sets the part size of multipart LFS uploads; objects
// larger than it are offered the "multipart" transfer.
func WithMultipartChunkSize(n int64) Option { return func(s *Server) { s.multipartChunk = n } }

// WithAddrs makes the Hub and the CDN listen on fixed addresses (e.g.
// "127.0.0.1:8080"; "" keeps a free loopback port), for `lorasync demo`.
// The CDN's URL always uses the host name localhost, so it differs from the
// Hub's 127.0.0.1. New panics if an address cannot be bound.
func WithAddrs(hub, cdn string) Option {
	return func(s *Server) { s.hubAddr, s.cdnAddr = hub, cdn }
}

// New starts a fake Hub. Call Close when done (NewTB does it for you).
func New(opts ...Option) *Server {
	s := &Server{
		now:            time.Now,
		lfsThreshold:   DefaultLFSThreshold,
		multipartChunk: DefaultMultipartChunkSize,
		repos:          map[string]*repo{},
		tokens:         map[string]string{},
		orgs:           map[string]map[string]bool{},
		regular:        map[string][]byte{},
		lfs:            map[string][]byte{},
		cdnTags:        map[string]string{},
		uploads:        map[string]*pendingUpload{},
		corrupt:        map[string]func([]byte) []byte{},
		served:         map[string]int64{},
	}
	for _, o := range opts {
		o(s)
	}
	s.secret = make([]byte, 32)
	if _, err := rand.Read(s.secret); err != nil {
		panic("hubtest: no randomness: " + err.Error())
	}
	s.hub = startServer(s.hubAddr, s.wrap("hub", s.routeHub))
	s.URL = s.hub.URL
	s.cdn = startServer(s.cdnAddr, s.wrap("cdn", s.routeCDN))
	_, port, _ := net.SplitHostPort(s.cdn.Listener.Addr().String())
	s.CDNURL = "http://localhost:" + port
	if l, err := net.Listen("tcp6", "[::1]:"+port); err == nil {
		s.cdn6 = &http.Server{Handler: s.cdn.Config.Handler}
		go s.cdn6.Serve(l) //nolint:errcheck // ends with Close
	}
	return s
}

// startServer starts an httptest server, on addr when it is set.
func startServer(addr string, h http.Handler) *httptest.Server {
	if addr == "" {
		return httptest.NewServer(h)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		panic("hubtest: cannot listen on " + addr + ": " + err.Error())
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	return srv
}

// NewTB starts a fake Hub that is closed when the test ends.
func NewTB(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	s := New(opts...)
	tb.Cleanup(s.Close)
	return s
}

// Close shuts both listeners down.
func (s *Server) Close() {
	s.hub.CloseClientConnections()
	s.cdn.CloseClientConnections()
	s.hub.Close()
	s.cdn.Close()
	if s.cdn6 != nil {
		s.cdn6.Close()
	}
}

// AddToken registers a bearer token (it must start with "hf_", as real tokens
// do) for user, optionally a member of orgs. Members may read private repos
// and write to every repo of the namespace.
func (s *Server) AddToken(token, user string, orgs ...string) {
	if !strings.HasPrefix(token, "hf_") {
		panic("hubtest: tokens must start with hf_ (the JS client refuses others): " + user)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = user
	for _, o := range orgs {
		if s.orgs[o] == nil {
			s.orgs[o] = map[string]bool{}
		}
		s.orgs[o][user] = true
	}
}

// caller is who sent a request: user is empty for anonymous callers.
type caller struct {
	user string
}

// authenticate reads the Authorization header. ok is false (and the error is
// written) when a token is given but unknown.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (caller, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return caller{}, true
	}
	tok, found := strings.CutPrefix(h, "Bearer ")
	s.mu.Lock()
	user, known := s.tokens[strings.TrimSpace(tok)]
	s.mu.Unlock()
	if !found || !known {
		writeError(w, http.StatusUnauthorized, "", "Invalid credentials in Authorization header")
		return caller{}, false
	}
	return caller{user: user}, true
}

// canWrite reports whether c may write to namespace ns. Callers hold s.mu.
func (s *Server) canWrite(c caller, ns string) bool {
	return c.user != "" && (c.user == ns || s.orgs[ns][c.user])
}

// canSee reports whether c may see the repo at all. Callers hold s.mu.
func (s *Server) canSee(c caller, r *repo) bool {
	return !r.Private || s.canWrite(c, r.namespace())
}

// writeError answers the way the Hub does: X-Error-Code, X-Error-Message and
// a JSON body {"error": msg}.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	if code != "" {
		w.Header().Set("X-Error-Code", code)
	}
	w.Header().Set("X-Error-Message", msg)
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		panic("hubtest: unencodable response: " + err.Error())
	}
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
	}
	w.WriteHeader(status)
	w.Write(body) //nolint:errcheck // the client may have gone
}

// repoNotFound is what the Hub answers for a missing or invisible repo: 401
// to anonymous callers, 404 to authenticated ones.
func repoNotFound(w http.ResponseWriter, c caller) {
	status := http.StatusNotFound
	if c.user == "" {
		status = http.StatusUnauthorized
	}
	writeError(w, status, "RepoNotFound", "Repository not found")
}

// lookupRepo finds a repo the caller may see, or writes RepoNotFound.
// Callers hold s.mu.
func (s *Server) lookupRepo(w http.ResponseWriter, c caller, id string) (*repo, bool) {
	r, ok := s.repos[id]
	if !ok || !s.canSee(c, r) {
		repoNotFound(w, c)
		return nil, false
	}
	return r, true
}

// lookupRev finds a repo the caller may see and a revision in it, or writes
// RepoNotFound / RevisionNotFound. Callers hold s.mu.
func (s *Server) lookupRev(w http.ResponseWriter, c caller, id, rev string) (*repo, *commit, bool) {
	rp, ok := s.lookupRepo(w, c, id)
	if !ok {
		return nil, nil, false
	}
	cm, ok := resolveRev(w, rp, rev)
	return rp, cm, ok
}

// resolveRev resolves rev in rp, or writes RevisionNotFound.
func resolveRev(w http.ResponseWriter, rp *repo, rev string) (*commit, bool) {
	cm, ok := rp.resolve(rev)
	if !ok {
		writeError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
	}
	return cm, ok
}

// presignTTL is how long presigned CDN URLs stay valid (X-Amz-Expires).
const presignTTL = time.Hour

// amzDate is the layout of X-Amz-Date.
const amzDate = "20060102T150405Z"

// sign is the HMAC of a string with the server's secret.
func (s *Server) sign(p string) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(p))
	return hex.EncodeToString(m.Sum(nil))
}

// presign returns base+p with S3-style query parameters: the extra ones in q,
// a date, a lifetime and a signature over all of them and the path.
func (s *Server) presign(base, p string, q url.Values) string {
	if q == nil {
		q = url.Values{}
	}
	q.Set("X-Amz-Algorithm", "AWS4-HMAC-SHA256")
	q.Set("X-Amz-Date", s.now().UTC().Format(amzDate))
	q.Set("X-Amz-Expires", strconv.Itoa(int(presignTTL/time.Second)))
	q.Del("X-Amz-Signature")
	q.Set("X-Amz-Signature", s.sign(p+"?"+q.Encode()))
	return base + p + "?" + q.Encode()
}

// checkPresigned verifies a presigned request to path p, writing S3's 403
// when the signature is wrong or the URL has expired (by the server clock).
func (s *Server) checkPresigned(w http.ResponseWriter, r *http.Request, p string) bool {
	q := r.URL.Query()
	sig := q.Get("X-Amz-Signature")
	q.Del("X-Amz-Signature")
	if !hmac.Equal([]byte(s.sign(p+"?"+q.Encode())), []byte(sig)) {
		writeS3Error(w, http.StatusForbidden, "SignatureDoesNotMatch",
			"The request signature we calculated does not match the signature you provided.")
		return false
	}
	date, err1 := time.Parse(amzDate, q.Get("X-Amz-Date"))
	secs, err2 := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err1 != nil || err2 != nil || s.now().After(date.Add(time.Duration(secs)*time.Second)) {
		writeS3Error(w, http.StatusForbidden, "AccessDenied", "Request has expired")
		return false
	}
	return true
}

// itoa formats sizes and counters.
func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// isoTime formats t the way the Hub's JSON does.
func isoTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }
