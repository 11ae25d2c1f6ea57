package safetensors

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeShards builds a two-shard checkpoint in a temp dir and returns the dir.
func writeShards(t *testing.T, index string) string {
	t.Helper()
	dir := t.TempDir()
	if err := WriteFile(filepath.Join(dir, "model-00001-of-00002.safetensors"), []Tensor{
		FromFloat32("embed", BF16, []int{3, 2}, []float32{1, 2, 3, 4, 5, 6}),
		FromFloat32("layer0", F32, []int{2}, []float32{7, 8}),
	}, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(filepath.Join(dir, "model-00002-of-00002.safetensors"), []Tensor{
		FromFloat32("layer1", F16, []int{2}, []float32{9, 10}),
	}, map[string]string{"format": "pt", "extra": "2"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, IndexFile), []byte(index), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

const goodIndex = `{"metadata": {"total_size": 22}, "weight_map": {
  "embed": "model-00001-of-00002.safetensors",
  "layer0": "model-00001-of-00002.safetensors",
  "layer1": "model-00002-of-00002.safetensors"}}`

func TestOpenDirSharded(t *testing.T) {
	dir := writeShards(t, goodIndex)
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !slices.Equal(s.Names(), []string{"embed", "layer0", "layer1"}) {
		t.Errorf("Names = %v", s.Names())
	}
	if len(s.Files()) != 2 {
		t.Errorf("Files = %v", s.Files())
	}
	in, ok := s.Info("layer1")
	if !ok || filepath.Base(in.File) != "model-00002-of-00002.safetensors" || in.DType != F16 {
		t.Errorf("Info(layer1) = %+v", in)
	}
	if got, _ := s.Float32("layer1"); !slices.Equal(got, []float32{9, 10}) {
		t.Errorf("layer1 = %v", got)
	}
	if got := make([]float32, 2); s.Float32Into(got, "layer1") != nil || !slices.Equal(got, []float32{9, 10}) {
		t.Errorf("Float32Into(layer1) = %v", got)
	}
	if err := s.Float32Into(make([]float32, 2), "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Float32Into of a missing tensor: err = %v", err)
	}
	if got, _ := s.Float32Rows("embed", 1, 3); !slices.Equal(got, []float32{3, 4, 5, 6}) {
		t.Errorf("embed rows 1..3 = %v", got)
	}
	if b, _ := s.Bytes("layer0"); len(b) != 8 {
		t.Errorf("Bytes(layer0) len %d", len(b))
	}
	if m := s.Metadata(); m["format"] != "pt" || m["extra"] != "2" {
		t.Errorf("Metadata = %v", m)
	}
	if _, err := s.Float32("nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), dir) {
		t.Errorf("missing tensor err = %v", err)
	}
}

func TestOpenDirSingle(t *testing.T) {
	dir := t.TempDir()
	if err := WriteFile(filepath.Join(dir, SingleFile), []Tensor{FromFloat32("w", F32, []int{1}, []float32{1})}, nil); err != nil {
		t.Fatal(err)
	}
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !slices.Equal(s.Names(), []string{"w"}) {
		t.Errorf("Names = %v", s.Names())
	}
	if _, err := OpenDir(t.TempDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("empty dir err = %v, want ErrNotExist", err)
	}
}

func TestOpenDirBadIndex(t *testing.T) {
	shard1, shard2 := `"model-00001-of-00002.safetensors"`, `"model-00002-of-00002.safetensors"`
	cases := map[string]struct{ index, want string }{
		"not json":       {`{`, "index"},
		"duplicate key":  {`{"weight_map":{"embed":` + shard1 + `,"embed":` + shard1 + `}}`, `"embed" listed twice`},
		"wrong shard":    {`{"weight_map":{"embed":` + shard2 + `,"layer0":` + shard1 + `,"layer1":` + shard2 + `}}`, "weight_map names shard"},
		"unlisted":       {`{"weight_map":{"embed":` + shard1 + `,"layer1":` + shard2 + `}}`, "not in weight_map"},
		"absent":         {`{"weight_map":{"embed":` + shard1 + `,"layer0":` + shard1 + `,"layer1":` + shard2 + `,"ghost":` + shard2 + `}}`, "absent from it"},
		"path traversal": {`{"weight_map":{"embed":"../x.safetensors"}}`, "not a plain file name"},
		"empty map":      {`{"weight_map":{}}`, "no weight_map entries"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			dir := writeShards(t, c.index)
			s, err := OpenDir(dir)
			if err == nil {
				s.Close()
				t.Fatal("OpenDir succeeded")
			}
			if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), IndexFile) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want ErrFormat naming %s with %q", err, IndexFile, c.want)
			}
		})
	}
	// A missing shard reports the shard's path.
	dir := writeShards(t, goodIndex)
	os.Remove(filepath.Join(dir, "model-00002-of-00002.safetensors"))
	if _, err := OpenDir(dir); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "model-00002-of-00002") {
		t.Errorf("missing shard err = %v", err)
	}
}
