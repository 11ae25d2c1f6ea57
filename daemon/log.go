package daemon

import (
	"fmt"
	"io"
	"log/slog"
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
