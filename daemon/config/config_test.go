package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadGood(t *testing.T) {
	c, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.Abs("testdata")
	if c.Path != filepath.Join(dir, "good.yaml") {
		t.Errorf("Path = %q", c.Path)
	}
	// Relative paths resolve against the config file's directory.
	if want := filepath.Join(dir, "state"); c.StateDir != want {
		t.Errorf("StateDir = %q, want %q", c.StateDir, want)
	}
	if want := filepath.Join(dir, "secrets/hf_token"); c.Hub.TokenFile != want {
		t.Errorf("TokenFile = %q, want %q", c.Hub.TokenFile, want)
	}
	if c.Concurrency != 3 || c.Retry.MaxAttempts != 4 || c.Retry.BackoffBase != 10*time.Second || c.Retry.BackoffMax != 5*time.Minute {
		t.Errorf("scalars: %+v %+v", c.Concurrency, c.Retry)
	}
	if c.MinFreeDisk != 20<<30 {
		t.Errorf("MinFreeDisk = %d, want 20GiB", c.MinFreeDisk)
	}
	if c.Cache.MaxSize != 50e9 || !c.Cache.KeepBaseSnapshots {
		t.Errorf("Cache = %+v, want max_size 50GB and keep_base_snapshots", c.Cache)
	}
	if len(c.Tracks) != 2 {
		t.Fatalf("tracks = %d", len(c.Tracks))
	}
	q := c.Tracks[0]
	if q.Base.Revision != "main" {
		t.Errorf("default base revision = %q", q.Base.Revision)
	}
	wantAdapters := []AdapterRef{
		{Repo: "acme/qwen-math-lora", Revision: "main"},
		{Repo: "acme/qwen-sql-lora", Revision: "v2"},
		{Path: filepath.Join(dir, "adapters/local-one")},
	}
	if !reflect.DeepEqual(q.Adapters, wantAdapters) {
		t.Errorf("adapters = %+v", q.Adapters)
	}
	if q.Follow.Discover == nil || q.Follow.Discover.Pattern != `^Qwen3\.5-` {
		t.Errorf("discover = %+v", q.Follow.Discover)
	}
	if !reflect.DeepEqual(q.Convert, ConvertConfig{LayerMap: "linear", Transfer: "lstsq", HeadTransfer: "gram", InputMap: "wx"}) {
		t.Errorf("convert = %+v", q.Convert)
	}
	if !q.Target.Private || q.Target.Owner != "acme-migrated" {
		t.Errorf("target = %+v", q.Target)
	}
	// Defaults survive for keys the file does not set.
	if c.Tracks[1].Convert.LayerMap != "auto" || c.Tracks[1].Convert.InputMap != "wx" || c.Log.Level != "info" {
		t.Errorf("defaults lost: %+v %+v", c.Tracks[1].Convert, c.Log)
	}
}

// The root config.yaml is the documented example of every key: it must load.
func TestRootExampleLoads(t *testing.T) {
	if _, err := os.Stat("../../config.yaml"); err != nil {
		t.Fatalf("root config.yaml missing: %v", err)
	}
	if _, err := Load("../../config.yaml"); err != nil {
		t.Fatal(err)
	}
}

// The README's short config example must pass the same validation as a
// real file: readers copy it.
func TestReadmeExampleLoads(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "```yaml\n")
	block, _, closed := strings.Cut(rest, "```")
	if !ok || !closed {
		t.Fatal("README.md has no ```yaml block")
	}
	if _, err := Parse([]byte(block), t.TempDir()); err != nil {
		t.Fatalf("README's yaml example: %v", err)
	}
}

