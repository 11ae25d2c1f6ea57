package hub

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorasync/lorasync/hub/hubtest"
)

// TestUploadLFSRoundTrip uploads a 50 MB file (multipart LFS: 6 parts of the
// fake's 8 MiB chunks) plus small files, downloads it into a fresh cache and
// compares bytes; then re-uploads the same content and expects no commit.
func TestUploadLFSRoundTrip(t *testing.T) {
	e := newEnv(t, nil, nil)
	ctx := context.Background()
	url, err := e.c.CreateRepo(ctx, "alice/adapter", false)
	if err != nil || url != e.srv.URL+"/alice/adapter" {
		t.Fatalf("CreateRepo = %q, %v", url, err)
	}
	if _, err := e.c.CreateRepo(ctx, "alice/adapter", false); err != nil {
		t.Fatalf("CreateRepo on an existing repo: %v (want exist_ok)", err)
	}
	const size = 50_000_000
	big := randBytes(50, size)
	local := filepath.Join(t.TempDir(), "adapter_model.safetensors")
	if err := os.WriteFile(local, big, 0o644); err != nil {
		t.Fatal(err)
	}
	opts := CommitOptions{
		Message: "add adapter",
		Files: []FileOp{
			{Path: "adapter_model.safetensors", LocalPath: local},
			{Path: "adapter_config.json", Content: []byte(`{"r":8}`)},
			{Path: "README.md", Content: []byte("---\nbase_model: alice/base\n---\nhi\n")},
		},
	}
	e.srv.ResetRequests()
	info, err := e.c.Upload(ctx, "alice/adapter", opts)
	if err != nil {
		t.Fatal(err)
	}
	head, _ := e.srv.Head("alice/adapter", "main")
	if info.OID != head || info.URL != e.srv.URL+"/alice/adapter/commit/"+head || info.NoOp {
		t.Fatalf("CommitInfo = %+v, head %s", info, head)
	}
	reqs := e.srv.Requests()
	var parts int
	for _, r := range reqs {
		if r.Host == "cdn" && r.Method == http.MethodPut {
			parts++
			if r.Auth {
				t.Errorf("presigned PUT %s carried the Hub token", r.Path)
			}
		}
	}
	if parts != 6 {
		t.Errorf("%d part uploads, want 6 (50e6 bytes in 8 MiB parts)", parts)
	}
	if len(requestsTo(reqs, http.MethodPost, "/api/validate-yaml")) != 1 {
		t.Error("README.md was not validated")
	}
	if m, err := e.srv.Stat("alice/adapter", "main", "adapter_model.safetensors"); err != nil || !m.LFS {
		t.Errorf("stored as LFS? %+v %v", m, err)
	}

	fresh := e.client(func(o *Options) { o.CacheDir = filepath.Join(t.TempDir(), "other") })
	dir, err := fresh.Snapshot(ctx, "alice/adapter", "main", SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "adapter_model.safetensors"))
	if err != nil || sha256.Sum256(got) != sha256.Sum256(big) {
		t.Fatalf("round trip differs (%d bytes, %v)", len(got), err)
	}

	again, err := e.c.Upload(ctx, "alice/adapter", opts)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(again.Unchanged)
	if !again.NoOp || again.OID != head || len(again.Unchanged) != 3 {
		t.Errorf("re-upload = %+v, want NoOp at %s with 3 unchanged files", again, head)
	}
}

