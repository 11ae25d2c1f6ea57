package convert

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/convert/synth"
	"github.com/lorasync/lorasync/internal/logbuf"
)

// warnLogger logs warnings and above into b.
func warnLogger(b *logbuf.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// A cache that cannot take what a conversion computed costs the next
// conversion a recomputation, never this one its result: the migration
// succeeds, bit for bit a cache-less one's, and the failure is a warning.
// Two ways to fail: a cache whose pairs directory cannot be created (a
// file is in its way; a read-only cache dir fails the same way, but root
// writes to those), and a cache whose pair file and MLP directory cannot be
// written (a directory, resp. a file, stands at their names).
func TestCacheSaveFailureIsAWarning(t *testing.T) {
	dir, old, _, _ := fixture(t, synth.UpgradeSpec{Hidden: 40, Layers: 4, Intermediate: 56, Seed: 8})
	ctx := context.Background()
	o := opts(dir)
	o.Adapter = mlpAdapter(t, dir, old.Config, 3)

	ref := o
	ref.CacheDir, ref.Out = "", filepath.Join(dir, "out-ref")
	res, err := Convert(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	key := res.Provenance.PairKey

	blocked := map[string]func(cache string){
		"pairs is a file": func(cache string) {
			if err := os.MkdirAll(cache, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(cache, "pairs"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		},
		"entry paths taken": func(cache string) {
			if err := os.MkdirAll(filepath.Join(cache, "pairs", key+pairExt, "in-the-way"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(cache, "pairs", key+mlpDirExt), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, block := range blocked {
		t.Run(name, func(t *testing.T) {
			var logs logbuf.Buffer
			oo := o
			oo.CacheDir, oo.Out, oo.Logger = filepath.Join(t.TempDir(), "cache"), filepath.Join(t.TempDir(), "out"), warnLogger(&logs)
			block(oo.CacheDir)
			res, err := Convert(ctx, oo)
			if err != nil {
				t.Fatalf("a cache that cannot be written failed the migration: %v", err)
			}
			if res.Provenance.Timings.PairCached {
				t.Error("nothing could be cached, yet the pair claims to be")
			}
			if mt := res.Provenance.Timings.MLPOperators; mt == nil || mt.Cached != 0 || mt.Computed != 3*old.Config.Layers {
				t.Errorf("MLP operators %+v, want all computed", mt)
			}
			sameModules(t, name, ref.Out, oo.Out)
			if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "cache") {
				t.Errorf("no warning about the cache:\n%s", logs.String())
			}
			// One warning per cache part, not one per operator.
			if n := strings.Count(logs.String(), "MLP operator cache unavailable"); n != 1 {
				t.Errorf("%d MLP cache warnings, want 1:\n%s", n, logs.String())
			}
		})
	}
}
