// Package daemon runs lorasync unattended: it watches base-model repos on
// the Hub, notices new versions, migrates every registered adapter to them
// and pushes the results, without ever losing track of what it did.
//
// The moving parts, one file each:
//
//   - watch.go: one loop per track (hash-derived start offset, cron
//     schedule) that discovers new base versions: new commits on the
//     tracked revision, successor repos appearing, repos matching an author
//     and name pattern.
//   - plan.go and planner.go: desired jobs = registered adapters at their
//     current revision x latest base versions; missing ones are created, in
//     the same transaction that records the versions, and waiting jobs for
//     an older base commit or adapter revision are superseded, as are those
//     of an older base repo whose migration goes to the same target branch
//     as a newer one's (a target without {base_name}): the target ends on
//     the newest base's migration. Waiting jobs of tracks or adapters
//     removed from the config are orphaned (never run, counted apart) and
//     adopted again when they come back; a running one is orphaned at its
//     last check before the push.
//   - revisions.go: an adapter's revision is its Hub commit or a content
//     hash of its local directory (stat-memoised), resolved at every poll,
//     so a retrained adapter is migrated again and unchanged content never
//     is.
//   - dispatch.go: a bounded worker pool (config concurrency) that runs
//     runnable jobs, retries failures with backoff (jittered, capped, on an
//     injected Clock) and parks a job after retry.max_attempts or at once
//     on a Permanent error; one bad adapter never blocks the others. Two
//     jobs that push to one branch never run at once; a running job that
//     was superseded meanwhile is stopped when another waits for its
//     branch.
//   - pipeline.go: resolve -> download (free disk checked first) -> pair
//     analysis + migrate (Converter) -> check output -> push -> record.
//   - provenance.go: lorasync.json + model card; before every push the
//     target is searched for a provenance record of the same migration, so
//     a crash between push and record never causes a second push.
//   - privacy.go: nothing pushed names a local directory (a local adapter
//     is published as "local:<name>" and its content hash), checked once
//     more on the files and commit text before every push.
//   - gc.go, gc_hub.go, gc_remove.go: after every job, base snapshots no
//     job needs leave the hub cache (in an order that keeps it readable
//     whenever the process dies, the next collection finishing a killed
//     one) and the converter's caches are pruned to cache.max_size.
//   - reload.go: one reloadConfig, triggered by SIGHUP and by fsnotify on
//     the config file's directory; drop-in directories are watched too.
//   - observe.go: slog setup (JSON under systemd), Prometheus metrics on an
//     injected registry, /healthz, /readyz and /metrics, sd_notify
//     READY/STATUS/WATCHDOG/STOPPING.
//   - daemon.go: New, Run (long-running), RunOnce (one pass, or a dry run),
//     track loop management and shutdown; a start first recovers what a
//     killed process left (running jobs, work directories).
//
// The daemon depends on the Hub and on the converter only through the small
// interfaces Hub and Converter defined here; the command wires hub.Client
// and convert.Convert to them. The state lives in package daemon/state, the
// configuration in package daemon/config.
package daemon
