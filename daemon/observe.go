package daemon

// How the daemon is observed: logs, Prometheus metrics, the health and
// metrics HTTP server, and sd_notify.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lorasync/lorasync/daemon/state"
)

// NewLogger returns the daemon's logger writing to w (stderr in the
// command). format is log.format: "json", "text", or "auto", which means
// JSON under systemd (JOURNAL_STREAM or INVOCATION_ID in the environment,
// read through getenv) and text otherwise. level is log.level.
func NewLogger(w io.Writer, format, level string, getenv func(string) string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log.level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "auto", "":
		if UnderSystemd(getenv) {
			return slog.New(slog.NewJSONHandler(w, opts)), nil
		}
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log.format %q: want auto, text or json", format)
}

// UnderSystemd reports whether the process runs as a systemd service.
func UnderSystemd(getenv func(string) string) bool {
	return getenv("JOURNAL_STREAM") != "" || getenv("INVOCATION_ID") != ""
}

// Metrics are the daemon's Prometheus metrics, registered on the injected
// registry (never the global one).
type Metrics struct {
	// Jobs counts jobs by state (pending, running, failed, parked, done,
	// superseded).
	Jobs *prometheus.GaugeVec
	// JobDuration observes attempt durations by outcome (done, failed,
	// parked, interrupted, superseded, orphaned).
	JobDuration *prometheus.HistogramVec
	// DownloadedBytes counts bytes fetched from the Hub (cache hits are 0).
	DownloadedBytes prometheus.Counter
	// Pushes counts results recorded, by kind: pushed, reconciled (found
	// on the Hub from an earlier attempt), or unchanged (a new adapter
	// revision with the files already migrated: nothing pushed).
	Pushes *prometheus.CounterVec
	// LastSuccessfulPoll is the Unix time of each track's last good poll.
	LastSuccessfulPoll *prometheus.GaugeVec
	// PollErrors counts failed polls by track.
	PollErrors *prometheus.CounterVec
	// ConfigReloadOK is 1 if the last config (re)load succeeded, else 0.
	ConfigReloadOK prometheus.Gauge
	// ConfigReloadTime is the Unix time of the last successful load.
	ConfigReloadTime prometheus.Gauge
	// CacheRemovedBytes counts bytes the cache collection freed, by kind:
	// base_snapshots (Hub cache) or convert (pair analyses, MLP operators).
	CacheRemovedBytes *prometheus.CounterVec
	// ConvertCacheBytes is the converter's cache size after the last
	// collection.
	ConvertCacheBytes prometheus.Gauge
}

// NewMetrics creates the metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Jobs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lorasync_jobs", Help: "Migration jobs by state.",
		}, []string{"state"}),
		JobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "lorasync_job_duration_seconds", Help: "Duration of job attempts, by outcome.",
			// Migrations take from seconds (small adapters, cached pair) to
			// hours (two large bases downloaded and analysed).
			Buckets: prometheus.ExponentialBuckets(1, 4, 9), // 1 s .. ~18 h
		}, []string{"outcome"}),
		DownloadedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lorasync_downloaded_bytes_total", Help: "Bytes downloaded from the Hub.",
		}),
		Pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lorasync_pushes_total", Help: "Migrated adapters recorded, by kind (pushed, reconciled).",
		}, []string{"kind"}),
		LastSuccessfulPoll: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lorasync_last_successful_poll_timestamp_seconds", Help: "Unix time of the last successful poll, by track.",
		}, []string{"track"}),
		PollErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lorasync_poll_errors_total", Help: "Failed polls, by track.",
		}, []string{"track"}),
		ConfigReloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lorasync_config_last_reload_successful", Help: "Whether the last configuration reload succeeded.",
		}),
		ConfigReloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lorasync_config_last_reload_success_timestamp_seconds", Help: "Unix time of the last successful configuration reload.",
		}),
		CacheRemovedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lorasync_cache_removed_bytes_total", Help: "Bytes freed by cache collection, by kind (base_snapshots, convert).",
		}, []string{"kind"}),
		ConvertCacheBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lorasync_convert_cache_bytes", Help: "Size of the converter's cache (pair analyses, MLP operators) after the last collection.",
		}),
	}
	for _, c := range []prometheus.Collector{m.Jobs, m.JobDuration, m.DownloadedBytes, m.Pushes,
		m.LastSuccessfulPoll, m.PollErrors, m.ConfigReloadOK, m.ConfigReloadTime, m.CacheRemovedBytes, m.ConvertCacheBytes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, s := range state.Statuses {
		m.Jobs.WithLabelValues(string(s))
	}
	for _, k := range []string{"pushed", "reconciled", "unchanged"} {
		m.Pushes.WithLabelValues(k)
	}
	for _, k := range []string{"base_snapshots", "convert"} {
		m.CacheRemovedBytes.WithLabelValues(k)
	}
	return m, nil
}

