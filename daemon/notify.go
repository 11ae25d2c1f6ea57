package daemon

import (
	"fmt"
	"sync"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/lorasync/lorasync/daemon/state"
)

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
