package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/robfig/cron/v3"
)

// scheduleParser accepts standard 5-field cron specs and descriptors such
// as "@hourly" and "@every 15m".
var scheduleParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses a schedule spec ("*/15 * * * *", "@hourly",
// "@every 15m").
func ParseSchedule(spec string) (cron.Schedule, error) {
	return scheduleParser.Parse(spec)
}

var (
	repoRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$`)
	trackRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	commitRE  = regexp.MustCompile(`^[0-9a-f]{40}$`)
	ownerRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$`)
	enumError = "must be one of %s, got %q"
)

// IsCommit reports whether rev is a full 40-hex commit id.
func IsCommit(rev string) bool { return commitRE.MatchString(rev) }

// fieldErrors collects errors, each prefixed with its key path.
type fieldErrors []error

func (fe *fieldErrors) add(path, format string, args ...any) {
	*fe = append(*fe, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

func (fe fieldErrors) err() error { return errors.Join(fe...) }

func oneOf(fe *fieldErrors, path, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	fe.add(path, enumError, strings.Join(allowed, ", "), v)
}

// Validate checks every key and returns all problems at once; each line
// starts with the key path (e.g. "tracks[1].adapters[0].repo").
func (c *Config) Validate() error {
	var fe fieldErrors
	if c.Hub.Token != "" {
		fe.add("hub.token", "a literal token is not allowed in the config; use hub.token_file, the systemd credential hf_token or the HF_TOKEN environment variable")
	}
	validateEndpoint(&fe, c.Hub.Endpoint)
	if c.StateDir == "" {
		fe.add("state_dir", "must not be empty")
	}
	if c.CacheDir == "" {
		fe.add("cache_dir", "must not be empty")
	}
	if _, err := ParseSchedule(c.Schedule); err != nil {
		fe.add("schedule", "invalid spec %q: %v", c.Schedule, err)
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			fe.add("listen", "want host:port (or empty to disable), got %q: %v", c.Listen, err)
		}
	}
	if c.Concurrency < 1 || c.Concurrency > 64 {
		fe.add("concurrency", "must be between 1 and 64, got %d", c.Concurrency)
	}
	if c.Retry.MaxAttempts < 1 {
		fe.add("retry.max_attempts", "must be at least 1, got %d", c.Retry.MaxAttempts)
	}
	if c.Retry.BackoffBase <= 0 {
		fe.add("retry.backoff_base", "must be positive, got %s", c.Retry.BackoffBase)
	}
	if c.Retry.BackoffMax < c.Retry.BackoffBase {
		fe.add("retry.backoff_max", "must be >= retry.backoff_base (%s), got %s", c.Retry.BackoffBase, c.Retry.BackoffMax)
	}
	if c.MinFreeDisk < 0 {
		fe.add("min_free_disk", "must not be negative, got %d", c.MinFreeDisk)
	}
	if c.Cache.MaxSize < 0 {
		fe.add("cache.max_size", "must not be negative (0 means no cap), got %d", c.Cache.MaxSize)
	}
	oneOf(&fe, "log.format", c.Log.Format, "auto", "text", "json")
	oneOf(&fe, "log.level", c.Log.Level, "debug", "info", "warn", "error")
	if len(c.Tracks) == 0 {
		fe.add("tracks", "at least one track is required")
	}
	names := map[string]int{}
	for i, t := range c.Tracks {
		p := fmt.Sprintf("tracks[%d]", i)
		if j, dup := names[t.Name]; dup && t.Name != "" {
			fe.add(p+".name", "duplicate track name %q (also tracks[%d])", t.Name, j)
		}
		names[t.Name] = i
		t.validate(&fe, p)
	}
	c.checkCrossTrackTargets(&fe)
	return fe.err()
}

// validateEndpoint accepts a bare http(s) URL with a host (and an optional
// path prefix). Credentials in the userinfo or the query are refused without
// being echoed: the endpoint is printed by check and logged by the daemon,
// and the token has its own channels (hub.token_file, the credential, HF_TOKEN).
func validateEndpoint(fe *fieldErrors, endpoint string) {
	u, err := url.Parse(endpoint)
	switch {
	case err != nil:
		// url.Error quotes the input; say only what is wrong.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		fe.add("hub.endpoint", "must be an http(s) URL: %v", err)
	case u.User != nil:
		fe.add("hub.endpoint", "must not carry credentials (user:password@); the token comes from hub.token_file, the systemd credential hf_token or HF_TOKEN")
	case u.RawQuery != "" || u.ForceQuery:
		fe.add("hub.endpoint", "must not carry a query (?...); the token comes from hub.token_file, the systemd credential hf_token or HF_TOKEN")
	case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "":
		fe.add("hub.endpoint", "must be an http(s) URL with a host, got %q", endpoint)
	case u.Fragment != "":
		fe.add("hub.endpoint", "must not carry a fragment (#...), got %q", endpoint)
	}
}

func (t *Track) validate(fe *fieldErrors, p string) {
	if !trackRE.MatchString(t.Name) {
		fe.add(p+".name", "want 1-64 characters of [A-Za-z0-9._-], got %q", t.Name)
	}
	if !repoRE.MatchString(t.Base.Repo) {
		fe.add(p+".base.repo", "want owner/name, got %q", t.Base.Repo)
	}
	if t.Follow.Commits && IsCommit(t.Base.Revision) {
		fe.add(p+".follow.commits", "base.revision %q is a commit; following commits needs a branch", t.Base.Revision)
	}
	seen := map[string]bool{t.Base.Repo: true}
	for j, s := range t.Follow.Successors {
		sp := fmt.Sprintf("%s.follow.successors[%d]", p, j)
		if !repoRE.MatchString(s) {
			fe.add(sp, "want owner/name, got %q", s)
		} else if seen[s] {
			fe.add(sp, "repo %q is listed twice (or is the base)", s)
		}
		seen[s] = true
	}
	if d := t.Follow.Discover; d != nil {
		if !ownerRE.MatchString(d.Author) {
			fe.add(p+".follow.discover.author", "want a user or organisation name, got %q", d.Author)
		}
		if d.Pattern == "" {
			fe.add(p+".follow.discover.pattern", "must not be empty")
		} else if _, err := regexp.Compile(d.Pattern); err != nil {
			fe.add(p+".follow.discover.pattern", "invalid regular expression: %v", err)
		}
	}
	if !t.Follow.Commits && len(t.Follow.Successors) == 0 && t.Follow.Discover == nil {
		fe.add(p+".follow", "nothing to follow: set commits, successors or discover")
	}
	if len(t.Adapters) == 0 && len(t.DropinDirs) == 0 {
		fe.add(p+".adapters", "a track needs adapters or dropin_dirs")
	}
	local := len(t.DropinDirs) > 0
	for j, a := range t.Adapters {
		ap := fmt.Sprintf("%s.adapters[%d]", p, j)
		switch {
		case a.Repo != "" && a.Path != "":
			fe.add(ap, "set either repo or path, not both")
		case a.Path != "":
			local = true
			if a.Revision != "" {
				fe.add(ap+".revision", "a local adapter has no revision")
			}
		case a.Repo == "":
			fe.add(ap+".repo", "set repo (owner/name) or path")
		case !repoRE.MatchString(a.Repo):
			fe.add(ap+".repo", "want owner/name, got %q", a.Repo)
		}
	}
	for j, d := range t.DropinDirs {
		if d == "" || !filepath.IsAbs(d) {
			fe.add(fmt.Sprintf("%s.dropin_dirs[%d]", p, j), "want a directory path, got %q", d)
		}
	}
	t.Target.validate(fe, p+".target", local, len(t.Adapters) > 1 || len(t.DropinDirs) > 0)
	t.checkTargetCollisions(fe, p)
	t.Convert.validate(fe, p+".convert")
}

// checkTargetCollisions refuses two listed adapters that would push to one
// target (repo_template repo, or repo and branch): each push would replace
// the other's files, and reconciliation would take one for the other. Two
// revisions of one repo, or a local dir named like a Hub adapter, have the
// same {adapter}. Placeholders of the new base stay unexpanded: they are the
// same for both. Drop-in adapters are only known at run time.
func (t *Track) checkTargetCollisions(fe *fieldErrors, p string) {
	seen := map[string]int{}
	for j, a := range t.Adapters {
		key, ok := t.targetKey(a)
		if !ok {
			return
		}
		if k, dup := seen[key]; dup {
			fe.add(fmt.Sprintf("%s.adapters[%d]", p, j), "pushes to the same target as %s.adapters[%d] (%q); put {adapter_owner} in the template or give the adapters distinct names", p, k, key)
			continue
		}
		seen[key] = j
	}
}

// targetKey is where the track pushes adapter a, with the new base's
// placeholders unexpanded; ok is false for pull requests (one per push, so
// never overwritten) and tracks without a target.
func (t *Track) targetKey(a AdapterRef) (key string, ok bool) {
	tg := t.Target
	if tg.PR || (tg.RepoTemplate == "" && tg.Branch == "") {
		return "", false
	}
	name, owner := filepath.Base(a.Path), ""
	if !a.IsLocal() {
		owner, name, _ = strings.Cut(a.Repo, "/")
	}
	expand := func(tmpl string) string {
		return strings.NewReplacer("{adapter}", name, "{adapter_owner}", owner, "{track}", t.Name).Replace(tmpl)
	}
	if tg.RepoTemplate == "" {
		return a.Repo + " branch " + expand(tg.Branch), true
	}
	key = expand(tg.RepoTemplate)
	if !strings.Contains(key, "/") {
		o := tg.Owner
		if o == "" {
			o = owner
		}
		key = o + "/" + key
	}
	return key, true
}

// checkCrossTrackTargets refuses adapters of two tracks that push to one
// target whatever the new base: templates without {base_name} or
// {base_owner} (the same adapter in two tracks over different bases, say),
// or with them but over the same base repo. Their pushes would take turns
// replacing each other. Collisions within a track are the track's check.
func (c *Config) checkCrossTrackTargets(fe *fieldErrors) {
	type place struct{ track, adapter int }
	seen := map[string]place{}
	for i := range c.Tracks {
		t := &c.Tracks[i]
		for j, a := range t.Adapters {
			key, ok := t.targetKey(a)
			if !ok {
				break
			}
			if strings.Contains(key, "{base_") {
				key += " over " + t.Base.Repo // the new bases' names differ with the track's
			}
			if prev, dup := seen[key]; dup && prev.track != i {
				fe.add(fmt.Sprintf("tracks[%d].adapters[%d]", i, j), "pushes to the same target as tracks[%d].adapters[%d] (%q): the two tracks would replace each other's migrations; put {track} or {base_name} in a template", prev.track, prev.adapter, key)
				continue
			}
			if _, dup := seen[key]; !dup {
				seen[key] = place{i, j}
			}
		}
	}
}

func (tg *Target) validate(fe *fieldErrors, p string, local, shared bool) {
	modes := 0
	for _, set := range []bool{tg.RepoTemplate != "", tg.Branch != "", tg.PR} {
		if set {
			modes++
		}
	}
	if modes != 1 {
		fe.add(p, "set exactly one of repo_template, branch and pr")
		return
	}
	if tg.Owner != "" && !ownerRE.MatchString(tg.Owner) {
		fe.add(p+".owner", "want a user or organisation name, got %q", tg.Owner)
	}
	switch {
	case tg.RepoTemplate != "":
		if err := checkTemplate(tg.RepoTemplate); err != nil {
			fe.add(p+".repo_template", "%v", err)
		} else if strings.Count(tg.RepoTemplate, "/") > 1 {
			fe.add(p+".repo_template", "at most one slash (owner/name), got %q", tg.RepoTemplate)
		} else if shared && !strings.Contains(tg.RepoTemplate, "{adapter}") {
			fe.add(p+".repo_template", "must contain {adapter} when the track has several adapters or drop-in dirs (else every adapter pushes to one repo and overwrites the others), got %q", tg.RepoTemplate)
		} else if !strings.Contains(tg.RepoTemplate, "/") && tg.Owner == "" && local {
			fe.add(p+".owner", "local and drop-in adapters have no owner: set target.owner or put owner/ in repo_template")
		}
	case tg.Branch != "":
		if err := checkTemplate(tg.Branch); err != nil {
			fe.add(p+".branch", "%v", err)
		}
		if local {
			fe.add(p+".branch", "local and drop-in adapters have no repo of their own to branch; use repo_template")
		}
	case tg.PR:
		if local {
			fe.add(p+".pr", "local and drop-in adapters have no repo of their own to open a PR on; use repo_template")
		}
	}
	if tg.Private && tg.RepoTemplate == "" {
		fe.add(p+".private", "only applies to new repos made from repo_template")
	}
}

func (cv *ConvertConfig) validate(fe *fieldErrors, p string) {
	oneOf(fe, p+".layer_map", cv.LayerMap, "auto", "cka", "linear", "explicit", "similarity")
	if cv.Calibration != "" && cv.LayerMap != "auto" && cv.LayerMap != "cka" {
		fe.add(p+".calibration", "only used with layer_map auto or cka")
	}
	oneOf(fe, p+".transfer", cv.Transfer, "lstsq", "identity")
	oneOf(fe, p+".head_transfer", cv.HeadTransfer, "lstsq", "gram")
	oneOf(fe, p+".input_map", cv.InputMap, "wx", "pinv")
	if (cv.LayerMap == "similarity") != (cv.SimilarityFile != "") {
		fe.add(p+".similarity_file", "set exactly when layer_map is similarity")
	}
	if cv.LayerMap == "explicit" && len(cv.Layers) == 0 {
		fe.add(p+".layers", "layer_map explicit needs a layers list")
	}
	if cv.LayerMap != "explicit" && len(cv.Layers) > 0 {
		fe.add(p+".layers", "only used with layer_map explicit")
	}
	for j := 1; j < len(cv.Layers); j++ {
		if cv.Layers[j] <= cv.Layers[j-1] {
			fe.add(fmt.Sprintf("%s.layers[%d]", p, j), "must be strictly increasing, got %d after %d", cv.Layers[j], cv.Layers[j-1])
		}
	}
	for j, l := range cv.Layers {
		if l < 0 {
			fe.add(fmt.Sprintf("%s.layers[%d]", p, j), "must not be negative, got %d", l)
		}
	}
}
