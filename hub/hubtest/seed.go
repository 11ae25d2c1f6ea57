package hubtest

import (
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"
)

// Errors returned by the Go-side seeding and inspection methods.
var (
	ErrRepoExists    = errors.New("hubtest: repo already exists")
	ErrRepoNotFound  = errors.New("hubtest: repo not found")
	ErrRevNotFound   = errors.New("hubtest: revision not found")
	ErrEntryNotFound = errors.New("hubtest: entry not found")
	ErrBranchExists  = errors.New("hubtest: branch already exists")
	ErrLFSMissing    = errors.New("hubtest: LFS object not uploaded")
)

// CommitInfo describes one commit, as Commits returns it.
type CommitInfo struct {
	ID      string
	Parents []string
	Title   string
	Message string
	Author  string
	Date    time.Time
}

// FileMeta describes one file of a revision, as Stat returns it.
type FileMeta struct {
	Path   string
	Size   int64
	BlobID string // git blob sha1 of the content, or of the LFS pointer
	LFS    bool
	SHA256 string // content sha256 (set for every file, LFS or not)
}

// CreateRepo creates "namespace/name" with the Hub's initial commit (a
// .gitattributes file on branch main), owned by its namespace.
func (s *Server) CreateRepo(id string, private bool) error {
	if err := validRepoID(id); err != nil {
		return fmt.Errorf("hubtest: create %s: %w", id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.createRepoLocked(id, private, nil)
	return err
}

func (s *Server) createRepoLocked(id string, private bool, files map[string][]byte) (*repo, error) {
	if _, ok := s.repos[id]; ok {
		return nil, fmt.Errorf("%w: %s", ErrRepoExists, id)
	}
	r := &repo{
		ID:        id,
		ObjectID:  objectID(id),
		Private:   private,
		Granted:   map[string]bool{},
		CreatedAt: s.now(),
		Branches:  map[string]string{},
		Tags:      map[string]string{},
		Commits:   map[string]*commit{},
	}
	ops := []op{{kind: "file", path: ".gitattributes", content: []byte(defaultGitattributes)}}
	for _, p := range sortedKeys(files) {
		ops = append(ops, op{kind: "file", path: p, content: files[p]})
	}
	c, err := s.applyLocked(r, nil, ops, "initial commit", "", r.namespace(), true)
	if err != nil {
		return nil, fmt.Errorf("hubtest: create %s: %w", id, err)
	}
	r.Branches["main"] = c.ID
	s.repos[id] = r
	return r, nil
}

// SetGated gates a repo ("auto" or "manual"; "" ungates it) and grants access
// to the given users. Gated repos are listed and described to everyone, but
// their files (other than README.md and .gitattributes) need a granted token.
func (s *Server) SetGated(id, mode string, granted ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.repos[id]
	if !ok {
		return fmt.Errorf("%w: %s", ErrRepoNotFound, id)
	}
	r.Gated = mode
	for _, u := range granted {
		r.Granted[u] = true
	}
	return nil
}

// Commit commits files to branch of repo, authored by the repo's namespace.
// A nil value deletes that path (an error if it does not exist). Files
// matching the repo's .gitattributes LFS patterns, or at least the LFS
// threshold in size, are stored with LFS. It returns the new commit id.
func (s *Server) Commit(repoID, branch string, files map[string][]byte, message string) (string, error) {
	ops := make([]op, 0, len(files))
	for _, p := range sortedKeys(files) {
		if files[p] == nil {
			ops = append(ops, op{kind: "deletedFile", path: p})
		} else {
			ops = append(ops, op{kind: "file", path: p, content: files[p]})
		}
	}
	title, desc, _ := strings.Cut(message, "\n")
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.repos[repoID]
	if !ok {
		return "", fmt.Errorf("%w: %s", ErrRepoNotFound, repoID)
	}
	head, ok := r.Branches[branch]
	if !ok {
		return "", fmt.Errorf("%w: %s@%s", ErrRevNotFound, repoID, branch)
	}
	c, err := s.applyLocked(r, r.Commits[head], ops, title, strings.TrimLeft(desc, "\n"), r.namespace(), true)
	if err != nil {
		return "", fmt.Errorf("hubtest: commit to %s@%s: %w", repoID, branch, err)
	}
	r.Branches[branch] = c.ID
	return c.ID, nil
}

// CreateBranch creates branch at revision from ("" means main).
func (s *Server) CreateBranch(repoID, branch, from string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.repos[repoID]
	if !ok {
		return fmt.Errorf("%w: %s", ErrRepoNotFound, repoID)
	}
	if _, ok := r.Branches[branch]; ok {
		return fmt.Errorf("%w: %s@%s", ErrBranchExists, repoID, branch)
	}
	c, ok := r.resolve(from)
	if !ok {
		return fmt.Errorf("%w: %s@%s", ErrRevNotFound, repoID, from)
	}
	r.Branches[branch] = c.ID
	return nil
}

// CreateTag points tag at revision rev.
func (s *Server) CreateTag(repoID, tag, rev string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.repos[repoID]
	if !ok {
		return fmt.Errorf("%w: %s", ErrRepoNotFound, repoID)
	}
	c, ok := r.resolve(rev)
	if !ok {
		return fmt.Errorf("%w: %s@%s", ErrRevNotFound, repoID, rev)
	}
	r.Tags[tag] = c.ID
	return nil
}

// Head returns the commit id of a revision (branch, tag, refs/pr/N, commit).
func (s *Server) Head(repoID, rev string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, c, err := s.revLocked(repoID, rev)
	if err != nil {
		return "", err
	}
	return c.ID, nil
}

// Commits lists the first-parent history of rev, newest first.
func (s *Server) Commits(repoID, rev string) ([]CommitInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, c, err := s.revLocked(repoID, rev)
	if err != nil {
		return nil, err
	}
	var out []CommitInfo
	for _, cm := range r.history(c) {
		out = append(out, CommitInfo{ID: cm.ID, Parents: append([]string(nil), cm.Parents...),
			Title: cm.Title, Message: cm.Message, Author: cm.Author, Date: cm.Date})
	}
	return out, nil
}

// File returns the stored content of path at rev, as committed (Corrupt does
// not affect it).
func (s *Server) File(repoID, rev, path string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.entryLocked(repoID, rev, path)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), s.contentLocked(e)...), nil
}

