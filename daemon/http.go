package daemon

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

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
