package daemon

import (
	"log/slog"
	"path/filepath"

	"github.com/lorasync/lorasync/daemon/config"
	"github.com/lorasync/lorasync/hub"
)

// Backends builds the production Hub and converter behind the daemon's
// interfaces: a hub.Client for cfg.Hub with token (downloads in the hub
// cache layout under cache_dir/hub) and LoRASuite. progress says how
// downloads report progress.
func Backends(cfg *config.Config, token string, log *slog.Logger, progress hub.ProgressMode) (Hub, Converter, error) {
	c, err := hub.New(hub.Options{
		Endpoint: cfg.Hub.Endpoint,
		Token:    token,
		CacheDir: filepath.Join(cfg.CacheDir, "hub"),
		Logger:   log,
		Progress: progress,
	})
	if err != nil {
		return nil, nil, err
	}
	return NewHubClient(c), LoRASuite{Logger: log}, nil
}