// TestUploadSkipsUnchanged: only the changed file travels and is committed.
func TestUploadSkipsUnchanged(t *testing.T) {
	e := newEnv(t, []hubtest.Option{hubtest.WithLFSThreshold(lfsThreshold)}, nil)
	e.seed("m", map[string][]byte{"a.txt": []byte("same"), "w.bin": randBytes(3, 10<<10)})
	ctx := context.Background()
	info, err := e.c.Upload(ctx, "alice/m", CommitOptions{Message: "update", Files: []FileOp{
		{Path: "a.txt", Content: []byte("same")},
		{Path: "w.bin", Content: randBytes(3, 10<<10)},
		{Path: "b.txt", Content: []byte("new")},
	}, Deletes: []string{".gitattributes"}})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(info.Unchanged)
	if !slices.Equal(info.Unchanged, []string{"a.txt", "w.bin"}) || !slices.Equal(info.Uploaded, []string{"b.txt"}) {
		t.Errorf("unchanged %v uploaded %v", info.Unchanged, info.Uploaded)
	}
	files, _ := e.srv.Files("alice/m", "main")
	if !slices.Equal(files, []string{"a.txt", "b.txt", "w.bin"}) {
		t.Errorf("files after commit: %v", files)
	}
}

// TestStaleParentCommit: someone else pushed after we read the head; our
// commit with the old parentCommit fails with ErrConflict and changes nothing.
func TestStaleParentCommit(t *testing.T) {
	e := newEnv(t, nil, nil)
	old := e.seed("m", map[string][]byte{"a.txt": []byte("1")})
	theirs, err := e.srv.Commit("alice/m", "main", map[string][]byte{"a.txt": []byte("2")}, "theirs")
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.c.Upload(context.Background(), "alice/m", CommitOptions{
		Message: "ours", ParentCommit: old, Files: []FileOp{{Path: "a.txt", Content: []byte("3")}}})
	if !errors.Is(err, ErrConflict) || !IsPermanent(err) {
		t.Fatalf("err = %v, want permanent ErrConflict", err)
	}
	var he *Error
	if !errors.As(err, &he) || he.Status != http.StatusPreconditionFailed || he.Repo != "alice/m" || he.Revision != "main" {
		t.Errorf("error details: %+v", he)
	}
	if head, _ := e.srv.Head("alice/m", "main"); head != theirs {
		t.Errorf("head moved to %s, want %s", head, theirs)
	}
	if n := len(requestsTo(e.srv.Requests(), http.MethodPost, "/api/models/alice/m/commit/")); n != 1 {
		t.Errorf("%d commit POSTs, want 1 (a conflict is not retried)", n)
	}
}

// TestLostCommitAnswer covers both ways a commit answer gets lost: the
// connection drops before the Hub applied it (the client re-checks the head,
// sees it unmoved and sends again), and after (the client sees its own commit
// on top of the old head and does not duplicate it).
func TestLostCommitAnswer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cut     int64
		posts   int
		commits int
		message string
	}{
		{"before-apply", 0, 2, 1, "ours"},
		{"after-apply", 1, 1, 1, "ours"},
		// The Hub titles a commit with the first line of its summary only.
		{"after-apply-multiline", 1, 1, 1, "ours\n\nwith a second paragraph"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil, nil)
			base := e.seed("m", map[string][]byte{"a.txt": []byte("1")})
			before, _ := e.srv.Commits("alice/m", "main")
			e.srv.Inject(hubtest.Fault{Host: "hub", Method: http.MethodPost, PathPrefix: "/api/models/alice/m/commit/",
				CutAfterBytes: tc.cut, Times: 1})
			info, err := e.c.Upload(context.Background(), "alice/m", CommitOptions{
				Message: tc.message, Files: []FileOp{{Path: "a.txt", Content: []byte("2")}}})
			if err != nil {
				t.Fatal(err)
			}
			after, _ := e.srv.Commits("alice/m", "main")
			if got := len(after) - len(before); got != tc.commits {
				t.Errorf("%d new commits, want %d", got, tc.commits)
			}
			if after[0].ID != info.OID || after[0].Title != "ours" || after[0].Parents[0] != base {
				t.Errorf("head %+v, CommitInfo %+v", after[0], info)
			}
			if n := len(requestsTo(e.srv.Requests(), http.MethodPost, "/api/models/alice/m/commit/")); n != tc.posts {
				t.Errorf("%d commit POSTs, want %d", n, tc.posts)
			}
		})
	}
}

