package hub

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lorasync/lorasync/hub/hubtest"
)

func TestRepoInfo(t *testing.T) {
	e := newEnv(t, []hubtest.Option{hubtest.WithLFSThreshold(lfsThreshold)}, nil)
	head := e.seed("model", seedFiles())
	ctx := context.Background()
	info, err := e.c.RepoInfo(ctx, "alice/model", "main")
	if err != nil {
		t.Fatal(err)
	}
	if info.ID != "alice/model" || info.SHA != head || info.Private || info.Gated != "" || info.LastModified.IsZero() {
		t.Errorf("info = %+v", info)
	}
	if info.CardData["base_model"] != "alice/base" {
		t.Errorf("cardData = %v, want base_model alice/base", info.CardData)
	}
	var found bool
	for _, s := range info.Siblings {
		if s.RFilename != "model.safetensors" {
			continue
		}
		found = true
		m, _ := e.srv.Stat("alice/model", "main", s.RFilename)
		if s.LFS == nil || s.LFS.SHA256 != m.SHA256 || s.Size != m.Size || s.LFS.Size != m.Size {
			t.Errorf("sibling %+v (lfs %+v), want size %d sha256 %s", s, s.LFS, m.Size, m.SHA256)
		}
	}
	if !found || len(info.Siblings) != len(seedFiles())+1 {
		t.Errorf("siblings %+v", info.Siblings)
	}

	_, err = e.c.RepoInfo(ctx, "alice/model", "no-such-branch")
	var he *Error
	if !errors.Is(err, ErrRevisionNotFound) || !errors.As(err, &he) || he.Code != "RevisionNotFound" ||
		!strings.Contains(err.Error(), "alice/model@no-such-branch") {
		t.Errorf("missing revision: %v", err)
	}
	if _, err := e.c.RepoInfo(ctx, "alice/nothing", ""); !errors.Is(err, ErrRepoNotFound) {
		t.Errorf("missing repo: %v", err)
	}
}

func TestGatedRepo(t *testing.T) {
	e := newEnv(t, nil, nil)
	if err := e.srv.CreateRepo("bob/gated", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Commit("bob/gated", "main", map[string][]byte{"w.bin": []byte("weights")}, "w"); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.SetGated("bob/gated", "manual"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	info, err := e.c.RepoInfo(ctx, "bob/gated", "")
	if err != nil || info.Gated != "manual" {
		t.Fatalf("RepoInfo = %+v, %v", info, err)
	}
	if _, err := e.c.DownloadFile(ctx, "bob/gated", "main", "w.bin"); !errors.Is(err, ErrGatedRepo) || !IsPermanent(err) {
		t.Errorf("download from gated repo: %v, want ErrGatedRepo", err)
	}
}

// TestListCommitsPagination walks more commits than fit a page, following
// absolute Link headers, and stops early with a limit.
func TestListCommitsPagination(t *testing.T) {
	e := newEnv(t, nil, nil)
	e.seed("m", map[string][]byte{"a": []byte("0")})
	for i := 1; i <= 120; i++ {
		if _, err := e.srv.Commit("alice/m", "main", map[string][]byte{"a": []byte(fmt.Sprint(i))}, fmt.Sprintf("c%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	want, _ := e.srv.Commits("alice/m", "main")
	ctx := context.Background()
	e.srv.ResetRequests()
	var got []Commit
	for cm, err := range e.c.ListCommits(ctx, "alice/m", "main", 0) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, cm)
	}
	if len(got) != len(want) {
		t.Fatalf("%d commits, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].ID != want[i].ID || got[i].Title != want[i].Title {
			t.Fatalf("commit %d = %s %q, want %s %q", i, got[i].ID, got[i].Title, want[i].ID, want[i].Title)
		}
	}
	if pages := len(requestsTo(e.srv.Requests(), http.MethodGet, "/api/models/alice/m/commits/")); pages < 3 {
		t.Errorf("%d pages fetched for %d commits; pagination not exercised", pages, len(want))
	}
	e.srv.ResetRequests()
	n := 0
	for _, err := range e.c.ListCommits(ctx, "alice/m", "main", 7) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 7 || len(e.srv.Requests()) != 1 {
		t.Errorf("limit 7: %d commits in %d requests", n, len(e.srv.Requests()))
	}
	// Breaking out of the loop early is fine too.
	for range e.c.ListCommits(ctx, "alice/m", "main", 0) {
		break
	}
}

func TestListModelsAndTreeAndRefs(t *testing.T) {
	// A clock that advances a minute per reading makes "newest first" unambiguous.
	var tick atomic.Int64
	clock := func() time.Time {
		return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(tick.Add(1)) * time.Minute)
	}
	e := newEnv(t, []hubtest.Option{hubtest.WithLFSThreshold(lfsThreshold), hubtest.WithClock(clock)}, nil)
	e.seed("older", map[string][]byte{"a": []byte("1")})
	head := e.seed("newer", seedFiles())
	if err := e.srv.CreateRepo("bob/other", false); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var ids []string
	for m, err := range e.c.ListModels(ctx, ModelQuery{Author: "alice"}) {
		if err != nil {
			t.Fatal(err)
		}
		if m.SHA == "" || m.LastModified.IsZero() {
			t.Errorf("listing lacks sha/lastModified: %+v", m)
		}
		ids = append(ids, m.ID)
	}
	if !slices.Equal(ids, []string{"alice/newer", "alice/older"}) {
		t.Errorf("models by alice, newest first = %v", ids)
	}
	ids = ids[:0]
	for m, err := range e.c.ListModels(ctx, ModelQuery{Search: "old", Limit: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	if !slices.Equal(ids, []string{"alice/older"}) {
		t.Errorf("search old = %v", ids)
	}

	tree, err := e.c.ListTree(ctx, "alice/newer", "main", "", true)
	if err != nil {
		t.Fatal(err)
	}
	var files, dirs []string
	for _, te := range tree {
		if te.Type == "directory" {
			dirs = append(dirs, te.Path)
		} else {
			files = append(files, te.Path)
		}
		if te.Path == "sub/dir/adapter.safetensors" && (te.LFS == nil || te.LFS.Size != 64<<10) {
			t.Errorf("LFS entry %+v", te)
		}
	}
	if len(files) != len(seedFiles())+1 || !slices.Contains(dirs, "sub/dir") {
		t.Errorf("tree files %v dirs %v", files, dirs)
	}
	top, err := e.c.ListTree(ctx, "alice/newer", "main", "sub", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, te := range top {
		if strings.Count(te.Path, "/") != 1 || !strings.HasPrefix(te.Path, "sub/") {
			t.Errorf("non-recursive listing of sub/ holds %q", te.Path)
		}
	}

	if err := e.srv.CreateTag("alice/newer", "v1", "main"); err != nil {
		t.Fatal(err)
	}
	refs, err := e.c.Refs(ctx, "alice/newer")
	if err != nil {
		t.Fatal(err)
	}
	if len(refs.Branches) != 1 || refs.Branches[0].Name != "main" || refs.Branches[0].TargetCommit != head ||
		len(refs.Tags) != 1 || refs.Tags[0].Name != "v1" || refs.Tags[0].TargetCommit != head {
		t.Errorf("refs = %+v", refs)
	}
}
