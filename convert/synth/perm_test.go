package synth

import (
	"os"
	"path/filepath"
	"testing"
)

// The JSON files of a written model are readable by others, like its weights
// (safetensors.WriteFile writes 0644), whatever the umask lets through.
func TestWrittenFilesAreWorldReadable(t *testing.T) {
	m, err := Random(Spec{Hidden: 16, Layers: 1, Heads: 2, Intermediate: 24, Vocab: 300}, 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := m.Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"config.json", "tokenizer.json"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o044 != 0o044 {
			t.Errorf("%s has mode %v, want group and others to read it", name, fi.Mode().Perm())
		}
	}
}
