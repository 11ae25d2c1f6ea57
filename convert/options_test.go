package convert

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/convert/synth"
)

// The output directory is replaced wholesale (peft.Write moves an existing
// one aside and removes it), so an output that is, or contains, an input or
// the cache must be refused before anything is written: otherwise a typo
// such as --out pointing at the new base deletes the base model.
func TestConvertRefusesOutputOverInputs(t *testing.T) {
	dir, _, _, _ := fixture(t, synth.UpgradeSpec{Hidden: 48, Seed: 9})
	for _, c := range []struct {
		name string
		out  func(o Options) string
	}{
		{"new base", func(o Options) string { return o.NewBase }},
		{"old base", func(o Options) string { return o.OldBase + string(filepath.Separator) }},
		{"adapter", func(o Options) string { return o.Adapter }},
		{"parent of the inputs", func(o Options) string { return dir }},
		{"cache", func(o Options) string { return o.CacheDir }},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := opts(dir)
			o.Out = c.out(o)
			_, err := Convert(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), "output directory") {
				t.Errorf("err = %v, want a refusal naming the output directory", err)
			}
			for _, in := range []string{o.OldBase, o.NewBase} {
				if _, err := os.Stat(filepath.Join(in, "config.json")); err != nil {
					t.Fatalf("input %s damaged: %v", in, err)
				}
			}
			if _, err := os.Stat(filepath.Join(o.Adapter, "adapter_config.json")); err != nil {
				t.Fatalf("adapter damaged: %v", err)
			}
		})
	}
	// A sibling whose name extends an input's is not inside it.
	o := opts(dir)
	o.Out = o.NewBase + "-adapter"
	if _, err := Convert(context.Background(), o); err != nil {
		t.Fatalf("output beside the new base: %v", err)
	}
}
