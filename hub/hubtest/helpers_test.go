package hubtest

import (
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
)

// Fixed tokens of the test users.
const (
	aliceToken = "hf_alice_token_000000000000000000"
	bobToken   = "hf_bob_token_0000000000000000000000"
)

// newSeeded starts a fake with users alice (member of org "acme") and bob,
// and a public repo alice/base holding a config, a README with front
// matter, and a 3000-byte safetensors file (LFS by extension).
func newSeeded(t *testing.T, opts ...Option) (*Server, string) {
	t.Helper()
	s := NewTB(t, opts...)
	s.AddToken(aliceToken, "alice", "acme")
	s.AddToken(bobToken, "bob")
	if err := s.CreateRepo("alice/base", false); err != nil {
		t.Fatal(err)
	}
	sha, err := s.Commit("alice/base", "main", map[string][]byte{
		"config.json":       []byte(`{"model_type":"llama","hidden_size":64}`),
		"README.md":         []byte("---\nlicense: mit\nbase_model: org/root\ntags:\n- lora\n---\n# Base\n"),
		"model.safetensors": randomBytes(1, 3000),
	}, "add weights")
	if err != nil {
		t.Fatal(err)
	}
	return s, sha
}

// randomBytes is deterministic pseudo-random content.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 42))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// noRedirect is an http.Client that returns redirects instead of following.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// do sends a request and returns the response with its body read.
func do(t *testing.T, c *http.Client, method, url, token string, body []byte, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, data
}

// getJSON GETs url and decodes a 200 JSON answer into v.
func getJSON(t *testing.T, url, token string, v any) *http.Response {
	t.Helper()
	resp, body := do(t, nil, "GET", url, token, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v in %s", url, err, body)
	}
	return resp
}

// postJSON POSTs v as JSON.
func postJSON(t *testing.T, url, token string, v any, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	body, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, nil, "POST", url, token, body, append([]string{"Content-Type", "application/json"}, hdr...)...)
}

// wantError checks a Hub error answer.
func wantError(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status || resp.Header.Get("X-Error-Code") != code {
		t.Fatalf("%s %s: got %d %q (%s), want %d %q", resp.Request.Method, resp.Request.URL,
			resp.StatusCode, resp.Header.Get("X-Error-Code"), body, status, code)
	}
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
		t.Fatalf("error body %q is not {\"error\": ...}", body)
	}
	if resp.Header.Get("X-Error-Message") != e.Error {
		t.Fatalf("X-Error-Message %q != body error %q", resp.Header.Get("X-Error-Message"), e.Error)
	}
}

// ndjson builds a commit payload.
func ndjson(lines ...map[string]any) []byte {
	var b strings.Builder
	for _, l := range lines {
		data, _ := json.Marshal(l)
		b.Write(data)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
