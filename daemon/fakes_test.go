package daemon

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// fakeHub is an in-memory Hub with real behaviour: repos with branches,
// commits that inherit their parent's files, pull-request refs, parent
// commit checks, and snapshots written to disk. Failures can be injected
// per method.
type fakeHub struct {
	mu       sync.Mutex
	repos    map[string]*fakeRepo
	snapRoot string
	seq      int
	failures map[string]int // method -> calls left to fail with a 503
	calls    map[string]int
	uploads  []Upload
}

type fakeRepo struct {
	private  bool
	branches map[string]string // branch or "refs/pr/N" -> commit
	commits  map[string]map[string][]byte
	prs      []string
}

var errUnavailable = errors.New("503 Service Unavailable")

func newFakeHub(snapRoot string) *fakeHub {
	return &fakeHub{repos: map[string]*fakeRepo{}, snapRoot: snapRoot, failures: map[string]int{}, calls: map[string]int{}}
}

func (h *fakeHub) failNext(method string, n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failures[method] = n
}

func (h *fakeHub) count(method string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[method]
}

func (h *fakeHub) uploadCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.uploads)
}

// enter counts a call and returns the injected failure, if any. h.mu held.
func (h *fakeHub) enter(method, what string) error {
	h.calls[method]++
	if h.failures[method] > 0 {
		h.failures[method]--
		return fmt.Errorf("fake hub: %s %s: %w", method, what, errUnavailable)
	}
	return nil
}

// commit adds a commit on branch (creating repo and branch as needed) whose
// files are the parent's plus files, and returns its id.
func (h *fakeHub) commit(repo, branch string, files map[string][]byte) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.commitLocked(repo, branch, files, false)
}

func (h *fakeHub) commitLocked(repo, branch string, files map[string][]byte, private bool) string {
	r, ok := h.repos[repo]
	if !ok {
		r = &fakeRepo{private: private, branches: map[string]string{}, commits: map[string]map[string][]byte{}}
		h.repos[repo] = r
	}
	h.seq++
	sum := sha1.Sum([]byte(fmt.Sprintf("%s-%d", repo, h.seq)))
	id := hex.EncodeToString(sum[:])
	all := map[string][]byte{}
	if parent, ok := r.branches[branch]; ok {
		for k, v := range r.commits[parent] {
			all[k] = v
		}
	}
	for k, v := range files {
		all[k] = v
	}
	r.commits[id] = all
	r.branches[branch] = id
	return id
}

func (h *fakeHub) resolve(repo, rev string) (*fakeRepo, string, error) {
	r, ok := h.repos[repo]
	if !ok {
		return nil, "", fmt.Errorf("fake hub: repo %s: %w", repo, ErrNotFound)
	}
	if c, ok := r.branches[rev]; ok {
		return r, c, nil
	}
	if _, ok := r.commits[rev]; ok {
		return r, rev, nil
	}
	return nil, "", fmt.Errorf("fake hub: %s@%s: revision %w", repo, rev, ErrNotFound)
}

func (h *fakeHub) Head(ctx context.Context, repo, rev string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.enter("Head", repo); err != nil {
		return "", err
	}
	_, c, err := h.resolve(repo, rev)
	return c, err
}

func (h *fakeHub) ListModels(ctx context.Context, author string) ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.enter("ListModels", author); err != nil {
		return nil, err
	}
	var out []string
	for id := range h.repos {
		if strings.HasPrefix(id, author+"/") {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (h *fakeHub) Snapshot(ctx context.Context, repo, commit string) (string, int64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.enter("Snapshot", repo); err != nil {
		return "", 0, err
	}
	r, c, err := h.resolve(repo, commit)
	if err != nil {
		return "", 0, err
	}
	dir := filepath.Join(h.snapRoot, strings.ReplaceAll(repo, "/", "--"), c)
	if _, err := os.Stat(dir); err == nil {
		return dir, 0, nil
	}
	var n int64
	for p, data := range r.commits[c] {
		fp := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(fp), 0o755)
		if err := os.WriteFile(fp, data, 0o644); err != nil {
			return "", 0, err
		}
		n += int64(len(data))
	}
	return dir, n, nil
}

func (h *fakeHub) ReadFile(ctx context.Context, repo, rev, path string) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.enter("ReadFile", repo); err != nil {
		return nil, err
	}
	r, c, err := h.resolve(repo, rev)
	if err != nil {
		return nil, err
	}
	data, ok := r.commits[c][path]
	if !ok {
		return nil, fmt.Errorf("fake hub: %s@%s %s: %w", repo, rev, path, ErrNotFound)
	}
	return data, nil
}

func (h *fakeHub) PullRequests(ctx context.Context, repo string) ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.enter("PullRequests", repo); err != nil {
		return nil, err
	}
	r, ok := h.repos[repo]
	if !ok {
		return nil, fmt.Errorf("fake hub: repo %s: %w", repo, ErrNotFound)
	}
	return append([]string(nil), r.prs...), nil
}

