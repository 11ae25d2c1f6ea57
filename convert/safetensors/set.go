package safetensors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Checkpoint file names used by Hugging Face transformers.
const (
	SingleFile = "model.safetensors"
	IndexFile  = "model.safetensors.index.json"
)

// Set is a checkpoint made of one or more safetensors files, read as one
// namespace of tensors.
type Set struct {
	dir    string
	files  []*File          // sorted by file name
	byName map[string]*File // tensor name -> file holding it
	names  []string         // sorted
	meta   map[string]string
}

// OpenDir opens the checkpoint in dir: the shards listed by
// model.safetensors.index.json when it exists, else model.safetensors.
// Every shard's header is validated, and the index must agree with the shards
// exactly: each listed tensor is in the shard the index names, and no shard holds
// a tensor the index does not list or that another shard also holds.
func OpenDir(dir string) (*Set, error) {
	indexPath := filepath.Join(dir, IndexFile)
	data, err := os.ReadFile(indexPath)
	if errors.Is(err, fs.ErrNotExist) {
		f, err := Open(filepath.Join(dir, SingleFile))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("safetensors: %s: neither %s nor %s found: %w", dir, IndexFile, SingleFile, err)
			}
			return nil, err
		}
		return newSet(dir, []*File{f}), nil
	}
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	weightMap, err := parseIndex(indexPath, data)
	if err != nil {
		return nil, err
	}
	return openShards(dir, indexPath, weightMap)
}

// openShards opens each shard named in weightMap once and cross-checks the map.
func openShards(dir, indexPath string, weightMap map[string]string) (_ *Set, err error) {
	var shardNames []string
	for _, shard := range weightMap {
		if !slices.Contains(shardNames, shard) {
			shardNames = append(shardNames, shard)
		}
	}
	slices.Sort(shardNames)
	var files []*File
	defer func() {
		if err != nil {
			for _, f := range files {
				f.Close()
			}
		}
	}()
	for _, shard := range shardNames {
		if shard == "" || shard != filepath.Base(shard) || shard == "." || shard == ".." || strings.ContainsRune(shard, '\\') {
			return nil, formatErr(indexPath, "", "shard name %q is not a plain file name", shard)
		}
		f, err := Open(filepath.Join(dir, shard))
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	s := newSet(dir, files)
	for _, f := range files {
		for _, name := range f.h.names {
			want, listed := weightMap[name]
			if !listed {
				return nil, formatErr(indexPath, name, "present in shard %s but not in weight_map", filepath.Base(f.path))
			}
			if want != filepath.Base(f.path) {
				return nil, formatErr(indexPath, name, "weight_map names shard %s but the tensor is in %s", want, filepath.Base(f.path))
			}
		}
	}
	for name, shard := range weightMap {
		if _, ok := s.byName[name]; !ok {
			return nil, formatErr(indexPath, name, "listed in weight_map for shard %s but absent from it", shard)
		}
	}
	return s, nil
}

func newSet(dir string, files []*File) *Set {
	s := &Set{dir: dir, files: files, byName: make(map[string]*File)}
	for _, f := range files {
		for _, name := range f.h.names {
			if _, dup := s.byName[name]; !dup {
				s.byName[name] = f
				s.names = append(s.names, name)
			}
		}
		for k, v := range f.h.meta {
			if _, ok := s.meta[k]; !ok {
				if s.meta == nil {
					s.meta = make(map[string]string)
				}
				s.meta[k] = v
			}
		}
	}
	slices.Sort(s.names)
	return s
}

// parseIndex reads the weight_map of an index file, rejecting repeated keys.
// Other top-level keys ("metadata") are skipped.
func parseIndex(path string, data []byte) (map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := expectDelim(dec, '{', "index"); err != nil {
		return nil, formatErr(path, "", "%v", err)
	}
	var weightMap map[string]string
	for dec.More() {
		key, err := stringToken(dec)
		if err != nil {
			return nil, formatErr(path, "", "%v", err)
		}
		if key != "weight_map" {
			if err := skipValue(dec); err != nil {
				return nil, formatErr(path, "", "%s: %v", key, err)
			}
			continue
		}
		if weightMap != nil {
			return nil, formatErr(path, "", "duplicate weight_map")
		}
		if weightMap, err = parseWeightMap(dec); err != nil {
			return nil, formatErr(path, "", "weight_map: %v", err)
		}
	}
	if err := expectDelim(dec, '}', "index"); err != nil {
		return nil, formatErr(path, "", "%v", err)
	}
	if tok, err := dec.Token(); err != io.EOF {
		return nil, formatErr(path, "", "unexpected content after the index object (%v %v)", tok, err)
	}
	if len(weightMap) == 0 {
		return nil, formatErr(path, "", "no weight_map entries")
	}
	return weightMap, nil
}

func parseWeightMap(dec *json.Decoder) (map[string]string, error) {
	if err := expectDelim(dec, '{', "weight_map"); err != nil {
		return nil, err
	}
	m := make(map[string]string)
	for dec.More() {
		name, err := stringToken(dec)
		if err != nil {
			return nil, err
		}
		shard, err := stringToken(dec)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %v", name, err)
		}
		if _, dup := m[name]; dup {
			return nil, fmt.Errorf("tensor %q listed twice", name)
		}
		m[name] = shard
	}
	return m, expectDelim(dec, '}', "weight_map")
}

// Dir is the checkpoint directory given to OpenDir.
func (s *Set) Dir() string { return s.dir }

// Files lists the paths of the files in the set, sorted.
func (s *Set) Files() []string {
	out := make([]string, len(s.files))
	for i, f := range s.files {
		out[i] = f.path
	}
	return out
}

// Names lists the tensor names of all files in sorted order.
func (s *Set) Names() []string { return append([]string(nil), s.names...) }

// Info describes the tensor called name; Info.File names its shard.
func (s *Set) Info(name string) (Info, bool) {
	f, ok := s.byName[name]
	if !ok {
		return Info{}, false
	}
	return f.Info(name)
}

// Metadata merges the shards' "__metadata__" maps; a key that differs between
// shards keeps the value of the first shard in file-name order.
func (s *Set) Metadata() map[string]string { return maps.Clone(s.meta) }

// Bytes returns the tensor's raw bytes as a view into its shard's mapping.
func (s *Set) Bytes(name string) ([]byte, error) {
	f, err := s.file(name)
	if err != nil {
		return nil, err
	}
	return f.Bytes(name)
}

// Float32 returns a float32 copy of the tensor.
func (s *Set) Float32(name string) ([]float32, error) {
	f, err := s.file(name)
	if err != nil {
		return nil, err
	}
	return f.Float32(name)
}

// Float32Into converts the tensor into dst (see Reader).
func (s *Set) Float32Into(dst []float32, name string) error {
	f, err := s.file(name)
	if err != nil {
		return err
	}
	return f.Float32Into(dst, name)
}

// Float32Rows returns rows lo..hi-1 of the tensor as float32 (see Reader).
func (s *Set) Float32Rows(name string, lo, hi int) ([]float32, error) {
	f, err := s.file(name)
	if err != nil {
		return nil, err
	}
	return f.Float32Rows(name, lo, hi)
}

func (s *Set) file(name string) (*File, error) {
	f, ok := s.byName[name]
	if !ok {
		return nil, fmt.Errorf("safetensors: %s: no tensor %q: %w", s.dir, name, ErrNotFound)
	}
	return f, nil
}

// Close closes every shard, returning the first error.
func (s *Set) Close() error {
	var first error
	for _, f := range s.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
