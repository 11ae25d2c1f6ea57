// Package atomicfile writes small files so that a reader, or the next run
// after a crash, sees either the old content or the new one, never half.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile writes data to a temp file in path's directory (which must
// exist), sets perm, fsyncs it, renames it over path and fsyncs the
// directory. On error path is untouched and the temp file is removed.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return WriteFileVia(filepath.Dir(path), path, data, perm)
}

// WriteFileVia is WriteFile with the temp file made in tmpDir, which must be
// on path's filesystem: for directories whose every entry is read as data
// (a Hugging Face cache's refs/, where a temp file left by a crash would be
// taken for a ref), so that a crash leaves its debris elsewhere.
func WriteFileVia(tmpDir, path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(tmpDir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if testHookBeforeRename != nil {
		if err = testHookBeforeRename(f.Name()); err != nil {
			return err
		}
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// testHookBeforeRename, when set by tests, runs with the complete temp file
// just before the rename; an error from it aborts the write as a failed
// rename would.
var testHookBeforeRename func(tmp string) error