// TestCreatePRAndBranch commits to a new branch and opens a pull request.
func TestCreatePRAndBranch(t *testing.T) {
	e := newEnv(t, nil, nil)
	e.seed("m", map[string][]byte{"a.txt": []byte("1")})
	ctx := context.Background()
	if err := e.c.CreateBranch(ctx, "alice/m", "migrated", ""); err != nil {
		t.Fatal(err)
	}
	if err := e.c.CreateBranch(ctx, "alice/m", "migrated", ""); err != nil {
		t.Fatalf("existing branch: %v (want exist_ok)", err)
	}
	info, err := e.c.Upload(ctx, "alice/m", CommitOptions{Branch: "migrated", Message: "on branch",
		Files: []FileOp{{Path: "b.txt", Content: []byte("b")}}})
	if err != nil {
		t.Fatal(err)
	}
	if head, _ := e.srv.Head("alice/m", "migrated"); head != info.OID {
		t.Errorf("branch head %s, commit %s", head, info.OID)
	}
	pr, err := e.c.Upload(ctx, "alice/m", CommitOptions{Message: "as PR", CreatePR: true,
		Files: []FileOp{{Path: "c.txt", Content: []byte("c")}}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pr.PullRequestURL, e.srv.URL+"/alice/m/discussions/") {
		t.Errorf("PullRequestURL = %q", pr.PullRequestURL)
	}
	refs, err := e.c.Refs(ctx, "alice/m")
	if err != nil {
		t.Fatal(err)
	}
	if len(refs.PullRequests) != 1 || refs.PullRequests[0].TargetCommit != pr.OID {
		t.Errorf("pull requests %+v, want one at %s", refs.PullRequests, pr.OID)
	}
}

// TestUploadRefusesBadInput: validation happens before any request.
func TestUploadRefusesBadInput(t *testing.T) {
	e := newEnv(t, nil, nil)
	e.seed("m", map[string][]byte{"a.txt": []byte("1")})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		opts CommitOptions
		want error
	}{
		{"no message", CommitOptions{Files: []FileOp{{Path: "x", Content: []byte("x")}}}, ErrBadRequest},
		{"dotdot", CommitOptions{Message: "m", Files: []FileOp{{Path: "../x", Content: []byte("x")}}}, ErrUnsafePath},
		{"absolute", CommitOptions{Message: "m", Files: []FileOp{{Path: "/x", Content: []byte("x")}}}, ErrUnsafePath},
		{"git dir", CommitOptions{Message: "m", Files: []FileOp{{Path: ".git/config", Content: []byte("x")}}}, ErrUnsafePath},
		{"duplicate", CommitOptions{Message: "m", Files: []FileOp{{Path: "x", Content: []byte("1")}, {Path: "x", Content: []byte("2")}}}, ErrBadRequest},
		{"bad parent", CommitOptions{Message: "m", ParentCommit: "abc"}, ErrBadRequest},
		{"missing file", CommitOptions{Message: "m", Files: []FileOp{{Path: "x", LocalPath: "/nonexistent/file"}}}, ErrBadRequest},
	} {
		e.srv.ResetRequests()
		if _, err := e.c.Upload(ctx, "alice/m", tc.opts); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
		if n := len(e.srv.Requests()); n != 0 {
			t.Errorf("%s: %d requests before refusing", tc.name, n)
		}
	}
	// Broken README front matter is refused by the Hub before any upload.
	e.srv.ResetRequests()
	_, err := e.c.Upload(ctx, "alice/m", CommitOptions{Message: "m", Files: []FileOp{
		{Path: "README.md", Content: []byte("---\nbase_model: [unclosed\n---\n")}}})
	if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "README.md") {
		t.Errorf("bad YAML: %v", err)
	}
	if n := len(requestsTo(e.srv.Requests(), http.MethodPost, "/api/models/alice/m/preupload")); n != 0 {
		t.Errorf("preupload happened after a YAML refusal")
	}
}

