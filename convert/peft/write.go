package peft

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/lorasync/lorasync/convert/safetensors"
)

// WriteOptions says what the written adapter is for and where it came from.
type WriteOptions struct {
	// BaseModel becomes base_model_name_or_path and the card's base_model
	// (required): the NEW base model, e.g. "Qwen/Qwen2.5-1.5B".
	BaseModel string
	// Revision of BaseModel (a commit sha); written as "revision", or null when empty.
	Revision string
	// Card is the human-readable body of README.md, after the YAML front matter.
	Card string
	// Tags are added to the card's tags after "lora" and "lorasync".
	Tags []string
	// Provenance is marshalled, indented, into lorasync.json (required).
	Provenance any
	// Extra files written beside the adapter (e.g. a layer-similarity
	// heatmap), by base name; names of the adapter's own files are refused.
	Extra map[string][]byte
}

// Write stores a in dir as a PEFT adapter: adapter_config.json (a.Config with
// base_model_name_or_path and revision replaced), adapter_model.safetensors (each
// module in its DType, F32 when unset; F64 is written as F32),
// lorasync.json and README.md. It first checks that PEFT would load every module
// with its rank and alpha under a.Config (see Retarget). The write is atomic:
// files go to a temp directory beside dir, are fsynced, and the directory is
// renamed into place; an existing dir is moved aside first and removed after.
func Write(dir string, a *Adapter, opts WriteOptions) (err error) {
	if opts.BaseModel == "" {
		return fmt.Errorf("peft: write %s: WriteOptions.BaseModel is empty", dir)
	}
	if opts.Provenance == nil {
		return fmt.Errorf("peft: write %s: WriteOptions.Provenance is nil", dir)
	}
	if err := a.consistent(); err != nil {
		return fmt.Errorf("peft: write %s: %w", dir, err)
	}
	cfg := a.Config.Clone()
	cfg.BaseModel, cfg.Revision = opts.BaseModel, opts.Revision
	cfgJSON, err := cfg.MarshalJSON()
	if err != nil {
		return fmt.Errorf("peft: write %s: %w", dir, err)
	}
	prov, err := json.MarshalIndent(opts.Provenance, "", "  ")
	if err != nil {
		return fmt.Errorf("peft: write %s: provenance: %w", dir, err)
	}
	card, err := modelCard(opts)
	if err != nil {
		return fmt.Errorf("peft: write %s: %w", dir, err)
	}

	parent, base := filepath.Split(filepath.Clean(dir))
	if parent == "" {
		parent = "."
	}
	tmp, err := os.MkdirTemp(parent, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("peft: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("peft: %w", err)
	}
	type file struct {
		name string
		data []byte
	}
	files := []file{
		{ConfigFile, append(cfgJSON, '\n')},
		{ProvenanceFile, append(prov, '\n')},
		{CardFile, card},
	}
	for _, name := range slices.Sorted(maps.Keys(opts.Extra)) {
		reserved := name == WeightsFile || slices.ContainsFunc(files, func(f file) bool { return f.name == name })
		if reserved || name != filepath.Base(name) || name == "." || name == ".." {
			return fmt.Errorf("peft: write %s: extra file name %q is not allowed", dir, name)
		}
		files = append(files, file{name, opts.Extra[name]})
	}
	for _, f := range files {
		if err := writeSynced(filepath.Join(tmp, f.name), f.data); err != nil {
			return err
		}
	}
	meta := a.Metadata
	if meta == nil {
		meta = map[string]string{"format": "pt"}
	}
	if err := safetensors.WriteFile(filepath.Join(tmp, WeightsFile), a.tensors(), meta); err != nil {
		return fmt.Errorf("peft: write %s: %w", dir, err)
	}
	if err := safetensors.SyncDir(tmp); err != nil {
		return fmt.Errorf("peft: %w", err)
	}
	return replaceDir(tmp, filepath.Clean(dir))
}

// consistent checks the in-memory adapter before writing.
func (a *Adapter) consistent() error {
	if a.Config == nil || len(a.Modules) == 0 {
		return fmt.Errorf("adapter has no config or no modules: %w", ErrInvalid)
	}
	seen := map[string]bool{}
	for _, m := range a.Modules {
		if err := m.validate(); err != nil {
			return err
		}
		if seen[m.Key] {
			return fmt.Errorf("module %s appears twice: %w", m.Key, ErrInvalid)
		}
		seen[m.Key] = true
		if !a.Config.Targets(m.Key) {
			return fmt.Errorf("module %s is not targeted by target_modules (call Retarget): %w", m.Key, ErrInvalid)
		}
		if r := a.Config.RankFor(m.Key); r != m.R {
			return fmt.Errorf("module %s has rank %d but the config gives %d (call Retarget): %w", m.Key, m.R, r, ErrInvalid)
		}
		if al := a.Config.AlphaFor(m.Key); al != m.Alpha {
			return fmt.Errorf("module %s has alpha %g but the config gives %g (call Retarget): %w", m.Key, m.Alpha, al, ErrInvalid)
		}
		if m.RSLoRA != a.Config.UseRSLoRA {
			return fmt.Errorf("module %s: RSLoRA %v but config use_rslora %v: %w", m.Key, m.RSLoRA, a.Config.UseRSLoRA, ErrInvalid)
		}
	}
	return nil
}

// tensors encodes every module's A and B under PEFT's saved names.
func (a *Adapter) tensors() []safetensors.Tensor {
	var ts []safetensors.Tensor
	for _, m := range a.Modules {
		dt := m.DType
		if dt != safetensors.F16 && dt != safetensors.BF16 {
			dt = safetensors.F32
		}
		ts = append(ts,
			safetensors.FromFloat32(tensorPrefix+m.Key+".lora_A.weight", dt, []int{m.R, m.In}, m.A),
			safetensors.FromFloat32(tensorPrefix+m.Key+".lora_B.weight", dt, []int{m.Out, m.R}, m.B))
	}
	return ts
}

// writeSynced writes data to a new file at path and fsyncs it.
func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("peft: %w", err)
	}
	n, err := f.Write(data)
	if err == nil && n != len(data) {
		err = fmt.Errorf("short write: %d of %d bytes", n, len(data))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("peft: write %s: %w", path, err)
	}
	return nil
}

