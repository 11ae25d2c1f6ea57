package demo

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/convert/arch"
	"github.com/lorasync/lorasync/convert/peft"
	"github.com/lorasync/lorasync/daemon/state"
)

// TestDemo plays the README's first command end to end and checks what it
// claims: the adapter was migrated and pushed, the pushed adapter loads and
// fits the new base, and the state records the job.
func TestDemo(t *testing.T) {
	var out bytes.Buffer
	res, err := Run(context.Background(), &out, Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	text := out.String()
	for _, want := range []string{"First poll: nothing new", "/" + outputRepo + "/commit/" + res.OutputCommit, "layer map: cka", "one lineage", "modules: 24 migrated"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	a, err := peft.Load(res.Adapter)
	if err != nil {
		t.Fatal(err)
	}
	newBase, err := arch.Load(filepath.Join(res.Dir, "models", "base-v2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Check(newBase); err != nil {
		t.Fatalf("the pushed adapter does not fit the new base: %v", err)
	}
	if a.Config.BaseModel != nextRepo {
		t.Errorf("pushed adapter names base %q", a.Config.BaseModel)
	}
	st, err := state.OpenReadOnly(filepath.Join(res.Dir, "state"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := st.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Jobs) != 1 || snap.Jobs[0].Status != state.Done || snap.Jobs[0].OutputCommit != res.OutputCommit {
		t.Fatalf("state jobs: %+v", snap.Jobs)
	}
}
