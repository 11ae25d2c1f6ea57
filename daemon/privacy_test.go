package daemon

// What lorasync pushes never names a directory of the machine it runs on: a
// local adapter is named by its directory's base name and its content hash,
// and the converter's own record loses its input directories.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/daemon/state"
)

// A local adapter under a revealing path, migrated by the real converter and
// pushed through the Hub client to hubtest: no pushed file, commit title or
// message contains the adapter's path or any directory of the test's tree
// (state, cache, Hub cache).
func TestE2ELocalAdapterPathNotPushed(t *testing.T) {
	root := t.TempDir()
	adapter := filepath.Join(root, "home", "alice", "secret-project", "support-bot")
	h, srv := hubtestBed(t, `
tracks:
  - name: t
    base: {repo: org/base}
    follow: {commits: true}
    adapters: [{path: `+adapter+`}]
    target: {repo_template: "{adapter}-{base_name}", owner: acme}
`)
	h.realConv = LoRASuite{Logger: slog.New(slog.DiscardHandler)}
	m := makeModels(t)
	writeAdapterDir(t, adapter, m.adapter)
	seed(t, srv, "org/base", m.old)
	h.runOnce()
	commit := seed(t, srv, "org/base", m.new)
	h.runOnce()
	j := h.job("support-bot")
	if j.Status != state.Done || j.OutputRepo != "acme/support-bot-base" {
		t.Fatalf("job %+v", j)
	}
	pushedAdapter(t, srv, j.OutputRepo, "org/base", commit, m.newCfg)

	secrets := []string{adapter, root, h.dir, "alice", "secret-project"}
	files, err := srv.Files(j.OutputRepo, "main")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := srv.File(j.OutputRepo, "main", f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("pushed %s contains the local path fragment %q", f, s)
			}
		}
	}
	commits, err := srv.Commits(j.OutputRepo, "main")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range commits {
		for _, s := range secrets {
			if strings.Contains(c.Title+"\n"+c.Message, s) {
				t.Errorf("commit %s names %q:\n%s\n%s", c.ID, s, c.Title, c.Message)
			}
		}
	}
	// The provenance still says which adapter and which content.
	data, _ := srv.File(j.OutputRepo, "main", ProvenanceFile)
	p := readProvenance(t, data)
	if p.Adapter.ID != "local:support-bot" || p.Adapter.Commit != j.AdapterCommit || !strings.HasPrefix(p.Adapter.Commit, "sha256:") {
		t.Errorf("provenance adapter = %+v, want local:support-bot at %s", p.Adapter, j.AdapterCommit)
	}
	if !strings.Contains(commits[0].Message, j.AdapterCommit) {
		t.Errorf("commit message does not name the adapter revision %s:\n%s", j.AdapterCommit, commits[0].Message)
	}
	// Locally, the state still has the full path.
	if j.Key.Adapter != "path:"+adapter {
		t.Errorf("job key adapter = %q", j.Key.Adapter)
	}
}

// writeSafetensors writes a minimal safetensors file: a header with
// metadata and one F32 tensor whose bytes are data.
func writeSafetensors(t *testing.T, path string, metadata string, data []byte) {
	t.Helper()
	header := fmt.Sprintf(`{"__metadata__":{"note":%q},"w":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]}}`, metadata, len(data), len(data))
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(len(header)))
	b.WriteString(header)
	b.Write(data)
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCheckNoLocalPaths(t *testing.T) {
	local := filepath.Join(t.TempDir(), "home", "alice", "adapter")
	clean := func() string {
		dir := t.TempDir()
		writeAdapterDir(t, dir, map[string][]byte{"README.md": []byte("# local:adapter\n")})
		writeAdapterDir(t, filepath.Join(dir, "sub"), map[string][]byte{"notes.txt": []byte("fine")})
		writeSafetensors(t, filepath.Join(dir, adapterWeightsFile), "format pt", []byte("weights"))
		return dir
	}
	if err := checkNoLocalPaths(clean(), []string{"title", "message"}, local, ""); err != nil {
		t.Fatalf("clean dir refused: %v", err)
	}
	// The bytes of tensors are not text: a match there is not a leak.
	dir := clean()
	writeSafetensors(t, filepath.Join(dir, adapterWeightsFile), "format pt", []byte("x"+local+"x"))
	if err := checkNoLocalPaths(dir, nil, local); err != nil {
		t.Errorf("tensor bytes refused: %v", err)
	}
	cases := map[string]func(dir string) []string{
		"a file": func(dir string) []string {
			os.WriteFile(filepath.Join(dir, "sub/notes.txt"), []byte("from "+local), 0o644)
			return nil
		},
		"safetensors header": func(dir string) []string {
			writeSafetensors(t, filepath.Join(dir, adapterWeightsFile), local, nil)
			return nil
		},
		"the commit message": func(string) []string { return []string{"title", "Migrated path:" + local} },
		"a broken safetensor": func(dir string) []string {
			os.WriteFile(filepath.Join(dir, "x.safetensors"), []byte("\xff\xff"+local), 0o644)
			return nil
		},
	}
	for name, leak := range cases {
		dir := clean()
		texts := leak(dir)
		err := checkNoLocalPaths(dir, texts, "", local)
		if err == nil || !IsPermanent(err) || !strings.Contains(err.Error(), local) {
			t.Errorf("%s: err = %v, want a permanent refusal naming %s", name, err, local)
		}
	}
	// A relative path is checked as the absolute path it names.
	wd, _ := os.Getwd()
	dir = clean()
	os.WriteFile(filepath.Join(dir, "README.md"), []byte(filepath.Join(wd, "cache")), 0o644)
	if err := checkNoLocalPaths(dir, nil, "cache"); err == nil {
		t.Error("a relative cache dir was not checked as absolute")
	}
}

