package hubtest

import (
	"net/http"
	"strings"
	"testing"
)

// TestOddRequestsGetClientErrors throws malformed requests at both hosts:
// each must get a 4xx answer (never a 5xx, a panic or a dropped connection),
// and the server must keep serving.
func TestOddRequestsGetClientErrors(t *testing.T) {
	s, _ := newSeeded(t)
	cases := []struct{ method, path, body string }{
		{"GET", "/", ""},
		{"GET", "/api", ""},
		{"GET", "/api/models/alice", ""},
		{"GET", "/api/models/alice/base/unknown", ""},
		{"GET", "/api/models/alice/base/revision/", ""},
		{"GET", "/api/models/alice/base/commits/main?limit=0", ""},
		{"GET", "/api/models/alice/base/commits/main?limit=x", ""},
		{"GET", "/api/models/alice/base/commits/main?p=-1", ""},
		{"DELETE", "/api/models/alice/base", ""},
		{"GET", "/alice/base/resolve/main", ""},
		{"GET", "/alice/base/resolve/main/", ""},
		{"GET", "/alice/base/resolve/main/%2e%2e/config.json", ""},
		{"POST", "/alice/base/resolve/main/config.json", ""},
		{"POST", "/api/models/alice/base/commit/main", "not json"},
		{"POST", "/api/models/alice/base/commit/main", `{"key":"header","value":{"summary":""}}`},
		{"POST", "/api/models/alice/base/commit/main", `{"key":"header","value":{"summary":"s"}}` + "\n" + `{"key":"file","value":{"path":"a","content":"!!","encoding":"base64"}}`},
		{"POST", "/api/models/alice/base/commit/main", `{"key":"header","value":{"summary":"s"}}` + "\n" + `{"key":"teleport","value":{}}`},
		{"POST", "/api/models/alice/base/commit/main", `{"key":"header","value":{"summary":"s","parentCommit":"nothex"}}`},
		{"POST", "/api/models/alice/base/preupload/main", `{"files":[{"path":"/abs","size":1,"sample":""}]}`},
		{"POST", "/api/models/alice/base/preupload/main", `{"files":[{"path":"a","size":1,"sample":"%%%"}]}`},
		{"POST", "/api/models/alice/base/paths-info/main", `[`},
		{"POST", "/alice/base.git/info/lfs/objects/batch", `{"operation":"download"}`},
		{"POST", "/alice/base.git/info/lfs/objects/batch", `{"operation":"upload","transfers":["xet"]}`},
		{"POST", "/alice/base.git/info/lfs/objects/unknown", `{}`},
		{"POST", "/api/repos/create", `{"name":"../x"}`},
		{"POST", "/api/repos/create", `{"name":"ok","type":"dataset"}`},
		{"POST", "/api/models/alice/base/branch/refs%2Fheads%2Fx", `{}`},
		{"POST", "/api/complete_multipart?oid=x&signature=y", `{}`},
		{"POST", "/api/validate-yaml", `nope`},
	}
	for _, c := range cases {
		resp, body := do(t, noRedirect, c.method, s.URL+c.path, aliceToken, []byte(c.body), "Content-Type", "application/json")
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("%s %s %q: %d %s, want a 4xx", c.method, c.path, c.body, resp.StatusCode, body)
		}
	}
	// A bad object in an LFS batch is a per-object error, as in the git-lfs spec.
	resp, body := do(t, nil, "POST", s.URL+"/alice/base.git/info/lfs/objects/batch", aliceToken,
		[]byte(`{"operation":"upload","objects":[{"oid":"short","size":-1}]}`))
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"error":{"code":422`) {
		t.Errorf("bad LFS object: %d %s", resp.StatusCode, body)
	}
	// Pages far past the end are empty, not errors (and must not overflow).
	for _, p := range []string{"/api/models/alice/base/commits/main?p=9223372036854775807", "/api/models/alice/base/tree/main?p=9223372036854775807&limit=1000"} {
		resp, body := do(t, nil, "GET", s.URL+p, "", nil)
		if resp.StatusCode != 200 || string(body) != "[]" || resp.Header.Get("Link") != "" {
			t.Errorf("GET %s: %d %s Link %q, want 200 [] and no next link", p, resp.StatusCode, body, resp.Header.Get("Link"))
		}
	}
	cdn := []struct{ method, path string }{
		{"GET", "/"}, {"GET", "/repos/abc"}, {"GET", "/repos/" + strings.Repeat("0", 64) + "?X-Amz-Signature=1"},
		{"PUT", "/upload/abc?size=1"}, {"PUT", "/upload/abc/1"}, {"DELETE", "/repos/abc"},
	}
	for _, c := range cdn {
		resp, body := do(t, noRedirect, c.method, s.CDNURL+c.path, "", []byte("x"))
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("CDN %s %s: %d %s, want a 4xx", c.method, c.path, resp.StatusCode, body)
		}
	}
	if resp, _ := do(t, noRedirect, "GET", s.URL+"/api/models/alice/base", "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("server unhealthy after the odd requests: %d", resp.StatusCode)
	}
}