// replaceDir renames tmp to dir. An existing dir is first renamed aside, then
// removed once tmp is in place; if the final rename fails it is moved back.
func replaceDir(tmp, dir string) error {
	parent := filepath.Dir(dir)
	st, err := os.Lstat(dir)
	switch {
	case os.IsNotExist(err):
		if err := os.Rename(tmp, dir); err != nil {
			return fmt.Errorf("peft: %w", err)
		}
		return safetensors.SyncDir(parent)
	case err != nil:
		return fmt.Errorf("peft: %w", err)
	case !st.IsDir():
		return fmt.Errorf("peft: write %s: exists and is not a directory", dir)
	}
	old, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".old-*")
	if err != nil {
		return fmt.Errorf("peft: %w", err)
	}
	aside := filepath.Join(old, "adapter")
	if err := os.Rename(dir, aside); err != nil {
		os.Remove(old)
		return fmt.Errorf("peft: move %s aside: %w", dir, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if rerr := os.Rename(aside, dir); rerr != nil {
			return fmt.Errorf("peft: install %s: %w (and restoring the old directory from %s failed: %v)", dir, err, aside, rerr)
		}
		os.Remove(old)
		return fmt.Errorf("peft: install %s: %w", dir, err)
	}
	if err := safetensors.SyncDir(parent); err != nil {
		return err
	}
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("peft: %s installed, but removing the old copy %s failed: %w", dir, old, err)
	}
	return nil
}

// plainYAML matches scalars safe to write unquoted in YAML (repo ids, tags).
var plainYAML = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/\-]*$`)

// yamlString renders s as a YAML scalar: plain when safe, else double-quoted
// (JSON string syntax is valid YAML double-quoted syntax).
func yamlString(s string) string {
	if plainYAML.MatchString(s) && s != "true" && s != "false" && s != "null" && s != "yes" && s != "no" {
		return s
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s) // a string always encodes
	return strings.TrimSuffix(b.String(), "\n")
}

// modelCard renders README.md: YAML front matter for the Hub, then the body.
func modelCard(opts WriteOptions) ([]byte, error) {
	if strings.Contains(opts.BaseModel, "\n") {
		return nil, fmt.Errorf("base model %q contains a newline", opts.BaseModel)
	}
	var b bytes.Buffer
	b.WriteString("---\n")
	fmt.Fprintf(&b, "base_model: %s\n", yamlString(opts.BaseModel))
	b.WriteString("library_name: peft\n")
	b.WriteString("tags:\n")
	seen := map[string]bool{}
	for _, t := range append([]string{"lora", "lorasync"}, opts.Tags...) {
		if t == "" || seen[t] {
			continue
		}
		seen[t] = true
		fmt.Fprintf(&b, "- %s\n", yamlString(t))
	}
	b.WriteString("---\n\n")
	b.WriteString(strings.TrimRight(opts.Card, "\n"))
	b.WriteString("\n")
	return b.Bytes(), nil
}
