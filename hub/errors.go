package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Sentinel errors. Every error returned by a Client call that concerns the Hub
// wraps one of these (through *Error), so callers test them with errors.Is.
var (
	// ErrRepoNotFound: the repository does not exist, or it is private or gated
	// and the caller is not allowed to see it (the Hub answers the same way).
	ErrRepoNotFound = errors.New("repository not found")
	// ErrRevisionNotFound: the repository exists but the branch, tag or commit does not.
	ErrRevisionNotFound = errors.New("revision not found")
	// ErrEntryNotFound: the revision exists but the file does not.
	ErrEntryNotFound = errors.New("entry not found")
	// ErrGatedRepo: the repository is gated and the token has not been granted access.
	ErrGatedRepo = errors.New("gated repository")
	// ErrUnauthorized: the token is invalid (401) or lacks the permission (403).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrRateLimited: the Hub answered 429. Retryable.
	ErrRateLimited = errors.New("rate limited")
	// ErrConflict: the resource changed underneath us (409, or 412 when a commit's
	// parentCommit is no longer the branch head).
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: a transient server or network failure (408, 5xx, connection
	// errors). Retryable.
	ErrUnavailable = errors.New("hub unavailable")
	// ErrBadRequest: the Hub rejected the request as malformed (400, 422).
	ErrBadRequest = errors.New("bad request")
	// ErrIntegrity: downloaded bytes do not match the advertised size or hash.
	ErrIntegrity = errors.New("integrity check failed")
	// ErrUnsafePath: a path from the network or the caller could escape the
	// cache or the repository (.., absolute, backslash, empty segment).
	ErrUnsafePath = errors.New("unsafe path")
	// ErrOffline: offline mode is on and the cache cannot answer the request.
	ErrOffline = errors.New("offline and not in cache")
	// ErrProtocol: the Hub answered something this client does not understand.
	ErrProtocol = errors.New("unexpected hub response")
)

// Error describes a failed Hub operation. Err is one of the sentinel errors
// above; Unwrap exposes it (and Cause, when set) to errors.Is and errors.As.
type Error struct {
	Op       string // what the client was doing: "repo info", "download", "commit", ...
	Repo     string // "org/name"
	Revision string // branch, tag or commit, when relevant
	Path     string // file path inside the repository, when relevant
	Status   int    // HTTP status, 0 for local or network errors
	Code     string // X-Error-Code header from the Hub, if any
	Message  string // server message (X-Error-Message or JSON "error"), token redacted
	// RetryAfter is the wait the server asked for (429 RateLimit or Retry-After), if any.
	RetryAfter time.Duration
	Err        error // sentinel kind
	Cause      error // underlying error (network, filesystem), if any
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("hub: ")
	b.WriteString(e.Op)
	if e.Repo != "" {
		b.WriteString(" ")
		b.WriteString(e.Repo)
		if e.Revision != "" {
			b.WriteString("@")
			b.WriteString(e.Revision)
		}
	}
	if e.Path != "" {
		b.WriteString(" ")
		b.WriteString(e.Path)
	}
	b.WriteString(":")
	// When the cause already names the kind (it wraps the same sentinel),
	// say it once.
	if e.Err != nil && (e.Cause == nil || !errors.Is(e.Cause, e.Err)) {
		b.WriteString(" ")
		b.WriteString(e.Err.Error())
	}
	if e.Status != 0 {
		fmt.Fprintf(&b, " (HTTP %d", e.Status)
		if e.Code != "" {
			b.WriteString(" ")
			b.WriteString(e.Code)
		}
		b.WriteString(")")
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Cause != nil {
		if e.Err != nil && !errors.Is(e.Cause, e.Err) || e.Message != "" || e.Status != 0 {
			b.WriteString(":")
		}
		b.WriteString(" ")
		b.WriteString(e.Cause.Error())
	}
	return b.String()
}

// Unwrap exposes the sentinel kind and the underlying cause.
func (e *Error) Unwrap() []error {
	errs := make([]error, 0, 2)
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	if e.Cause != nil {
		errs = append(errs, e.Cause)
	}
	return errs
}

// Retryable reports whether repeating the same request later may succeed.
func (e *Error) Retryable() bool {
	return e.Err == ErrRateLimited || e.Err == ErrUnavailable
}

// IsRetryable reports whether err is a transient Hub failure (rate limit,
// 408/5xx, network error) that a later identical request may overcome.
func IsRetryable(err error) bool {
	var he *Error
	if errors.As(err, &he) {
		return he.Retryable()
	}
	return false
}

// IsPermanent reports whether err is a Hub failure that retrying will not fix
// (not found, unauthorized, conflict, integrity, bad input). Context
// cancellation is neither retryable nor permanent.
func IsPermanent(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var he *Error
	if errors.As(err, &he) {
		return !he.Retryable()
	}
	return false
}

// errorBodyLimit bounds how much of an error body we read for its message.
const errorBodyLimit = 64 << 10

// responseError turns a non-2xx response into an *Error. It reads (a bounded
// part of) the body and closes it. The kind follows huggingface_hub's
// hf_raise_for_status: X-Error-Code first, then the status.
func (c *Client) responseError(resp *http.Response, op, repo, rev, path string) *Error {
	defer resp.Body.Close()
	e := &Error{Op: op, Repo: repo, Revision: rev, Path: path, Status: resp.StatusCode}
	e.Code = resp.Header.Get("X-Error-Code")
	msg := resp.Header.Get("X-Error-Message")
	body, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
	if msg == "" {
		var j struct {
			Error json.RawMessage `json:"error"`
		}
		if json.Unmarshal(body, &j) == nil && len(j.Error) > 0 {
			var s string
			if json.Unmarshal(j.Error, &s) == nil {
				msg = s
			} else {
				msg = string(j.Error)
			}
		} else if len(body) > 0 && len(body) < 512 {
			msg = strings.TrimSpace(string(body))
		}
	}
	e.Message = c.redact(msg)
	e.Err = classify(resp.StatusCode, e.Code, msg, path)
	if e.Err == ErrRateLimited || e.Err == ErrUnavailable {
		e.RetryAfter, _ = retryAfter(resp.Header, resp.StatusCode)
	}
	return e
}

// invalidCredentials is the message the Hub sends with a 401 for an unknown
// token, as opposed to a 401 for an anonymous request to a hidden repo.
const invalidCredentials = "Invalid credentials in Authorization header"

// classify maps status and X-Error-Code to a sentinel.
func classify(status int, code, msg, path string) error {
	switch code {
	case "RevisionNotFound":
		return ErrRevisionNotFound
	case "EntryNotFound":
		return ErrEntryNotFound
	case "GatedRepo":
		return ErrGatedRepo
	case "RepoNotFound":
		return ErrRepoNotFound
	}
	switch {
	case status == http.StatusUnauthorized && msg != invalidCredentials:
		// Private, gated and missing repos all look like this to anonymous callers.
		return ErrRepoNotFound
	case status == http.StatusUnauthorized, status == http.StatusForbidden:
		return ErrUnauthorized
	case status == http.StatusNotFound && path != "":
		return ErrEntryNotFound
	case status == http.StatusNotFound:
		return ErrRepoNotFound
	case status == http.StatusConflict, status == http.StatusPreconditionFailed:
		return ErrConflict
	case status == http.StatusTooManyRequests:
		return ErrRateLimited
	case status == http.StatusRequestTimeout, status >= 500:
		return ErrUnavailable
	case status == http.StatusBadRequest, status == http.StatusUnprocessableEntity:
		return ErrBadRequest
	}
	return ErrProtocol
}

// redact removes the token from s, in case a server or proxy echoes it.
func (c *Client) redact(s string) string {
	if c == nil || c.token == "" || s == "" {
		return s
	}
	return strings.ReplaceAll(s, c.token, "[redacted]")
}