// refreshGauges recounts jobs by state from the database.
func (d *Daemon) refreshGauges() {
	var counts map[state.Status]int
	if err := d.store.View(func(tx *state.Tx) error {
		jobs, err := tx.Jobs("")
		counts = state.Counts(jobs)
		return err
	}); err != nil {
		d.storeFailed(err)
		return
	}
	d.storeErr.Store(nil)
	for s, n := range counts {
		d.metrics.Jobs.WithLabelValues(string(s)).Set(float64(n))
	}
	d.updateStatusFrom(counts)
}

// Handler serves:
//
//	/healthz  liveness: 200 while the main loop turns (it beats at least
//	          every 10 s); 503 when it has been stuck for over a minute.
//	          A restart helps a stuck process, so this is what a
//	          supervisor should act on.
//	/readyz   readiness: 200 once the track loops run and the state database
//	          answers; 503 with the reason otherwise (starting, stopping,
//	          state database errors). A restart does not fix these.
//	/metrics  Prometheus metrics from the daemon's registry.
func (d *Daemon) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", d.healthz)
	mux.HandleFunc("GET /readyz", d.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg}))
	return mux
}

// stuckAfter is how long the main loop may go without a turn before
// /healthz fails: six missed beats.
const stuckAfter = time.Minute

func (d *Daemon) healthz(w http.ResponseWriter, r *http.Request) {
	if hb := d.heartbeat.Load(); hb != 0 {
		if since := time.Since(time.Unix(0, hb)); since > stuckAfter {
			http.Error(w, fmt.Sprintf("main loop stuck for %s", since.Round(time.Second)), http.StatusServiceUnavailable)
			return
		}
	}
	fmt.Fprintln(w, "ok")
}

func (d *Daemon) readyz(w http.ResponseWriter, r *http.Request) {
	if !d.ready.Load() {
		http.Error(w, "not ready: starting or stopping", http.StatusServiceUnavailable)
		return
	}
	if msg := d.storeErr.Load(); msg != nil {
		http.Error(w, "not ready: state database: "+*msg, http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// notifier speaks sd_notify. Without systemd (no NOTIFY_SOCKET) every call
// is a no-op.
type notifier struct {
	mu         sync.Mutex
	lastStatus string
}

func newNotifier() *notifier { return &notifier{} }

func (n *notifier) send(state string) {
	sddaemon.SdNotify(false, state) // errors mean no systemd to tell: nothing to do
}

func (n *notifier) ready()    { n.send(sddaemon.SdNotifyReady) }
func (n *notifier) stopping() { n.send(sddaemon.SdNotifyStopping) }
func (n *notifier) watchdog() { n.send(sddaemon.SdNotifyWatchdog) }

// watchdogInterval is WatchdogSec when systemd asked for pings, else 0.
func (n *notifier) watchdogInterval() time.Duration {
	d, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return d
}

// status sends a one-line STATUS when it changed.
func (n *notifier) status(line string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if line == n.lastStatus {
		return
	}
	n.lastStatus = line
	n.send("STATUS=" + line)
}

// statusLine is the one-line STATUS: job counts and the newest poll.
func statusLine(counts map[state.Status]int, tracks int, lastPoll time.Time) string {
	s := fmt.Sprintf("%d tracks; jobs: %d running, %d pending, %d failed, %d parked, %d done",
		tracks, counts[state.Running], counts[state.Pending], counts[state.Failed], counts[state.Parked], counts[state.Done])
	if n := counts[state.Orphaned]; n > 0 {
		s += fmt.Sprintf(", %d orphaned (track or adapter removed)", n)
	}
	if !lastPoll.IsZero() {
		s += "; last poll " + lastPoll.UTC().Format(time.RFC3339)
	}
	return s
}

func (d *Daemon) updateStatusFrom(counts map[state.Status]int) {
	var last time.Time
	d.store.View(func(tx *state.Tx) error {
		ts, err := tx.Tracks()
		for _, t := range ts {
			if t.LastPollOK.After(last) {
				last = t.LastPollOK
			}
		}
		return err
	})
	d.notify.status(statusLine(counts, len(d.Config().Tracks), last))
}

func (d *Daemon) updateStatus() { d.refreshGauges() }

// httpServer is the optional health and metrics server.
type httpServer struct {
	srv *http.Server
	ln  net.Listener
}

func (d *Daemon) serveHTTP(addr string) (*httpServer, error) {
	if addr == "" {
		return &httpServer{}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	s := &httpServer{srv: &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second}, ln: ln}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("http server", "addr", addr, "err", err)
		}
	}()
	return s, nil
}

func (s *httpServer) addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

func (s *httpServer) shutdown() {
	if s.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
}