// Stat describes path at rev.
func (s *Server) Stat(repoID, rev, path string) (FileMeta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.entryLocked(repoID, rev, path)
	if err != nil {
		return FileMeta{}, err
	}
	return FileMeta{Path: e.Path, Size: e.Size, BlobID: e.BlobID, LFS: e.isLFS(),
		SHA256: sha256Hex(s.contentLocked(e))}, nil
}

// Files lists the paths of rev, sorted.
func (s *Server) Files(repoID, rev string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, c, err := s.revLocked(repoID, rev)
	if err != nil {
		return nil, err
	}
	return sortedPaths(c.Tree), nil
}

// revLocked finds a repo and one of its revisions, or says which is missing.
// Callers hold s.mu.
func (s *Server) revLocked(repoID, rev string) (*repo, *commit, error) {
	r, ok := s.repos[repoID]
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s", ErrRepoNotFound, repoID)
	}
	c, ok := r.resolve(rev)
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s@%s", ErrRevNotFound, repoID, rev)
	}
	return r, c, nil
}

func (s *Server) entryLocked(repoID, rev, path string) (entry, error) {
	_, c, err := s.revLocked(repoID, rev)
	if err != nil {
		return entry{}, err
	}
	e, ok := c.Tree[path]
	if !ok {
		return entry{}, fmt.Errorf("%w: %s@%s: %s", ErrEntryNotFound, repoID, rev, path)
	}
	return e, nil
}

// contentLocked is the stored content of an entry.
func (s *Server) contentLocked(e entry) []byte {
	if e.isLFS() {
		return s.lfs[e.LFS]
	}
	return s.regular[e.BlobID]
}

// op is one operation of a commit.
type op struct {
	kind    string // file, lfsFile, deletedFile, deletedFolder
	path    string
	content []byte // file
	oid     string // lfsFile: sha256
	size    int64  // lfsFile
}

