package hubtest

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestRepoInfo(t *testing.T) {
	s, sha := newSeeded(t)
	var info struct {
		ID           string         `json:"id"`
		OID          string         `json:"_id"`
		SHA          string         `json:"sha"`
		LastModified string         `json:"lastModified"`
		CreatedAt    string         `json:"createdAt"`
		Private      bool           `json:"private"`
		Gated        any            `json:"gated"`
		Disabled     bool           `json:"disabled"`
		Tags         []string       `json:"tags"`
		CardData     map[string]any `json:"cardData"`
		Siblings     []siblingJSON  `json:"siblings"`
	}
	getJSON(t, s.URL+"/api/models/alice/base", "", &info)
	if info.ID != "alice/base" || len(info.OID) != 24 || info.SHA != sha || info.Private || info.Gated != false || info.Disabled {
		t.Fatalf("info %+v", info)
	}
	for _, ts := range []string{info.LastModified, info.CreatedAt} {
		if _, err := time.Parse(time.RFC3339, ts); err != nil {
			t.Fatalf("timestamp %q: %v", ts, err)
		}
	}
	if info.CardData["license"] != "mit" || info.CardData["base_model"] != "org/root" {
		t.Fatalf("cardData %v", info.CardData)
	}
	if strings.Join(info.Tags, ",") != "lora,license:mit,base_model:org/root" {
		t.Fatalf("tags %v", info.Tags)
	}
	names := []string{}
	for _, sb := range info.Siblings {
		names = append(names, sb.RFilename)
		if sb.Size != nil || sb.LFS != nil {
			t.Fatalf("siblings carry sizes without blobs=true: %+v", sb)
		}
	}
	if strings.Join(names, ",") != ".gitattributes,README.md,config.json,model.safetensors" {
		t.Fatalf("siblings %v", names)
	}
	getJSON(t, s.URL+"/api/models/alice/base/revision/main?blobs=true", "", &info)
	for _, sb := range info.Siblings {
		if sb.RFilename == "model.safetensors" {
			ptr := lfsPointer(sha256Hex(randomBytes(1, 3000)), 3000)
			if *sb.Size != 3000 || sb.LFS == nil || sb.LFS.SHA256 != sha256Hex(randomBytes(1, 3000)) ||
				sb.LFS.PointerSize != len(ptr) || sb.BlobID != gitBlobSHA1(ptr) {
				t.Fatalf("LFS sibling %+v %+v", sb, sb.LFS)
			}
		}
		if sb.RFilename == "config.json" && (sb.LFS != nil || sb.BlobID != gitBlobSHA1([]byte(`{"model_type":"llama","hidden_size":64}`))) {
			t.Fatalf("regular sibling %+v", sb)
		}
	}
	// The revision is URL-escaped and may contain slashes.
	if err := s.CreateBranch("alice/base", "feature/x", "main"); err != nil {
		t.Fatal(err)
	}
	getJSON(t, s.URL+"/api/models/alice/base/revision/feature%2Fx", "", &info)
	if info.SHA != sha {
		t.Fatalf("revision feature/x: sha %s", info.SHA)
	}
	resp, body := do(t, nil, "GET", s.URL+"/api/models/alice/base/revision/nope", "", nil)
	wantError(t, resp, body, 404, "RevisionNotFound")
	// expand narrows the answer to _id, id and the expanded fields.
	var narrow map[string]any
	getJSON(t, s.URL+"/api/models/alice/base?expand=sha&expand=private", "", &narrow)
	if len(narrow) != 4 || narrow["sha"] != sha {
		t.Fatalf("expanded info %v", narrow)
	}
}

func TestCardDataEdgeCases(t *testing.T) {
	s, _ := newSeeded(t)
	for _, c := range []struct {
		readme string
		want   string // fmt of cardData; "<nil>" when absent
	}{
		{"---\n---\n# empty front matter\n", "<nil>"},
		{"# no front matter\n", "<nil>"},
		{"---\nlicense: [broken\n---\n", "<nil>"},
		{"---\r\nlicense: mit\r\n---\r\n", "map[license:mit]"},
		{"---\nlicense: mit\n---", "map[license:mit]"},
		{"---\nnested:\n  1: one\n  true: yes\n---\n", "map[nested:map[1:one true:yes]]"},
	} {
		if _, err := s.Commit("alice/base", "main", map[string][]byte{"README.md": []byte(c.readme)}, "card"); err != nil {
			t.Fatal(err)
		}
		var info map[string]any
		getJSON(t, s.URL+"/api/models/alice/base", "", &info)
		if got := fmt.Sprint(info["cardData"]); got != c.want {
			t.Errorf("README %q: cardData %s, want %s", c.readme, got, c.want)
		}
	}
}

