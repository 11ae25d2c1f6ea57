package daemon

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/lorasync/lorasync/daemon/config"
)

// Nothing lorasync pushes names a directory of the machine it runs on: the
// state and logs keep local paths (an operator needs them), the Hub gets
// names. A local adapter is published as "local:<directory name>" with its
// content hash; the converter's record loses its input directories; the
// convert options' file paths keep only their file names. A last check before
// every push (checkNoLocalPaths) refuses files that still name one of the
// daemon's directories, so a new field somewhere cannot leak them quietly.

// PublicID is the adapter's id as pushed: ID for Hub adapters, and for local
// ones "local:" and the directory's base name, which (with the content hash
// pushed beside it) identifies the adapter without revealing where it lives.
func (a Adapter) PublicID() string {
	if a.Local() {
		return "local:" + a.Name()
	}
	return a.ID
}

// publicOptions returns opts with its file paths (calibration lines, a
// similarity matrix) reduced to their file names.
func publicOptions(opts config.ConvertConfig) config.ConvertConfig {
	if opts.Calibration != "" {
		opts.Calibration = filepath.Base(opts.Calibration)
	}
	if opts.SimilarityFile != "" {
		opts.SimilarityFile = filepath.Base(opts.SimilarityFile)
	}
	opts.Layers = append([]int(nil), opts.Layers...)
	return opts
}

// publicConvertRecord removes the local parts of the converter's
// lorasync.json: the directories of its inputs (inputs.*.dir, which keep
// their names and content ids) and the similarity file's directory in
// options.layer_map_requested ("similarity:FILE"). Other fields are kept
// verbatim.
func publicConvertRecord(raw []byte) ([]byte, error) {
	var rec map[string]json.RawMessage
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, err
	}
	if in, ok := rec["inputs"]; ok {
		var inputs map[string]map[string]json.RawMessage
		if err := json.Unmarshal(in, &inputs); err != nil {
			return nil, fmt.Errorf("inputs: %w", err)
		}
		for _, input := range inputs {
			delete(input, "dir")
		}
		var err error
		if rec["inputs"], err = json.Marshal(inputs); err != nil {
			return nil, err
		}
	}
	if o, ok := rec["options"]; ok {
		var opts map[string]json.RawMessage
		if err := json.Unmarshal(o, &opts); err != nil {
			return nil, fmt.Errorf("options: %w", err)
		}
		var ask string
		if json.Unmarshal(opts["layer_map_requested"], &ask) == nil {
			if file, ok := strings.CutPrefix(ask, "similarity:"); ok {
				opts["layer_map_requested"], _ = json.Marshal("similarity:" + filepath.Base(file))
			}
		}
		var err error
		if rec["options"], err = json.Marshal(opts); err != nil {
			return nil, err
		}
	}
	return json.MarshalIndent(rec, "", "  ")
}

// checkNoLocalPaths refuses to push dir (and a commit with texts) when a file
// or a text contains one of paths (made absolute; empty ones are skipped).
// Files are read whole, except safetensors weights, whose JSON header (tensor
// names and metadata) is the only text in them. The error is permanent: the
// same files would be refused again.
func checkNoLocalPaths(dir string, texts []string, paths ...string) error {
	var needles [][]byte
	for _, p := range paths {
		if p == "" {
			continue
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		if p != string(filepath.Separator) {
			needles = append(needles, []byte(p))
		}
	}
	leak := func(what string, data []byte) error {
		for _, n := range needles {
			if bytes.Contains(data, n) {
				return permanentf("refusing to push: %s names the local path %s", what, n)
			}
		}
		return nil
	}
	for i, t := range texts {
		if err := leak(fmt.Sprintf("the commit text (%d)", i), []byte(t)); err != nil {
			return err
		}
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		data, err := pushedText(p)
		if err != nil {
			return fmt.Errorf("check %s before pushing: %w", p, err)
		}
		return leak(filepath.ToSlash(rel), data)
	})
}

// maxHeader bounds a safetensors header read (the format's own limit).
const maxHeader = 100 << 20

// pushedText is the part of a file to check: a safetensors file's header,
// any other file whole (and a .safetensors file whose header does not
// parse, since then nothing says where its text ends).
func pushedText(path string) ([]byte, error) {
	if !strings.HasSuffix(path, ".safetensors") {
		return os.ReadFile(path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var n uint64
	if err := binary.Read(f, binary.LittleEndian, &n); err != nil || n > maxHeader {
		return os.ReadFile(path)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(f, buf); err != nil || !json.Valid(buf) {
		return os.ReadFile(path)
	}
	return buf, nil
}
