package daemon

import (
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/lorasync/lorasync/daemon/config"
)

// Reload re-reads the config file and, only if it parses and validates
// completely, applies it. On failure the running config stays and
// lorasync_config_last_reload_successful drops to 0. SIGHUP and file
// changes both come here; as their handlers have nobody to return an error
// to, Reload logs it, and returns it too for direct callers.
func (d *Daemon) Reload() error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.cfgPath == "" {
		return errors.New("daemon: no config file to reload")
	}
	sum, _ := fileSum(d.cfgPath)
	d.triedSum = sum
	cfg, err := config.Load(d.cfgPath)
	if err != nil {
		d.metrics.ConfigReloadOK.Set(0)
		d.log.Error("config reload failed; the running config stays", "file", d.cfgPath, "err", err)
		return err
	}
	old := d.Config()
	if keys := restartOnlyChanges(old, cfg); len(keys) > 0 {
		d.log.Warn("config keys changed that only take effect after a restart; their running values stay", "keys", keys)
		eff := *cfg // a private copy: the loaded config is never mutated
		eff.StateDir, eff.CacheDir, eff.Listen, eff.Hub, eff.Log = old.StateDir, old.CacheDir, old.Listen, old.Hub, old.Log
		cfg = &eff
	}
	d.cfg.Store(cfg)
	d.metrics.ConfigReloadOK.Set(1)
	d.metrics.ConfigReloadTime.Set(float64(d.clock.Now().Unix()))
	if err := d.applyTracks(cfg); err != nil {
		d.log.Error("apply reloaded tracks", "err", err)
	}
	d.log.Info("config reloaded", "file", d.cfgPath, "tracks", len(cfg.Tracks))
	if err := d.replan(); err != nil {
		d.log.Error("plan after reload", "err", err)
	}
	d.kick()
	return nil
}

// restartOnlyChanges lists keys whose new values the running daemon cannot
// apply: the state database, the HTTP listener, the logger and the Hub
// client (with its cache under cache_dir) are set up once.
func restartOnlyChanges(old, cur *config.Config) []string {
	var keys []string
	if old.StateDir != cur.StateDir {
		keys = append(keys, "state_dir")
	}
	if old.CacheDir != cur.CacheDir {
		keys = append(keys, "cache_dir")
	}
	if old.Listen != cur.Listen {
		keys = append(keys, "listen")
	}
	if !reflect.DeepEqual(old.Hub, cur.Hub) {
		keys = append(keys, "hub")
	}
	if old.Log != cur.Log {
		keys = append(keys, "log")
	}
	return keys
}

func fileSum(path string) ([32]byte, error) {
	if path == "" {
		return [32]byte{}, errors.New("no path")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(data), nil
}

// fileEvent is a debounced change: the config file's directory or a
// drop-in directory saw activity.
type fileEvent struct{ config, dropin bool }

// fileWatcher watches the config file's directory (editors replace files
// by rename, which a watch on the file itself would lose) and every
// drop-in directory and its sub-folders (a new adapter folder is created,
// then filled). Bursts are debounced into one event.
type fileWatcher struct {
	w      *fsnotify.Watcher
	events chan fileEvent
	done   chan struct{}
	// started is set once the initial watches are in place; later additions
	// (after a reload) re-plan (see watchDropins).
	started bool
}

// debounce lets an editor or a copy finish before the daemon reacts.
const debounce = 300 * time.Millisecond

func (d *Daemon) newFileWatcher() (*fileWatcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	fw := &fileWatcher{w: w, events: make(chan fileEvent, 1), done: make(chan struct{})}
	if d.cfgPath != "" {
		if err := w.Add(filepath.Dir(d.cfgPath)); err != nil {
			w.Close()
			return nil, err
		}
	}
	d.watchDropins(fw)
	fw.started = true
	go fw.run(d)
	return fw, nil
}

// watchDropins adds watches for the current config's drop-in dirs and
// their sub-folders. Adding an existing watch is a no-op; dirs no longer
// configured keep their watch until restart (their events cause only a
// harmless re-plan). When it starts watching a dir it re-plans once more:
// an adapter folder that appeared after the reload's plan but before the
// watch existed made no event, and would otherwise wait for the next poll.
func (d *Daemon) watchDropins(fw *fileWatcher) {
	added := false
	for _, tr := range d.Config().Tracks {
		for _, dir := range tr.DropinDirs {
			known := slices.Contains(fw.w.WatchList(), dir)
			if err := fw.w.Add(dir); err != nil {
				d.log.Warn("cannot watch drop-in dir (it is still scanned at every poll)", "dir", dir, "err", err)
				continue
			}
			added = added || !known
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if e.IsDir() {
					fw.w.Add(filepath.Join(dir, e.Name()))
				}
			}
		}
	}
	if added && fw.started {
		if err := d.replan(); err != nil {
			d.log.Error("plan after watching new drop-in dirs", "err", err)
		}
	}
}

func (fw *fileWatcher) run(d *Daemon) {
	var pending fileEvent
	var timer <-chan time.Time
	cfgDir := filepath.Dir(d.cfgPath)
	for {
		select {
		case <-fw.done:
			return
		case err, ok := <-fw.w.Errors:
			if !ok {
				return
			}
			d.log.Warn("file watcher", "err", err)
		case ev, ok := <-fw.w.Events:
			if !ok {
				return
			}
			if d.cfgPath != "" && filepath.Dir(ev.Name) == cfgDir {
				pending.config = true
			}
			if d.isDropinPath(ev.Name) {
				pending.dropin = true
				if ev.Has(fsnotify.Create) {
					if st, err := os.Stat(ev.Name); err == nil && st.IsDir() {
						fw.w.Add(ev.Name) // a new adapter folder: watch it fill
					}
				}
			}
			if pending.config || pending.dropin {
				timer = time.After(debounce)
			}
		case <-timer:
			timer = nil
			select {
			case fw.events <- pending:
				pending = fileEvent{}
			case <-fw.done:
				return
			}
		}
	}
}

func (fw *fileWatcher) close() {
	close(fw.done)
	fw.w.Close()
}

// isDropinPath reports whether p is a drop-in dir or inside one.
func (d *Daemon) isDropinPath(p string) bool {
	for _, tr := range d.Config().Tracks {
		for _, dir := range tr.DropinDirs {
			rel, err := filepath.Rel(dir, p)
			if err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
				return true
			}
		}
	}
	return false
}

// handleFileEvent reloads when the config file's content changed (by
// checksum, so touching the directory or rewriting identical bytes does
// nothing) and re-plans when a drop-in dir changed.
func (d *Daemon) handleFileEvent(ev fileEvent, fw *fileWatcher) {
	if ev.config {
		sum, err := fileSum(d.cfgPath)
		d.reloadMu.Lock()
		// Compare with the last content tried, valid or not: an invalid
		// edit is reported once, and reverting it reloads (and resets the
		// reload gauge) even though it equals the running config.
		changed := err == nil && sum != d.triedSum
		d.reloadMu.Unlock()
		if changed {
			d.log.Info("config file changed; reloading", "file", d.cfgPath)
			if d.Reload() == nil {
				d.watchDropins(fw)
			}
		}
	}
	if ev.dropin {
		if err := d.replan(); err != nil {
			d.log.Error("plan after drop-in change", "err", err)
		}
	}
}
