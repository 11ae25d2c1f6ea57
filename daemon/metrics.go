package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lorasync/lorasync/daemon/state"
)

// Metrics are the daemon's Prometheus metrics, registered on the injected
// registry (never the global one).
type Metrics struct {
	// Jobs counts jobs by state (pending, running, failed, parked, done).
	Jobs *prometheus.GaugeVec
	// JobDuration observes attempt durations by outcome (done, failed,
	// parked, interrupted).
	JobDuration *prometheus.HistogramVec
	// DownloadedBytes counts bytes fetched from the Hub (cache hits are 0).
	DownloadedBytes prometheus.Counter
	// Pushes counts results recorded, by kind: pushed, or reconciled (found
	// on the Hub from an earlier attempt).
	Pushes *prometheus.CounterVec
	// LastSuccessfulPoll is the Unix time of each track's last good poll.
	LastSuccessfulPoll *prometheus.GaugeVec
	// PollErrors counts failed polls by track.
	PollErrors *prometheus.CounterVec
	// ConfigReloadOK is 1 if the last config (re)load succeeded, else 0.
	ConfigReloadOK prometheus.Gauge
	// ConfigReloadTime is the Unix time of the last successful load.
	ConfigReloadTime prometheus.Gauge
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
	}
	for _, c := range []prometheus.Collector{m.Jobs, m.JobDuration, m.DownloadedBytes, m.Pushes,
		m.LastSuccessfulPoll, m.PollErrors, m.ConfigReloadOK, m.ConfigReloadTime} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, s := range state.Statuses {
		m.Jobs.WithLabelValues(string(s))
	}
	for _, k := range []string{"pushed", "reconciled"} {
		m.Pushes.WithLabelValues(k)
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
