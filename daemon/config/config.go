package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// Config is the whole daemon configuration. Treat it as read-only.
type Config struct {
	Hub         Hub      `mapstructure:"hub"`
	StateDir    string   `mapstructure:"state_dir"`
	CacheDir    string   `mapstructure:"cache_dir"`
	Schedule    string   `mapstructure:"schedule"`
	Listen      string   `mapstructure:"listen"`
	Concurrency int      `mapstructure:"concurrency"`
	Retry       Retry    `mapstructure:"retry"`
	MinFreeDisk ByteSize `mapstructure:"min_free_disk"`
	Cache       Cache    `mapstructure:"cache"`
	Log         Log      `mapstructure:"log"`
	Tracks      []Track  `mapstructure:"tracks"`

	// Path is the file the config was loaded from ("" when parsed from bytes).
	Path string `mapstructure:"-"`
}

// Hub holds how to reach the Hugging Face Hub. The token itself is never
// part of the config; see ResolveToken.
type Hub struct {
	// Endpoint is the Hub base URL, e.g. https://huggingface.co.
	Endpoint string `mapstructure:"endpoint"`
	// TokenFile is a path to a file holding the token (first line, trimmed).
	TokenFile string `mapstructure:"token_file"`
	// Token exists only so that a literal token is rejected with a clear
	// error instead of being silently accepted or reported as "unknown key".
	Token string `mapstructure:"token"`
}

// Retry configures per-job retries: a failed job is retried after
// min(BackoffBase*2^(attempt-1), BackoffMax) (with jitter), and parked
// after MaxAttempts failed attempts.
type Retry struct {
	MaxAttempts int           `mapstructure:"max_attempts"`
	BackoffBase time.Duration `mapstructure:"backoff_base"`
	BackoffMax  time.Duration `mapstructure:"backoff_max"`
}

// Cache bounds what the daemon keeps under cache_dir. Both are reloadable.
type Cache struct {
	// MaxSize caps the converter's caches (pair analyses and MLP operators
	// under cache_dir/convert): after every job the least recently used
	// pairs are removed until they fit. 0 means no cap.
	MaxSize ByteSize `mapstructure:"max_size"`
	// KeepBaseSnapshots turns off the removal of base-model snapshots that
	// no job needs any more (every snapshot is kept, as before).
	KeepBaseSnapshots bool `mapstructure:"keep_base_snapshots"`
}

// Log configures logging. Format is "text", "json" or "auto" (JSON under
// systemd, text otherwise); Level is debug, info, warn or error.
type Log struct {
	Format string `mapstructure:"format"`
	Level  string `mapstructure:"level"`
}

// Track is one base model lineage and the adapters that follow it.
type Track struct {
	Name       string        `mapstructure:"name"`
	Base       RepoRef       `mapstructure:"base"`
	Follow     Follow        `mapstructure:"follow"`
	Adapters   []AdapterRef  `mapstructure:"adapters"`
	DropinDirs []string      `mapstructure:"dropin_dirs"`
	Target     Target        `mapstructure:"target"`
	Convert    ConvertConfig `mapstructure:"convert"`
}

// RepoRef names a Hub model repo at a revision (branch, tag or commit).
type RepoRef struct {
	Repo     string `mapstructure:"repo"`
	Revision string `mapstructure:"revision"`
}

// Follow says how new base versions are found.
type Follow struct {
	// Commits follows new commits on base.revision (and on every successor or
	// discovered repo once it is known).
	Commits bool `mapstructure:"commits"`
	// Successors are repos that replace the base, in release order. Each one
	// that exists and was not migrated to yet becomes a new version.
	Successors []string `mapstructure:"successors"`
	// Discover finds new repos by author and name pattern. Optional.
	Discover *Discover `mapstructure:"discover"`
}

// Discover selects new base repos among an author's models by a regular
// expression on the repo name (the part after the slash).
type Discover struct {
	Author  string `mapstructure:"author"`
	Pattern string `mapstructure:"pattern"`
}

// AdapterRef is either a Hub repo at a revision or a local directory.
type AdapterRef struct {
	Repo     string `mapstructure:"repo"`
	Revision string `mapstructure:"revision"`
	Path     string `mapstructure:"path"`
}

// IsLocal reports whether the adapter is a local directory.
func (a AdapterRef) IsLocal() bool { return a.Path != "" }

// Target says where migrated adapters go. Exactly one of RepoTemplate,
// Branch and PR is set.
type Target struct {
	// RepoTemplate names a new repo per (adapter, new base), e.g.
	// "{adapter}-{base_name}"; see TemplateVars for the placeholders. Without
	// a slash the repo goes to Owner, or to the adapter repo's owner. A track
	// with several adapters or any drop-in dir must use {adapter}, so that
	// no two adapters push to one repo.
	RepoTemplate string `mapstructure:"repo_template"`
	// Owner is the namespace for templates without a slash.
	Owner string `mapstructure:"owner"`
	// Branch pushes to a branch of the adapter's own repo; placeholders as in
	// RepoTemplate, e.g. "lorasync/{base_name}".
	Branch string `mapstructure:"branch"`
	// PR opens a pull request on the adapter's own repo.
	PR bool `mapstructure:"pr"`
	// Private creates new target repos as private.
	Private bool `mapstructure:"private"`
}