func (h *fakeHub) Upload(ctx context.Context, u Upload) (Pushed, error) {
	files := map[string][]byte{}
	err := filepath.WalkDir(u.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(u.Dir, p)
		files[filepath.ToSlash(rel)], err = os.ReadFile(p)
		return err
	})
	if err != nil {
		return Pushed{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.enter("Upload", u.Repo); err != nil {
		return Pushed{}, err
	}
	r := h.repos[u.Repo]
	head := ""
	if r != nil {
		head = r.branches[u.Revision]
	}
	if u.ParentCommit != "" && head != u.ParentCommit {
		return Pushed{}, fmt.Errorf("fake hub: commit to %s@%s: parent %s is not the head %s (412)", u.Repo, u.Revision, u.ParentCommit, head)
	}
	h.uploads = append(h.uploads, u)
	if !u.CreatePR {
		return Pushed{Commit: h.commitLocked(u.Repo, u.Revision, files, u.Private)}, nil
	}
	if r == nil {
		return Pushed{}, fmt.Errorf("fake hub: pull request on %s: %w", u.Repo, ErrNotFound)
	}
	ref := fmt.Sprintf("refs/pr/%d", len(r.prs)+1)
	r.branches[ref] = head // the PR starts from the base branch
	c := h.commitLocked(u.Repo, ref, files, false)
	r.prs = append(r.prs, ref)
	return Pushed{Commit: c, PullRequest: ref}, nil
}

// file returns a file of repo at rev, for assertions.
func (h *fakeHub) file(repo, rev, path string) ([]byte, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, c, err := h.resolve(repo, rev)
	if err != nil {
		return nil, false
	}
	data, ok := r.commits[c][path]
	return data, ok
}

// fakeConverter behaves like a converter on tiny JSON "models": it checks
// its inputs as the real one would (a parseable adapter config with a
// rank, weights present, a base config on both sides), writes an adapter
// naming the new base, and verifies outputs. It records how many Convert
// calls ran at once per base pair.
type fakeConverter struct {
	mu         sync.Mutex
	calls      int
	running    map[string]int
	maxPerPair int
	delay      time.Duration
	// onConvert, if set, runs at the start of every Convert.
	onConvert func(ConvertRequest)
}

func newFakeConverter() *fakeConverter { return &fakeConverter{running: map[string]int{}} }

func (c *fakeConverter) Convert(ctx context.Context, req ConvertRequest) (ConvertResult, error) {
	if c.onConvert != nil {
		c.onConvert(req)
	}
	pair := req.OldBaseDir + "->" + req.NewBaseDir
	c.mu.Lock()
	c.calls++
	c.running[pair]++
	c.maxPerPair = max(c.maxPerPair, c.running[pair])
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running[pair]--
		c.mu.Unlock()
	}()
	if c.delay > 0 {
		select {
		case <-time.After(c.delay):
		case <-ctx.Done():
			return ConvertResult{}, ctx.Err()
		}
	}
	for _, p := range []string{filepath.Join(req.OldBaseDir, "config.json"), filepath.Join(req.NewBaseDir, "config.json")} {
		if _, err := os.Stat(p); err != nil {
			return ConvertResult{}, Permanent(fmt.Errorf("base: %w", err))
		}
	}
	raw, err := os.ReadFile(filepath.Join(req.AdapterDir, adapterConfigFile))
	if err != nil {
		return ConvertResult{}, Permanent(fmt.Errorf("adapter %s: %w", req.AdapterDir, err))
	}
	var ac map[string]any
	if err := json.Unmarshal(raw, &ac); err != nil {
		return ConvertResult{}, Permanent(fmt.Errorf("adapter %s: malformed %s: %w", req.AdapterDir, adapterConfigFile, err))
	}
	r, _ := ac["r"].(float64)
	if r < 1 {
		return ConvertResult{}, Permanent(fmt.Errorf("adapter %s: %s: rank r missing or < 1", req.AdapterDir, adapterConfigFile))
	}
	weights, err := os.ReadFile(filepath.Join(req.AdapterDir, adapterWeightsFile))
	if err != nil {
		return ConvertResult{}, Permanent(fmt.Errorf("adapter %s: %w", req.AdapterDir, err))
	}
	ac["base_model_name_or_path"] = req.NewBaseRepo
	ac["revision"] = req.NewBaseCommit
	out, _ := json.Marshal(ac)
	if err := os.MkdirAll(req.OutDir, 0o755); err != nil {
		return ConvertResult{}, err
	}
	os.WriteFile(filepath.Join(req.OutDir, adapterConfigFile), out, 0o644)
	os.WriteFile(filepath.Join(req.OutDir, adapterWeightsFile), weights, 0o644)
	return ConvertResult{Summary: fmt.Sprintf("fake: r=%d", int(r)), Metrics: map[string]float64{"fit": 0.25}}, nil
}

func (c *fakeConverter) Verify(ctx context.Context, dir, baseDir string) error {
	raw, err := os.ReadFile(filepath.Join(dir, adapterConfigFile))
	if err != nil {
		return err
	}
	var ac map[string]any
	if err := json.Unmarshal(raw, &ac); err != nil {
		return err
	}
	if ac["base_model_name_or_path"] == "" {
		return errors.New("no base_model_name_or_path")
	}
	_, err = os.Stat(filepath.Join(dir, adapterWeightsFile))
	return err
}

func (c *fakeConverter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// fakeClock is a manual clock: After channels fire when Advance passes
// their deadline.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{now: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{at: c.now.Add(d), ch: ch})
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}