// hookHandler runs fn when a record with message msg is logged.
type hookHandler struct {
	slog.Handler
	msg string
	fn  func()
}

func (h hookHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.fn()
	}
	return h.Handler.Handle(ctx, r)
}

// TestLostCommitAnswerThenOthersPush: our commit landed, its answer was
// lost, and someone pushed on top before we looked. The client still finds
// its commit below the new head and does not commit again.
func TestLostCommitAnswerThenOthersPush(t *testing.T) {
	e := newEnv(t, nil, nil)
	base := e.seed("m", map[string][]byte{"a.txt": []byte("1")})
	var theirs string
	c := e.client(func(o *Options) {
		o.Logger = slog.New(hookHandler{Handler: o.Logger.Handler(), msg: "commit answer lost; checking the branch head",
			fn: func() {
				var err error
				if theirs, err = e.srv.Commit("alice/m", "main", map[string][]byte{"b.txt": []byte("b")}, "theirs"); err != nil {
					t.Error(err)
				}
			}})
	})
	e.srv.Inject(hubtest.Fault{Host: "hub", Method: http.MethodPost, PathPrefix: "/api/models/alice/m/commit/",
		CutAfterBytes: 1, Times: 1})
	info, err := c.Upload(context.Background(), "alice/m", CommitOptions{
		Message: "ours", ParentCommit: base, Files: []FileOp{{Path: "a.txt", Content: []byte("2")}}})
	if err != nil {
		t.Fatal(err)
	}
	hist, _ := e.srv.Commits("alice/m", "main")
	if hist[0].ID != theirs || hist[1].ID != info.OID || hist[1].Title != "ours" || hist[2].ID != base {
		t.Errorf("history %v %v %v, CommitInfo %+v", hist[0], hist[1], hist[2], info)
	}
	if n := len(requestsTo(e.srv.Requests(), http.MethodPost, "/api/models/alice/m/commit/")); n != 1 {
		t.Errorf("%d commit POSTs, want 1", n)
	}
}

// TestLostCommitAnswerLandsLate: the answer to a commit without a
// parentCommit is lost, the branch head shows no sign of it, and the first
// attempt lands only after that check, just before the resend. The resend
// carries the head the client checked as its parentCommit, so the Hub
// refuses it instead of committing the same change twice, and the client's
// next check finds the late commit.
func TestLostCommitAnswerLandsLate(t *testing.T) {
	e := newEnv(t, nil, nil)
	base := e.seed("m", map[string][]byte{"a.txt": []byte("1")})
	var late string
	c := e.client(func(o *Options) {
		o.Logger = slog.New(hookHandler{Handler: slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}),
			msg: "commit not on the branch; sending it again",
			fn: func() {
				if late != "" {
					return
				}
				var err error // the first attempt, applied late
				if late, err = e.srv.Commit("alice/m", "main", map[string][]byte{"a.txt": []byte("2")}, "ours"); err != nil {
					t.Error(err)
				}
			}})
	})
	e.srv.Inject(hubtest.Fault{Host: "hub", Method: http.MethodPost, PathPrefix: "/api/models/alice/m/commit/",
		Status: http.StatusGatewayTimeout, Times: 1})
	info, err := c.Upload(context.Background(), "alice/m", CommitOptions{
		Message: "ours", Files: []FileOp{{Path: "a.txt", Content: []byte("2")}}})
	if err != nil {
		t.Fatal(err)
	}
	hist, _ := e.srv.Commits("alice/m", "main")
	if late == "" || info.OID != late || hist[0].ID != late || hist[1].ID != base {
		t.Errorf("history %v, late commit %s, CommitInfo %+v: want one commit on top of %s", hist, late, info, base)
	}
	if n := len(requestsTo(e.srv.Requests(), http.MethodPost, "/api/models/alice/m/commit/")); n != 2 {
		t.Errorf("%d commit POSTs, want 2 (the lost one and the refused resend)", n)
	}
}
