package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
)

// call describes one logical HTTP exchange. The same call may be sent several
// times by the retry loop, so its body is produced by a function.
type call struct {
	method string
	url    string
	header http.Header
	// body returns a fresh reader for each attempt and its exact length
	// (bodies are never chunked: presigned storage refuses chunked uploads).
	body func() (io.Reader, int64, error)
	// auth sends the Hub token. Only set for requests to the endpoint host.
	auth bool
	// noFollow returns 3xx responses instead of following them.
	noFollow bool
	// noRetry sends the request once (commit POSTs: see commitWithRecovery).
	noRetry bool

	// What the call is about, for errors.
	op, repo, rev, path string
}

// jsonBody returns a body function for v encoded as JSON.
func jsonBody(v any) (func() (io.Reader, int64, error), error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return bytesBody(b), nil
}

func bytesBody(b []byte) func() (io.Reader, int64, error) {
	return func() (io.Reader, int64, error) { return bytes.NewReader(b), int64(len(b)), nil }
}

// apiURL joins the endpoint with an already escaped path and a query.
func (c *Client) apiURL(escapedPath string, q url.Values) string {
	s := c.endpoint.String() + escapedPath
	if len(q) > 0 {
		s += "?" + q.Encode()
	}
	return s
}

// newRequest builds one attempt of cl.
func (c *Client) newRequest(ctx context.Context, cl *call) (*http.Request, error) {
	var body io.Reader
	var n int64
	if cl.body != nil {
		var err error
		if body, n, err = cl.body(); err != nil {
			return nil, err
		}
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, cl.url, body)
	if err != nil {
		return nil, err
	}
	if cl.body != nil {
		req.ContentLength = n
		if n == 0 {
			req.Body = http.NoBody
		}
		req.GetBody = func() (io.ReadCloser, error) {
			r, _, err := cl.body()
			if err != nil {
				return nil, err
			}
			return io.NopCloser(r), nil
		}
	}
	for k, vs := range cl.header {
		req.Header[k] = vs
	}
	req.Header.Set("User-Agent", c.userAgent)
	if cl.auth && c.token != "" && c.sameHost(req.URL) {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// do sends cl, retrying transient failures (408, 429, 5xx and network
// errors) with the package backoff, and returns the first response with any
// other status (the caller checks it) or the final error. A retryable status
// that exhausts the retries is returned as an *Error.
func (c *Client) do(ctx context.Context, cl *call) (*http.Response, error) {
	if c.offline {
		return nil, &Error{Op: cl.op, Repo: cl.repo, Revision: cl.rev, Path: cl.path, Err: ErrOffline,
			Message: "HF_HUB_OFFLINE is set: no network access"}
	}
	hc := c.http
	if cl.noFollow {
		hc = c.noRedirect
	}
	bo := c.newBackoff()
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		req, err := c.newRequest(ctx, cl)
		if err != nil {
			return nil, &Error{Op: cl.op, Repo: cl.repo, Revision: cl.rev, Path: cl.path, Err: ErrProtocol, Cause: err}
		}
		resp, err := hc.Do(req)
		var failed *Error
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			failed = &Error{Op: cl.op, Repo: cl.repo, Revision: cl.rev, Path: cl.path, Err: ErrUnavailable,
				Cause: scrubURLError(err)}
			if cl.noRetry || !retryableNetErr(ctx, err) {
				return nil, failed
			}
		case retryableStatus(resp.StatusCode) && !cl.noRetry:
			failed = c.responseError(resp, cl.op, cl.repo, cl.rev, cl.path)
		default:
			return resp, nil
		}
		if bo.exhausted() {
			return nil, failed
		}
		c.log.LogAttrs(ctx, slog.LevelWarn, "hub request failed, retrying",
			slog.String("op", cl.op), slog.String("method", cl.method), slog.String("url", redactURL(cl.url)),
			slog.String("error", failed.Error()), slog.Int("retry", bo.retries+1), slog.Int("max_retries", bo.max))
		if _, err := bo.wait(ctx, failed.RetryAfter); err != nil {
			return nil, err
		}
	}
}

// check returns resp if it is 2xx and an *Error otherwise (closing the body).
func (c *Client) check(resp *http.Response, cl *call) (*http.Response, error) {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	return nil, c.responseError(resp, cl.op, cl.repo, cl.rev, cl.path)
}

// doJSON sends cl, requires a 2xx answer and decodes its JSON body into out
// (out may be nil). It returns the response headers.
func (c *Client) doJSON(ctx context.Context, cl *call, out any) (http.Header, error) {
	resp, err := c.do(ctx, cl)
	if err != nil {
		return nil, err
	}
	if _, err := c.check(resp, cl); err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return nil, &Error{Op: cl.op, Repo: cl.repo, Revision: cl.rev, Path: cl.path, Status: resp.StatusCode,
				Err: ErrProtocol, Cause: fmt.Errorf("decode JSON: %w", err)}
		}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, errorBodyLimit))
	return resp.Header, nil
}

// scrubURLError drops the query string (presigned signatures) from a
// *url.Error's URL before it ends up in an error message.
func scrubURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		cp := *ue
		cp.URL = redactURL(ue.URL)
		return &cp
	}
	return err
}

// redactURL removes the query and any userinfo from a URL for logs and errors.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<unparsable url>"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "…"
	}
	return u.String()
}

// escapeRev escapes a revision as one path segment ("refs/pr/1" ->
// "refs%2Fpr%2F1"), as Python's quote(revision, safe="").
func escapeRev(rev string) string { return url.PathEscape(rev) }

// escapePath escapes a repository file path, keeping its slashes.
func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}
