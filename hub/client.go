package hub

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultEndpoint is the public Hub.
const DefaultEndpoint = "https://huggingface.co"

// ProgressMode selects how downloads report progress.
type ProgressMode int

const (
	// ProgressAuto draws a bar when the progress writer is a terminal and
	// logs periodic structured progress records otherwise.
	ProgressAuto ProgressMode = iota
	// ProgressOff reports nothing.
	ProgressOff
	// ProgressBar always draws a bar on ProgressOutput.
	ProgressBar
	// ProgressLog always logs periodic progress records.
	ProgressLog
)

// Options configure a Client. The zero value talks anonymously to the public
// Hub with the default cache; OptionsFromEnv reads the usual HF_* variables.
type Options struct {
	Endpoint string // default DefaultEndpoint; a trailing "/" is ignored
	Token    string // "hf_..." user access token; never logged
	CacheDir string // the hub cache ($HF_HUB_CACHE); default ~/.cache/huggingface/hub
	Offline  bool   // no network at all: answer from the cache or fail with ErrOffline

	HTTPClient *http.Client // default: no overall timeout, header timeout = IdleTimeout
	Logger     *slog.Logger // default: discard

	// Concurrency bounds parallel file transfers in Snapshot and Upload (default 8).
	Concurrency int

	Progress         ProgressMode
	ProgressOutput   io.Writer     // bar and TTY detection target; default os.Stderr
	ProgressInterval time.Duration // period of progress log records; default 5 s

	// IdleTimeout aborts (and then resumes) a download whose body delivers
	// no bytes for this long; default 60 s. The default HTTP client also
	// waits at most this long for response headers.
	IdleTimeout time.Duration

	// TrustCache skips re-hashing blobs already in the cache. By default a
	// cached blob is verified (size, then sha256 or git-sha1) before use, and
	// refetched if it does not match.
	TrustCache bool

	UserAgent  string // default "lorasync-hub/1"
	Clock      Clock  // default wall clock; tests inject one to observe retry waits
	MaxRetries int    // retries after the first attempt; default 5, negative means none
}

// OptionsFromEnv builds Options from the environment variables the official
// clients read: HF_ENDPOINT, HF_TOKEN, HUGGING_FACE_HUB_TOKEN, HF_TOKEN_PATH
// (default $HF_HOME/token), HF_HOME (default ~/.cache/huggingface),
// HF_HUB_CACHE (default $HF_HOME/hub) and HF_HUB_OFFLINE.
func OptionsFromEnv() (Options, error) {
	var o Options
	o.Endpoint = strings.TrimRight(os.Getenv("HF_ENDPOINT"), "/")

	home := os.Getenv("HF_HOME")
	if home == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			h, err := os.UserHomeDir()
			if err != nil {
				return o, fmt.Errorf("hub: HF_HOME unset and no home directory: %w", err)
			}
			base = filepath.Join(h, ".cache")
		}
		home = filepath.Join(base, "huggingface")
	}
	home = expandHome(home)
	o.CacheDir = os.Getenv("HF_HUB_CACHE")
	if o.CacheDir == "" {
		o.CacheDir = os.Getenv("HUGGINGFACE_HUB_CACHE") // legacy name, still honoured by Python
	}
	if o.CacheDir == "" {
		o.CacheDir = filepath.Join(home, "hub")
	}
	o.CacheDir = expandHome(o.CacheDir)

	o.Token = strings.TrimSpace(os.Getenv("HF_TOKEN"))
	if o.Token == "" {
		o.Token = strings.TrimSpace(os.Getenv("HUGGING_FACE_HUB_TOKEN"))
	}
	if o.Token == "" {
		p := os.Getenv("HF_TOKEN_PATH")
		if p == "" {
			p = filepath.Join(home, "token")
		}
		b, err := os.ReadFile(expandHome(p))
		switch {
		case err == nil:
			o.Token = strings.TrimSpace(string(b))
		case !errors.Is(err, os.ErrNotExist):
			return o, fmt.Errorf("hub: read token file %s: %w", p, err)
		}
	}
	o.Offline = envTrue(os.Getenv("HF_HUB_OFFLINE"))
	return o, nil
}

// envTrue follows huggingface_hub's _is_true: 1, ON, YES, TRUE (any case).
func envTrue(v string) bool {
	switch strings.ToUpper(strings.TrimSpace(v)) {
	case "1", "ON", "YES", "TRUE":
		return true
	}
	return false
}

func expandHome(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if h, err := os.UserHomeDir(); err == nil {
			return filepath.Join(h, p[1:])
		}
	}
	return p
}