func TestPublicConvertRecord(t *testing.T) {
	raw := []byte(`{"tool":"lorasync","pair_key":"k1",
		"inputs":{"adapter":{"name":"local:x@sha256:1","dir":"/home/alice/x","id":"sha256:1"},
		          "old_base":{"name":"org/a@c0","dir":"/var/cache/lorasync/a","id":"commit:c0"}},
		"options":{"layer_map":"similarity","layer_map_requested":"similarity:/home/alice/sim.json","transfer":"lstsq"},
		"heads":[{"old_layer":0}]}`)
	got, err := publicConvertRecord(raw)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(got, []byte("/home")) || bytes.Contains(got, []byte("/var/cache")) {
		t.Errorf("local paths left:\n%s", got)
	}
	var rec struct {
		PairKey string `json:"pair_key"`
		Inputs  map[string]map[string]string
		Options map[string]string
		Heads   []map[string]int
	}
	if err := json.Unmarshal(got, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.PairKey != "k1" || rec.Inputs["adapter"]["name"] != "local:x@sha256:1" || rec.Inputs["old_base"]["id"] != "commit:c0" ||
		rec.Options["layer_map_requested"] != "similarity:sim.json" || rec.Options["transfer"] != "lstsq" || len(rec.Heads) != 1 {
		t.Errorf("record lost more than its paths: %+v", rec)
	}
	if _, err := publicConvertRecord([]byte(`{"inputs": 3}`)); err == nil {
		t.Error("a malformed record was accepted")
	}
}

// A converter that writes a local path into its output gets the job parked
// before anything is pushed.
func TestPushRefusedWhenOutputNamesLocalPath(t *testing.T) {
	adapter := filepath.Join(t.TempDir(), "math")
	h, _ := localAdapterHarness(t, adapter)
	h.conv.onConvert = func(req ConvertRequest) {
		os.MkdirAll(req.OutDir, 0o755)
		os.WriteFile(filepath.Join(req.OutDir, "notes.txt"), []byte("trained from "+req.AdapterDir), 0o644)
	}
	h.runOnce()
	j := h.job("math")
	if j.Status != state.Parked || !strings.Contains(j.LastError, "notes.txt names the local path "+adapter) {
		t.Fatalf("job = %+v", j)
	}
	if n := h.hub.uploadCount(); n != 0 {
		t.Errorf("%d uploads, want none", n)
	}
}

// A push made before local adapters were published by PublicID (its
// provenance names the adapter's path) is still recognised: no second push.
func TestReconcileRecognisesPathNamedProvenance(t *testing.T) {
	adapter := filepath.Join(t.TempDir(), "math")
	h, c1 := localAdapterHarness(t, adapter)
	rev, err := hashDir(adapter)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := json.Marshal(Provenance{Tool: "lorasync", Adapter: ProvenanceAdapter{ID: "path:" + adapter, Commit: rev}, NewBase: RepoCommit{"org/base", c1}})
	h.hub.commit("acme/math-base", "main", map[string][]byte{ProvenanceFile: old})
	h.runOnce()
	if j := h.job("math"); j.Status != state.Done || !j.Reconciled || h.hub.uploadCount() != 0 {
		t.Fatalf("job %+v, uploads %d: want the earlier push recognised", j, h.hub.uploadCount())
	}
}