func TestBadConfigs(t *testing.T) {
	cases := map[string]string{
		"literal-token":         "hub.token: a literal token is not allowed",
		"unknown-key":           "'tracks[0].adapters[0]' has invalid keys: revison",
		"unknown-top":           "top level has invalid keys: schedul",
		"bad-adapter-repo":      "tracks[1].adapters[0].repo: want owner/name",
		"bad-schedule":          "schedule: invalid spec",
		"bad-duration":          "backoff_base",
		"bad-size":              "unknown unit",
		"two-targets":           "tracks[0].target: set exactly one of",
		"follow-nothing":        "tracks[0].follow: nothing to follow",
		"follow-commit-pinned":  "tracks[0].follow.commits: base.revision",
		"bad-pattern":           "tracks[0].follow.discover.pattern: invalid regular expression",
		"local-pr":              "tracks[0].target.pr: local and drop-in adapters",
		"local-no-owner":        "tracks[0].target.owner",
		"unknown-placeholder":   "tracks[0].target.repo_template: unknown placeholder {owner}",
		"dup-track":             "tracks[1].name: duplicate track name",
		"bad-enum":              `tracks[0].convert.head_transfer: must be one of lstsq, gram, got "magic"`,
		"explicit-no-layers":    "tracks[0].convert.layers",
		"similarity-no-file":    "tracks[0].convert.similarity_file",
		"no-tracks":             "tracks: at least one track",
		"concurrency-zero":      "concurrency: must be between 1 and 64",
		"backoff-inverted":      "retry.backoff_max",
		"cache-negative":        "cache.max_size: must not be negative",
		"not-yaml":              "parse YAML",
		"endpoint-credentials":  "hub.endpoint: must not carry credentials",
		"endpoint-no-host":      "hub.endpoint: must be an http(s) URL with a host",
		"endpoint-query":        "hub.endpoint: must not carry a query",
		"shared-target":         "tracks[0].target.repo_template: must contain {adapter}",
		"dropin-shared-target":  "tracks[0].target.repo_template: must contain {adapter}",
		"target-collision":      `tracks[0].adapters[1]: pushes to the same target as tracks[0].adapters[0] ("acme/lora-{base_name}")`,
		"branch-collision":      `tracks[0].adapters[1]: pushes to the same target as tracks[0].adapters[0] ("x/lora branch lorasync/{base_name}")`,
		"cross-track-collision": `tracks[1].adapters[0]: pushes to the same target as tracks[0].adapters[0] ("acme/lora-latest")`,
	}
	files, _ := filepath.Glob("testdata/*.bad.yaml")
	if len(files) != len(cases) {
		t.Errorf("%d bad files but %d cases: keep the table and testdata in sync", len(files), len(cases))
	}
	for name, want := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("testdata", name+".bad.yaml")
			c, err := Load(path)
			if err == nil {
				t.Fatalf("Load(%s) = %+v, want an error containing %q", path, c, want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q\ndoes not contain %q", err, want)
			}
			if !strings.Contains(err.Error(), name+".bad.yaml") {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestLiteralTokenNotEchoed(t *testing.T) {
	_, err := Load("testdata/literal-token.bad.yaml")
	if err == nil || strings.Contains(err.Error(), "hf_abcdef") {
		t.Fatalf("error must reject and not echo the token: %v", err)
	}
}

// Credentials smuggled into the endpoint URL are refused without being echoed:
// the endpoint is printed by check and logged by the daemon.
func TestEndpointSecretNotEchoed(t *testing.T) {
	for _, name := range []string{"endpoint-credentials", "endpoint-query"} {
		_, err := Load(filepath.Join("testdata", name+".bad.yaml"))
		if err == nil || strings.Contains(err.Error(), "hf_secretsecret") {
			t.Errorf("%s: error must reject and not echo the secret: %v", name, err)
		}
	}
}

func TestResolveToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tok")
	os.WriteFile(file, []byte("hf_fromfile\n"), 0o600)
	creds := filepath.Join(dir, "creds")
	os.Mkdir(creds, 0o700)
	os.WriteFile(filepath.Join(creds, "hf_token"), []byte("  hf_fromcred  \n"), 0o600)
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	cases := []struct {
		name      string
		tokenFile string
		env       map[string]string
		want      string
		source    string
	}{
		{"file wins", file, map[string]string{"CREDENTIALS_DIRECTORY": creds, "HF_TOKEN": "hf_env"}, "hf_fromfile", "file " + file},
		{"credential next", "", map[string]string{"CREDENTIALS_DIRECTORY": creds, "HF_TOKEN": "hf_env"}, "hf_fromcred", "systemd credential hf_token"},
		{"credential dir without hf_token", "", map[string]string{"CREDENTIALS_DIRECTORY": dir + "/none", "HF_TOKEN": "hf_env"}, "hf_env", "environment HF_TOKEN"},
		{"none", "", map[string]string{}, "", "none"},
	}
	for _, tc := range cases {
		c := &Config{Hub: Hub{TokenFile: tc.tokenFile}}
		tok, src, err := c.ResolveToken(env(tc.env))
		if err != nil || tok != tc.want || string(src) != tc.source {
			t.Errorf("%s: got (%q, %q, %v), want (%q, %q)", tc.name, tok, src, err, tc.want, tc.source)
		}
	}
	c := &Config{Hub: Hub{TokenFile: filepath.Join(dir, "missing")}}
	if _, _, err := c.ResolveToken(env(nil)); err == nil || !strings.Contains(err.Error(), "hub.token_file") {
		t.Errorf("missing token file: %v", err)
	}
}

func TestParseByteSize(t *testing.T) {
	cases := map[string]ByteSize{"1024": 1024, "1KiB": 1024, "1kb": 1000, "1.5GiB": 3 << 29, "10 GB": 10e9, "0": 0}
	for in, want := range cases {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "GiB", "-1", "1 parsec", "1e9"} {
		if _, err := ParseByteSize(bad); err == nil {
			t.Errorf("ParseByteSize(%q): want an error", bad)
		}
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"adapter": "math-lora", "base_name": "Qwen2.5-3B", "adapter_owner": "acme"}
	got, err := Expand("{adapter_owner}/{adapter}-{base_name}", vars)
	if err != nil || got != "acme/math-lora-Qwen2.5-3B" {
		t.Errorf("Expand = %q, %v", got, err)
	}
	if _, err := Expand("{track}-{adapter}", vars); err == nil || !strings.Contains(err.Error(), "{track}") {
		t.Errorf("missing var: %v", err)
	}
}

func TestParseSchedule(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for spec, want := range map[string]time.Time{
		"@every 15m":   base.Add(15 * time.Minute),
		"*/10 * * * *": base.Add(10 * time.Minute),
		"@hourly":      base.Add(time.Hour),
	} {
		s, err := ParseSchedule(spec)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		if got := s.Next(base); !got.Equal(want) {
			t.Errorf("%s: Next = %v, want %v", spec, got, want)
		}
	}
}

// cache: no cap and base-snapshot removal on by default; an empty size is
// no cap; sizes take units.
func TestCacheKeys(t *testing.T) {
	const tracks = "tracks: [{name: t, base: {repo: a/b}, follow: {commits: true}, adapters: [{repo: a/c}], target: {pr: true}}]\n"
	for yaml, want := range map[string]Cache{
		"":                                     {},
		"cache: {max_size: \"\"}\n":            {},
		"cache: {max_size: 1.5GiB}\n":          {MaxSize: 3 << 29},
		"cache: {max_size: 2048}\n":            {MaxSize: 2048},
		"cache: {keep_base_snapshots: true}\n": {KeepBaseSnapshots: true},
		"cache: {max_size: 0, keep_base_snapshots: false}\n": {},
	} {
		c, err := Parse([]byte(yaml+tracks), t.TempDir())
		if err != nil {
			t.Fatalf("%q: %v", yaml, err)
		}
		if c.Cache != want {
			t.Errorf("%q: Cache = %+v, want %+v", yaml, c.Cache, want)
		}
	}
}

// One adapter in two tracks is fine when the targets tell the tracks apart
// (by base name over different bases, or by track), and refused when they
// cannot (no base placeholder, or the same base repo); pull requests never
// collide.
func TestCrossTrackTargets(t *testing.T) {
	track := func(name, base, target string) string {
		return "  - {name: " + name + ", base: {repo: " + base + "}, follow: {commits: true}, adapters: [{repo: x/lora}], target: " + target + "}\n"
	}
	for _, tc := range []struct {
		name, a, b string
		ok         bool
	}{
		{"base name, other bases", track("s", "a/small", `{repo_template: "{adapter}-{base_name}"}`), track("l", "a/large", `{repo_template: "{adapter}-{base_name}"}`), true},
		{"base name, same base", track("s", "a/small", `{repo_template: "{adapter}-{base_name}"}`), track("l", "a/small", `{repo_template: "{adapter}-{base_name}"}`), false},
		{"track", track("s", "a/small", `{repo_template: "{adapter}-{track}"}`), track("l", "a/large", `{repo_template: "{adapter}-{track}"}`), true},
		{"no base placeholder", track("s", "a/small", `{repo_template: "{adapter}-latest"}`), track("l", "a/large", `{repo_template: "{adapter}-latest"}`), false},
		{"branch", track("s", "a/small", `{branch: "lorasync"}`), track("l", "a/large", `{branch: "lorasync"}`), false},
		{"pull requests", track("s", "a/small", `{pr: true}`), track("l", "a/large", `{pr: true}`), true},
	} {
		_, err := Parse([]byte("tracks:\n"+tc.a+tc.b), t.TempDir())
		if tc.ok && err != nil {
			t.Errorf("%s: refused: %v", tc.name, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "the two tracks would replace each other's migrations")) {
			t.Errorf("%s: err = %v, want the cross-track collision", tc.name, err)
		}
	}
}