// Client talks to one Hub endpoint and keeps files in one cache directory.
// It is safe for concurrent use.
type Client struct {
	endpoint    *url.URL
	token       string
	cacheDir    string
	offline     bool
	http        *http.Client // follows redirects, drops Authorization across hosts
	noRedirect  *http.Client // returns redirects to the caller
	log         *slog.Logger
	concurrency int
	progress    ProgressMode
	progressOut io.Writer
	progressInt time.Duration
	trustCache  bool
	idle        time.Duration
	userAgent   string
	clock       Clock
	maxRetries  int
}

// New returns a Client for o. It fails on a malformed endpoint or a relative
// cache directory it cannot make absolute.
func New(o Options) (*Client, error) {
	ep := strings.TrimRight(o.Endpoint, "/")
	if ep == "" {
		ep = DefaultEndpoint
	}
	u, err := url.Parse(ep)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("hub: endpoint %q: want an absolute http(s) URL", ep)
	}
	c := &Client{
		endpoint:    u,
		token:       o.Token,
		offline:     o.Offline,
		log:         o.Logger,
		concurrency: o.Concurrency,
		progress:    o.Progress,
		progressOut: o.ProgressOutput,
		progressInt: o.ProgressInterval,
		trustCache:  o.TrustCache,
		idle:        o.IdleTimeout,
		userAgent:   o.UserAgent,
		clock:       o.Clock,
		maxRetries:  o.MaxRetries,
	}
	if o.CacheDir == "" {
		env, err := OptionsFromEnv()
		if err != nil {
			return nil, err
		}
		o.CacheDir = env.CacheDir
	}
	if c.cacheDir, err = filepath.Abs(o.CacheDir); err != nil {
		return nil, fmt.Errorf("hub: cache dir %q: %w", o.CacheDir, err)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.concurrency <= 0 {
		c.concurrency = 8
	}
	if c.progressOut == nil {
		c.progressOut = os.Stderr
	}
	if c.progressInt <= 0 {
		c.progressInt = 5 * time.Second
	}
	if c.userAgent == "" {
		c.userAgent = "lorasync-hub/1"
	}
	if c.clock == nil {
		c.clock = realClock{}
	}
	switch {
	case c.maxRetries == 0:
		c.maxRetries = defaultMaxRetries
	case c.maxRetries < 0:
		c.maxRetries = 0
	}
	if c.idle <= 0 {
		c.idle = 60 * time.Second
	}
	base := o.HTTPClient
	if base == nil {
		base = defaultHTTPClient(c.idle, c.concurrency)
	}
	follow := *base
	follow.CheckRedirect = dropAuthAcrossHosts
	c.http = &follow
	manual := *base
	manual.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.noRedirect = &manual
	return c, nil
}

// defaultHTTPClient is http.DefaultTransport with a bound on the wait for
// response headers and enough idle connections for the transfer workers
// (the stock 2 per host would reconnect constantly).
func defaultHTTPClient(headerTimeout time.Duration, workers int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = headerTimeout
	t.MaxIdleConnsPerHost = max(workers, 2) * 2
	return &http.Client{Transport: t}
}

// Endpoint returns the Hub base URL without a trailing slash.
func (c *Client) Endpoint() string { return c.endpoint.String() }

// CacheDir returns the absolute hub cache directory.
func (c *Client) CacheDir() string { return c.cacheDir }

// Offline reports whether the client refuses all network access.
func (c *Client) Offline() bool { return c.offline }

// dropAuthAcrossHosts follows up to 10 redirects and removes the
// Authorization header whenever a hop leaves the original host (the CDN and
// presigned storage URLs must never see the Hub token) or goes from https
// to plain http. net/http already
// does this for unrelated domains; this also covers a changed port and
// subdomains, which net/http would trust.
func dropAuthAcrossHosts(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	// Another host (a port change included), or a downgrade from https to
	// plain http on the same host (the token would travel in clear text).
	// net/http copies the original headers again on every hop, so each hop
	// is judged against the original request.
	first := via[0].URL
	if req.URL.Host != first.Host || (first.Scheme == "https" && req.URL.Scheme != "https") {
		req.Header.Del("Authorization")
	}
	return nil
}

// sameHost reports whether u is on the endpoint's host (scheme and port included).
func (c *Client) sameHost(u *url.URL) bool {
	return strings.EqualFold(u.Scheme, c.endpoint.Scheme) && strings.EqualFold(u.Host, c.endpoint.Host)
}