// applyLocked builds a commit on top of base (nil for a root commit) and
// records it in r; it does not move any ref. With classify, "file" contents
// matching the LFS rule are stored with LFS (the Go seeding path); otherwise
// they stay regular files, as a commit API "file" line does.
func (s *Server) applyLocked(r *repo, base *commit, ops []op, title, desc, author string, classify bool) (*commit, error) {
	tree := map[string]entry{}
	var parents []string
	if base != nil {
		tree = maps.Clone(base.Tree)
		parents = []string{base.ID}
	}
	// The LFS rule uses the .gitattributes of the resulting tree.
	attrs := ""
	for _, o := range ops {
		if o.kind == "file" && o.path == ".gitattributes" {
			attrs = string(o.content)
		}
	}
	if attrs == "" {
		if e, ok := tree[".gitattributes"]; ok {
			attrs = string(s.contentLocked(e))
		}
	}
	patterns := lfsPatterns(attrs)
	for _, o := range ops {
		if err := validRepoPath(o.path); err != nil && o.kind != "deletedFolder" {
			return nil, err
		}
		switch o.kind {
		case "file":
			if classify && s.isLFSPath(patterns, o.path, int64(len(o.content))) {
				oid := sha256Hex(o.content)
				s.lfs[oid] = append([]byte(nil), o.content...)
				tree[o.path] = lfsEntry(o.path, oid, int64(len(o.content)))
				continue
			}
			id := gitBlobSHA1(o.content)
			s.regular[id] = append([]byte(nil), o.content...)
			tree[o.path] = entry{Path: o.path, Size: int64(len(o.content)), BlobID: id}
		case "lfsFile":
			data, ok := s.lfs[o.oid]
			if !ok || int64(len(data)) != o.size {
				return nil, fmt.Errorf("%w: %s (sha256 %s, %d bytes)", ErrLFSMissing, o.path, o.oid, o.size)
			}
			tree[o.path] = lfsEntry(o.path, o.oid, o.size)
		case "deletedFile":
			if _, ok := tree[o.path]; !ok {
				return nil, fmt.Errorf("%w: cannot delete %s", ErrEntryNotFound, o.path)
			}
			delete(tree, o.path)
		case "deletedFolder":
			dir := strings.TrimSuffix(o.path, "/")
			n := 0
			for p := range tree {
				if strings.HasPrefix(p, dir+"/") {
					delete(tree, p)
					n++
				}
			}
			if n == 0 {
				return nil, fmt.Errorf("%w: cannot delete folder %s", ErrEntryNotFound, o.path)
			}
		default:
			return nil, fmt.Errorf("unknown operation %q on %s", o.kind, o.path)
		}
	}
	if err := checkFileDirConflicts(tree); err != nil {
		return nil, err
	}
	message := title
	if desc != "" {
		message += "\n\n" + desc
	}
	c := &commit{
		ID:      commitID(tree, parents, author, message),
		Parents: parents,
		Tree:    tree,
		Title:   title,
		Message: message,
		Author:  author,
		Date:    s.now(),
	}
	if old, ok := r.Commits[c.ID]; ok {
		return old, nil
	}
	r.Commits[c.ID] = c
	return c, nil
}

// checkFileDirConflicts refuses a tree where a path is both a file and a
// directory (a and a/b), which git cannot represent.
func checkFileDirConflicts(tree map[string]entry) error {
	paths := sortedPaths(tree)
	for i, p := range paths {
		// Paths under p/ sort right after p, possibly after siblings like
		// "p.txt" or "p-x" (bytes below '/'): scan while the prefix holds.
		for _, q := range paths[i+1:] {
			if !strings.HasPrefix(q, p) {
				break
			}
			if q[len(p)] == '/' {
				return fmt.Errorf("%s is both a file and a directory (%s)", p, q)
			}
		}
	}
	return nil
}

// isLFSPath is the Hub's rule: a .gitattributes LFS pattern, or size at or
// above the threshold.
func (s *Server) isLFSPath(patterns []string, p string, size int64) bool {
	if size >= s.lfsThreshold {
		return true
	}
	for _, pat := range patterns {
		if matchAttr(pat, p) {
			return true
		}
	}
	return false
}

func lfsEntry(p, oid string, size int64) entry {
	ptr := lfsPointer(oid, size)
	return entry{Path: p, Size: size, BlobID: gitBlobSHA1(ptr), LFS: oid, PointerSize: len(ptr)}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// lastModified is the date of the newest commit on main (or createdAt).
func (r *repo) lastModified() time.Time {
	if c, ok := r.resolve("main"); ok {
		return c.Date
	}
	return r.CreatedAt
}