// ConvertConfig is passed through to the converter (LoRASuite options; see
// docs/lorasuite-method.md). Defaults match package convert's.
type ConvertConfig struct {
	// LayerMap is "auto" (default: cka where both models can be run, else
	// linear), "cka" (from activations), "linear" (evenly spaced), "explicit"
	// (Layers) or "similarity" (SimilarityFile).
	LayerMap string `mapstructure:"layer_map"`
	// Calibration is a text file of calibration lines for cka (default: the
	// built-in set).
	Calibration string `mapstructure:"calibration"`
	// Layers is the explicit map for LayerMap "explicit": for each layer of
	// the shallower model, the layer of the deeper one (strictly increasing).
	Layers []int `mapstructure:"layers"`
	// SimilarityFile is a JSON array of L_old rows of L_new similarities,
	// for LayerMap "similarity".
	SimilarityFile string `mapstructure:"similarity_file"`
	// Transfer chooses W_x: "lstsq" (default) or "identity".
	Transfer string `mapstructure:"transfer"`
	// HeadTransfer is "lstsq" (default) or "gram" (the paper's formula).
	HeadTransfer string `mapstructure:"head_transfer"`
	// InputMap is "wx" (default, the paper's) or "pinv".
	InputMap string `mapstructure:"input_map"`
}

// Default returns the configuration defaults that apply before the file is
// decoded.
func Default() *Config {
	return &Config{
		Hub:         Hub{Endpoint: "https://huggingface.co"},
		StateDir:    "/var/lib/lorasync",
		CacheDir:    "/var/cache/lorasync",
		Schedule:    "@every 15m",
		Listen:      "127.0.0.1:9464",
		Concurrency: 2,
		Retry:       Retry{MaxAttempts: 5, BackoffBase: 30 * time.Second, BackoffMax: 30 * time.Minute},
		MinFreeDisk: 10 << 30,
		Log:         Log{Format: "auto", Level: "info"},
	}
}

// trackDefaults fills per-track defaults that cannot be expressed in Default
// because tracks are a list.
func (c *Config) trackDefaults() {
	for i := range c.Tracks {
		t := &c.Tracks[i]
		if t.Base.Revision == "" {
			t.Base.Revision = "main"
		}
		for j := range t.Adapters {
			if t.Adapters[j].Repo != "" && t.Adapters[j].Revision == "" {
				t.Adapters[j].Revision = "main"
			}
		}
		cv := &t.Convert
		if cv.LayerMap == "" {
			cv.LayerMap = "auto"
		}
		if cv.Transfer == "" {
			cv.Transfer = "lstsq"
		}
		if cv.HeadTransfer == "" {
			cv.HeadTransfer = "lstsq"
		}
		if cv.InputMap == "" {
			cv.InputMap = "wx"
		}
	}
}

// Load reads, strictly decodes and validates the file at path. Relative
// paths inside the file (state_dir, cache_dir, token_file, adapter paths,
// drop-in dirs) are resolved against the file's directory.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c, err := parse(data, filepath.Dir(abs))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.Path = abs
	return c, nil
}

// Parse decodes and validates YAML bytes; relative paths are resolved
// against baseDir.
func Parse(data []byte, baseDir string) (*Config, error) {
	c, err := parse(data, baseDir)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

func parse(data []byte, baseDir string) (*Config, error) {
	v := viper.NewWithOptions(viper.KeyDelimiter("::"))
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	c := Default()
	hook := mapstructure.ComposeDecodeHookFunc(
		byteSizeHook,
		mapstructure.StringToTimeDurationHookFunc(),
		mapstructure.StringToSliceHookFunc(","),
	)
	if err := v.UnmarshalExact(c, viper.DecodeHook(hook)); err != nil {
		return nil, cleanDecodeError(err)
	}
	c.trackDefaults()
	c.resolvePaths(baseDir)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// cleanDecodeError turns mapstructure's multi-line report into one line
// that still names each offending key.
func cleanDecodeError(err error) error {
	msg := err.Error()
	msg = strings.ReplaceAll(msg, "decoding failed due to the following error(s):\n\n", "")
	msg = strings.Join(strings.Fields(strings.ReplaceAll(msg, "\n", "; ")), " ")
	msg = strings.ReplaceAll(msg, "'' has invalid keys", "top level has invalid keys")
	return errors.New("decode: " + msg)
}

func (c *Config) resolvePaths(baseDir string) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) || baseDir == "" {
			return p
		}
		return filepath.Join(baseDir, p)
	}
	c.StateDir = abs(c.StateDir)
	c.CacheDir = abs(c.CacheDir)
	c.Hub.TokenFile = abs(c.Hub.TokenFile)
	for i := range c.Tracks {
		t := &c.Tracks[i]
		for j := range t.Adapters {
			t.Adapters[j].Path = abs(t.Adapters[j].Path)
		}
		for j := range t.DropinDirs {
			t.DropinDirs[j] = abs(t.DropinDirs[j])
		}
		t.Convert.SimilarityFile = abs(t.Convert.SimilarityFile)
		t.Convert.Calibration = abs(t.Convert.Calibration)
	}
}

// Track returns the track with the given name.
func (c *Config) Track(name string) (Track, bool) {
	for _, t := range c.Tracks {
		if t.Name == name {
			return t, true
		}
	}
	return Track{}, false
}

// Equal reports whether two tracks are configured identically; the daemon
// restarts a track's loop only when it changed.
func (t Track) Equal(u Track) bool { return reflect.DeepEqual(t, u) }
