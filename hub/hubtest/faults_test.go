package hubtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestFaultStatusTimes(t *testing.T) {
	s, _ := newSeeded(t)
	s.Inject(Fault{Method: "HEAD", PathPrefix: "/alice/base/resolve/", Status: 503, RetryAfter: "1", Times: 2})
	u := s.URL + "/alice/base/resolve/main/config.json"
	for i := range 2 {
		resp, body := do(t, noRedirect, "HEAD", u, "", nil)
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" {
			t.Fatalf("attempt %d: %d %q %s", i, resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
	}
	if resp, _ := do(t, noRedirect, "HEAD", u, "", nil); resp.StatusCode != 307 {
		t.Fatalf("third attempt: %d, the fault fired more than Times", resp.StatusCode)
	}
	// Other methods were never affected.
	s.Inject(Fault{Method: "HEAD", Status: 503, Times: 1})
	if resp, _ := do(t, noRedirect, "GET", u, "", nil); resp.StatusCode != 307 {
		t.Fatalf("GET hit a HEAD fault: %d", resp.StatusCode)
	}
	s.ClearFaults()
	if resp, _ := do(t, noRedirect, "HEAD", u, "", nil); resp.StatusCode != 307 {
		t.Fatalf("after ClearFaults: %d", resp.StatusCode)
	}
	faults := 0
	for _, r := range s.Requests() {
		if r.Fault {
			faults++
		}
	}
	if faults != 2 {
		t.Fatalf("request log shows %d faults, want 2", faults)
	}
}

func TestFaultRateLimitAndMatch(t *testing.T) {
	s, _ := newSeeded(t)
	s.Inject(Fault{Host: "hub", Match: func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/refs") },
		Status: 429, RateLimit: `"api";r=0;t=55`, Times: 1})
	resp, body := do(t, nil, "GET", s.URL+"/api/models/alice/base/refs", "", nil)
	if resp.StatusCode != 429 || resp.Header.Get("RateLimit") != `"api";r=0;t=55` || !strings.Contains(string(body), "error") {
		t.Fatalf("rate limited: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if resp, _ := do(t, nil, "GET", s.URL+"/api/models/alice/base/refs", "", nil); resp.StatusCode != 200 {
		t.Fatalf("after the rate limit: %d", resp.StatusCode)
	}
}

func TestFaultCutMidBodyAndResume(t *testing.T) {
	s, _ := newSeeded(t)
	content := randomBytes(1, 3000)
	oid := sha256Hex(content)
	s.Inject(Fault{Host: "cdn", Method: "GET", CutAfterBytes: 1000, Times: 1})
	u := s.URL + "/alice/base/resolve/main/model.safetensors"
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || len(got) != 1000 || !bytes.Equal(got, content[:1000]) {
		t.Fatalf("cut download: %d bytes, err %v; want 1000 bytes and an error", len(got), err)
	}
	resp2, rest := do(t, nil, "GET", u, "", nil, "Range", fmt.Sprintf("bytes=%d-", len(got)))
	if resp2.StatusCode != 206 || !bytes.Equal(append(got, rest...), content) {
		t.Fatalf("resume: %d, %d bytes", resp2.StatusCode, len(rest))
	}
	if n := s.ServedBytes(oid); n != 3000 {
		t.Fatalf("ServedBytes = %d, want exactly 3000 (no byte sent twice)", n)
	}
	if s.BytesOut() < 3000 {
		t.Fatalf("BytesOut %d < 3000", s.BytesOut())
	}
	// Status 0 and no byte limit: the connection drops before any answer.
	// (A fresh connection: Go's transport silently retries a GET whose
	// reused keep-alive connection died.)
	s.Inject(Fault{PathPrefix: "/api/models/", Times: 1})
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := fresh.Get(s.URL + "/api/models/alice/base"); err == nil {
		resp.Body.Close()
		t.Fatalf("dropped connection answered %d", resp.StatusCode)
	}
}

func TestCorrupt(t *testing.T) {
	s, _ := newSeeded(t)
	content := randomBytes(1, 3000)
	oid := sha256Hex(content)
	s.Corrupt(oid, FlipByte)
	u := s.URL + "/alice/base/resolve/main/model.safetensors"
	resp, body := do(t, nil, "GET", u, "", nil)
	if resp.StatusCode != 200 || len(body) != len(content) || sha256Hex(body) == oid {
		t.Fatalf("corrupted download: %d, %d bytes, sha256 intact=%v", resp.StatusCode, len(body), sha256Hex(body) == oid)
	}
	if stored, _ := s.File("alice/base", "main", "model.safetensors"); !bytes.Equal(stored, content) {
		t.Fatalf("Corrupt changed the store")
	}
	s.Corrupt(oid, nil)
	if _, body := do(t, nil, "GET", u, "", nil); !bytes.Equal(body, content) {
		t.Fatalf("Corrupt(nil) did not restore honest serving")
	}
}

func TestRequestLogNeverKeepsTokens(t *testing.T) {
	s, _ := newSeeded(t)
	resp, _ := do(t, nil, "GET", s.URL+"/alice/base/resolve/main/model.safetensors", aliceToken, nil)
	if !strings.HasPrefix(resp.Header.Get("X-Request-Id"), "Root=1-hubtest-") {
		t.Fatalf("X-Request-Id %q", resp.Header.Get("X-Request-Id"))
	}
	log := s.Requests()
	if len(log) != 2 || log[0].Host != "hub" || !log[0].Auth || log[0].Status != 302 || log[1].Host != "cdn" || log[1].Auth || log[1].Status != 200 {
		t.Fatalf("log %+v", log)
	}
	if strings.Contains(fmt.Sprintf("%+v", log), aliceToken) {
		t.Fatalf("the request log holds a token")
	}
	s.ResetRequests()
	if len(s.Requests()) != 0 || s.BytesOut() != 0 {
		t.Fatalf("ResetRequests left state")
	}
}

// waitForRequest polls the log until a request to path arrives.
func waitForRequest(t *testing.T, s *Server, path string) {
	t.Helper()
	for range 2000 {
		for _, r := range s.Requests() {
			if r.Path == path {
				return
			}
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("no request to %s arrived", path)
}

func TestFaultHold(t *testing.T) {
	s, _ := newSeeded(t)
	// A held request whose client cancels: the client sees its own
	// cancellation, and the fake does not answer it.
	hold := make(chan struct{})
	s.Inject(Fault{PathPrefix: "/api/models/alice/base", Hold: hold, Times: 1})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+"/api/models/alice/base", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	waitForRequest(t, s, "/api/models/alice/base")
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled held request: %v, want context.Canceled", err)
	}
	close(hold)
	// A held request released by the test is served normally.
	s.ResetRequests()
	hold2 := make(chan struct{})
	s.Inject(Fault{PathPrefix: "/api/models/alice/base/refs", Hold: hold2, Times: 1})
	done := make(chan int, 1)
	go func() {
		resp, err := http.Get(s.URL + "/api/models/alice/base/refs")
		if err != nil {
			done <- -1
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	waitForRequest(t, s, "/api/models/alice/base/refs")
	close(hold2)
	if st := <-done; st != 200 {
		t.Fatalf("released request: %d, want 200", st)
	}
}
