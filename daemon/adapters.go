package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lorasync/lorasync/daemon/config"
)

// Adapter is one registered adapter of a track: from the config (a Hub repo
// or a local directory) or from a drop-in directory.
type Adapter struct {
	// ID is stable across restarts and is part of the job key:
	// "hub:owner/name@revision" or "path:/abs/dir".
	ID       string
	Repo     string // Hub adapters
	Revision string // Hub adapters
	Path     string // local and drop-in adapters
	Dropin   bool
}

// Local reports whether the adapter is a directory on this machine.
func (a Adapter) Local() bool { return a.Path != "" }

// Name is the adapter's short name for templates ({adapter}): the repo
// name without owner, or the directory's base name.
func (a Adapter) Name() string {
	if a.Local() {
		return filepath.Base(a.Path)
	}
	_, name, _ := strings.Cut(a.Repo, "/")
	return name
}

// Owner is the adapter repo's owner ({adapter_owner}); "" for local ones.
func (a Adapter) Owner() string {
	owner, _, _ := strings.Cut(a.Repo, "/")
	return owner
}

func adapterFromRef(r config.AdapterRef) Adapter {
	if r.IsLocal() {
		return Adapter{ID: "path:" + r.Path, Path: r.Path}
	}
	return Adapter{ID: "hub:" + r.Repo + "@" + r.Revision, Repo: r.Repo, Revision: r.Revision}
}

// PEFT file names a drop-in folder must hold to register.
const (
	adapterConfigFile  = "adapter_config.json"
	adapterWeightsFile = "adapter_model.safetensors"
)

// registeredAdapters lists a track's adapters: the configured ones, then
// every drop-in folder holding both adapter_config.json and
// adapter_model.safetensors (a folder still being copied registers once
// both files are there). Unreadable drop-in dirs are reported, not fatal.
func registeredAdapters(tr config.Track) ([]Adapter, []error) {
	var out []Adapter
	seen := map[string]bool{}
	add := func(a Adapter) {
		if !seen[a.ID] {
			seen[a.ID] = true
			out = append(out, a)
		}
	}
	for _, r := range tr.Adapters {
		add(adapterFromRef(r))
	}
	var errs []error
	for _, dir := range tr.DropinDirs {
		found, err := scanDropin(dir)
		if err != nil {
			errs = append(errs, err)
		}
		for _, p := range found {
			a := adapterFromRef(config.AdapterRef{Path: p})
			a.Dropin = true
			add(a)
		}
	}
	return out, errs
}

// scanDropin returns the sub-directories of dir that hold a PEFT adapter,
// sorted. A missing dir is not an error (it may be created later).
func scanDropin(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("drop-in dir %s: %w", dir, err)
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if isFile(filepath.Join(p, adapterConfigFile)) && isFile(filepath.Join(p, adapterWeightsFile)) {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out, nil
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