func TestRefs(t *testing.T) {
	s, sha := newSeeded(t)
	if err := s.CreateBranch("alice/base", "dev", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTag("alice/base", "v1", "main"); err != nil {
		t.Fatal(err)
	}
	var refs struct {
		Branches, Tags, Converts []refJSON
		PullRequests             []refJSON `json:"pullRequests"`
	}
	getJSON(t, s.URL+"/api/models/alice/base/refs", "", &refs)
	want := []refJSON{{"dev", "refs/heads/dev", sha}, {"main", "refs/heads/main", sha}}
	if fmt.Sprint(refs.Branches) != fmt.Sprint(want) || len(refs.Tags) != 1 || refs.Tags[0].Ref != "refs/tags/v1" || refs.PullRequests != nil {
		t.Fatalf("refs %+v", refs)
	}
	getJSON(t, s.URL+"/api/models/alice/base/refs?include_prs=1", "", &refs)
	if refs.PullRequests == nil {
		t.Fatalf("include_prs=1 must list pullRequests (even empty)")
	}
}

var linkRE = regexp.MustCompile(`^<([^>]+)>; rel="next"$`)

func TestCommitsPagination(t *testing.T) {
	s, _ := newSeeded(t)
	for i := range 5 {
		if _, err := s.Commit("alice/base", "main", map[string][]byte{"n.txt": []byte(fmt.Sprint(i))}, fmt.Sprintf("step %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	all, _ := s.Commits("alice/base", "main") // 7: initial, add weights, 5 steps
	if len(all) != 7 || all[0].Title != "step 4" || all[6].Title != "initial commit" {
		t.Fatalf("history %d commits, newest %q", len(all), all[0].Title)
	}
	var got []commitJSON
	next := s.URL + "/api/models/alice/base/commits/main?limit=3"
	pages := 0
	for next != "" {
		var page []commitJSON
		resp := getJSON(t, next, "", &page)
		got = append(got, page...)
		pages++
		next = ""
		if l := resp.Header.Get("Link"); l != "" {
			m := linkRE.FindStringSubmatch(l)
			if m == nil || !strings.HasPrefix(m[1], s.URL+"/") {
				t.Fatalf("Link %q is not an absolute rel=next URL", l)
			}
			next = m[1]
		}
	}
	if pages != 3 || len(got) != 7 {
		t.Fatalf("%d pages, %d commits; want 3 and 7", pages, len(got))
	}
	for i, c := range got {
		if c.ID != all[i].ID || c.Title != all[i].Title || len(c.Authors) != 1 || c.Authors[0].User != "alice" {
			t.Fatalf("commit %d: %+v vs %+v", i, c, all[i])
		}
	}
}

func TestListModels(t *testing.T) {
	clock := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	s, _ := newSeeded(t, WithClock(func() time.Time { clock = clock.Add(time.Minute); return clock }))
	for _, id := range []string{"alice/lora-a", "alice/lora-b", "bob/lora-c"} {
		if err := s.CreateRepo(id, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateRepo("alice/hidden-lora", true); err != nil {
		t.Fatal(err)
	}
	// Touch lora-a last: it is the most recently modified.
	if _, err := s.Commit("alice/lora-a", "main", map[string][]byte{"x": []byte("x")}, "touch"); err != nil {
		t.Fatal(err)
	}
	list := func(query, token string) ([]map[string]any, *http.Response) {
		var out []map[string]any
		resp := getJSON(t, s.URL+"/api/models?"+query, token, &out)
		return out, resp
	}
	ids := func(items []map[string]any) string {
		var b []string
		for _, it := range items {
			b = append(b, it["id"].(string))
		}
		return strings.Join(b, ",")
	}
	items, _ := list("author=alice&search=lora&sort=lastModified&direction=-1", "")
	if ids(items) != "alice/lora-a,alice/lora-b" {
		t.Fatalf("public alice loras by lastModified: %s", ids(items))
	}
	if _, ok := items[0]["sha"]; ok {
		t.Fatalf("listing without full=true must omit sha: %v", items[0])
	}
	items, _ = list("author=alice&search=lora&sort=lastModified&direction=-1&full=true", aliceToken)
	if ids(items) != "alice/lora-a,alice/hidden-lora,alice/lora-b" || items[0]["sha"] == nil || items[0]["lastModified"] == nil {
		t.Fatalf("owner's full listing: %s %v", ids(items), items[0])
	}
	items, _ = list("search=lora&expand=lastModified", bobToken)
	if len(items) != 3 || items[0]["lastModified"] == nil || items[0]["sha"] != nil {
		t.Fatalf("bob's expanded listing: %v", items)
	}
	if _, err := s.Commit("bob/lora-c", "main", map[string][]byte{"README.md": []byte("---\ntags: [peft]\nbase_model: alice/base\n---\n")}, "card"); err != nil {
		t.Fatal(err)
	}
	items, _ = list("filter=peft&filter=base_model:alice/base", "")
	if ids(items) != "bob/lora-c" {
		t.Fatalf("filter by tags: %s", ids(items))
	}
	items, resp := list("search=lora&limit=2", "")
	m := linkRE.FindStringSubmatch(resp.Header.Get("Link"))
	if len(items) != 2 || m == nil || !strings.HasPrefix(m[1], s.URL) {
		t.Fatalf("paged listing: %d items, Link %q", len(items), resp.Header.Get("Link"))
	}
	var rest []map[string]any
	getJSON(t, m[1], "", &rest)
	if len(rest) != 1 {
		t.Fatalf("second page: %d items", len(rest))
	}
}

func TestTreeAndPathsInfo(t *testing.T) {
	s, sha := newSeeded(t)
	if _, err := s.Commit("alice/base", "main", map[string][]byte{"sub/dir/a.json": []byte("{}"), "sub/b.txt": []byte("b")}, "nested"); err != nil {
		t.Fatal(err)
	}
	var top []treeItemJSON
	getJSON(t, s.URL+"/api/models/alice/base/tree/main", "", &top)
	var paths []string
	for _, it := range top {
		paths = append(paths, it.Type+":"+it.Path)
	}
	if strings.Join(paths, ",") != "file:.gitattributes,file:README.md,file:config.json,file:model.safetensors,directory:sub" {
		t.Fatalf("top level %v", paths)
	}
	var rec []treeItemJSON
	getJSON(t, s.URL+"/api/models/alice/base/tree/main/sub?recursive=true", "", &rec)
	paths = nil
	for _, it := range rec {
		paths = append(paths, it.Type+":"+it.Path)
	}
	if strings.Join(paths, ",") != "file:sub/b.txt,directory:sub/dir,file:sub/dir/a.json" {
		t.Fatalf("recursive sub %v", paths)
	}
	resp, body := do(t, nil, "GET", s.URL+"/api/models/alice/base/tree/main/nope", "", nil)
	wantError(t, resp, body, 404, "EntryNotFound")

	var infos []treeItemJSON
	_, body = postJSON(t, s.URL+"/api/models/alice/base/paths-info/main", "", map[string]any{
		"paths": []string{"model.safetensors", "sub", "missing"}, "expand": true,
	})
	if err := jsonUnmarshal(body, &infos); err != nil || len(infos) != 2 {
		t.Fatalf("paths-info %s (%v)", body, err)
	}
	if infos[0].LFS == nil || infos[0].LFS.OID != sha256Hex(randomBytes(1, 3000)) || infos[0].LastCommit.ID != sha {
		t.Fatalf("paths-info of the LFS file: %+v", infos[0])
	}
	if infos[1].Type != "directory" || infos[1].LastCommit.Title != "nested" {
		t.Fatalf("paths-info of sub: %+v", infos[1])
	}
	// Python sends a form with repeated paths.
	resp, body = do(t, nil, "POST", s.URL+"/api/models/alice/base/paths-info/main", "", []byte("paths=config.json&paths=README.md"),
		"Content-Type", "application/x-www-form-urlencoded")
	var plain []treeItemJSON
	if err := jsonUnmarshal(body, &plain); err != nil || resp.StatusCode != 200 || len(plain) != 2 || plain[0].LastCommit != nil {
		t.Fatalf("form paths-info: %d %s", resp.StatusCode, body)
	}
}

func TestWhoamiAndValidateYAML(t *testing.T) {
	s, _ := newSeeded(t)
	var me struct {
		Name string
		Orgs []struct{ Name string }
	}
	getJSON(t, s.URL+"/api/whoami-v2", aliceToken, &me)
	if me.Name != "alice" || len(me.Orgs) != 1 || me.Orgs[0].Name != "acme" {
		t.Fatalf("whoami %+v", me)
	}
	if resp, _ := do(t, nil, "GET", s.URL+"/api/whoami-v2", "", nil); resp.StatusCode != 401 {
		t.Fatalf("anonymous whoami: %d", resp.StatusCode)
	}
	if resp, body := postJSON(t, s.URL+"/api/validate-yaml", aliceToken, map[string]any{"content": "---\nlicense: mit\n---\n", "repoType": "model"}); resp.StatusCode != 200 {
		t.Fatalf("validate-yaml: %d %s", resp.StatusCode, body)
	}
	if resp, _ := postJSON(t, s.URL+"/api/validate-yaml", aliceToken, map[string]any{"content": "---\nlicense: [mit\n---\n"}); resp.StatusCode != 400 {
		t.Fatalf("validate-yaml with broken YAML: %d, want 400", resp.StatusCode)
	}
}

func TestContentAddressing(t *testing.T) {
	// Two servers seeded alike produce the same commit ids: ids depend on
	// content, parents, author and message only.
	clockA := func() time.Time { return time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC) }
	a, shaA := newSeeded(t, WithClock(clockA))
	b, shaB := newSeeded(t)
	if shaA != shaB {
		t.Fatalf("same seeding, different commit ids: %s vs %s", shaA, shaB)
	}
	// Same content at two paths shares one blob id; a changed message changes the commit id.
	c1, _ := a.Commit("alice/base", "main", map[string][]byte{"x/one.txt": []byte("same"), "y/two.txt": []byte("same")}, "dup")
	c2, _ := b.Commit("alice/base", "main", map[string][]byte{"x/one.txt": []byte("same"), "y/two.txt": []byte("same")}, "dup!")
	m1, _ := a.Stat("alice/base", "main", "x/one.txt")
	m2, _ := a.Stat("alice/base", "main", "y/two.txt")
	if m1.BlobID != m2.BlobID || m1.BlobID != gitBlobSHA1([]byte("same")) || c1 == c2 || !isCommitID(c1) {
		t.Fatalf("blob ids %s %s, commits %s %s", m1.BlobID, m2.BlobID, c1, c2)
	}
	// The LFS rule: extension patterns, or the size threshold.
	s := NewTB(t, WithLFSThreshold(100))
	if err := s.CreateRepo("u/r", false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit("u/r", "main", map[string][]byte{
		"small.txt": make([]byte, 99), "large.txt": make([]byte, 100), "w.bin": []byte("x"), "saved_model/v/x.pb2": []byte("x"),
	}, "mixed"); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{"small.txt": false, "large.txt": true, "w.bin": true, "saved_model/v/x.pb2": true} {
		if m, _ := s.Stat("u/r", "main", p); m.LFS != want {
			t.Errorf("%s: LFS=%v, want %v", p, m.LFS, want)
		}
	}
	// Deleting through Commit: a nil value.
	if _, err := s.Commit("u/r", "main", map[string][]byte{"small.txt": nil}, "rm"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.File("u/r", "main", "small.txt"); err == nil {
		t.Fatalf("small.txt survived its deletion")
	}
	if _, err := s.Commit("u/r", "main", map[string][]byte{"small.txt": nil}, "rm again"); err == nil {
		t.Fatalf("deleting a missing file must fail")
	}
}
