package hubtest

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// entry is one file in a commit's tree. Regular files are addressed by their
// git blob sha1; LFS files by the sha256 of their content, and their BlobID is
// the git sha1 of the pointer file git stores in their place.
type entry struct {
	Path        string
	Size        int64
	BlobID      string // git blob sha1 of the content (regular) or of the pointer (LFS)
	LFS         string // sha256 hex of the content; empty for regular files
	PointerSize int
}

func (e entry) isLFS() bool { return e.LFS != "" }

// etag is what the Hub reports as the file's etag: sha256 for LFS files, the
// git blob sha1 otherwise.
func (e entry) etag() string {
	if e.isLFS() {
		return e.LFS
	}
	return e.BlobID
}

// commit is an immutable snapshot of a repo.
type commit struct {
	ID      string
	Parents []string
	Tree    map[string]entry
	Title   string
	Message string // full message: title, blank line, description
	Author  string
	Date    time.Time
}

// repo is one model repository.
type repo struct {
	ID        string // "namespace/name"
	ObjectID  string // the Hub's 24-hex Mongo-style _id
	Private   bool
	Gated     string // "", "auto" or "manual"
	Granted   map[string]bool
	Disabled  bool
	CreatedAt time.Time
	Branches  map[string]string // name -> commit id
	Tags      map[string]string
	PRs       []string // PRs[i] is the head of refs/pr/{i+1}
	Commits   map[string]*commit
}

func (r *repo) namespace() string { return strings.SplitN(r.ID, "/", 2)[0] }

// resolve turns a revision (branch, tag, refs/heads/x, refs/tags/x,
// refs/pr/N or a full 40-hex commit id) into a commit of this repo.
func (r *repo) resolve(rev string) (*commit, bool) {
	if rev == "" || rev == "HEAD" {
		rev = "main" // HEAD is the default branch, as on the Hub
	}
	if id, ok := r.Branches[rev]; ok {
		return r.Commits[id], true
	}
	if id, ok := r.Tags[rev]; ok {
		return r.Commits[id], true
	}
	if b, ok := strings.CutPrefix(rev, "refs/heads/"); ok {
		if id, ok := r.Branches[b]; ok {
			return r.Commits[id], true
		}
	}
	if t, ok := strings.CutPrefix(rev, "refs/tags/"); ok {
		if id, ok := r.Tags[t]; ok {
			return r.Commits[id], true
		}
	}
	if n, ok := prNumber(rev); ok && n <= len(r.PRs) {
		return r.Commits[r.PRs[n-1]], true
	}
	if isCommitID(rev) {
		c, ok := r.Commits[rev]
		return c, ok
	}
	return nil, false
}

// prNumber parses "refs/pr/N" (N >= 1).
func prNumber(rev string) (int, bool) {
	s, ok := strings.CutPrefix(rev, "refs/pr/")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, false
	}
	return n, true
}

func isCommitID(s string) bool {
	if len(s) != 40 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// history walks first parents from c, newest first.
func (r *repo) history(c *commit) []*commit {
	var out []*commit
	for c != nil {
		out = append(out, c)
		if len(c.Parents) == 0 {
			break
		}
		c = r.Commits[c.Parents[0]]
	}
	return out
}

// lastCommitFor returns the newest commit in c's first-parent history that
// changed path (a file, or any file under a directory path).
func (r *repo) lastCommitFor(c *commit, p string) *commit {
	hist := r.history(c)
	sig := func(cm *commit) string { return subtreeSignature(cm.Tree, p) }
	for i, cm := range hist {
		if i+1 == len(hist) || sig(hist[i+1]) != sig(cm) {
			return cm
		}
	}
	return c
}

// subtreeSignature is a string that changes whenever the file p, or any file
// under directory p, changes.
func subtreeSignature(tree map[string]entry, p string) string {
	var b strings.Builder
	for _, k := range sortedPaths(tree) {
		if k == p || strings.HasPrefix(k, p+"/") {
			fmt.Fprintf(&b, "%s %s\n", k, tree[k].BlobID)
		}
	}
	return b.String()
}

func sortedPaths(tree map[string]entry) []string {
	out := make([]string, 0, len(tree))
	for k := range tree {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// gitBlobSHA1 is git's object id of a blob: sha1("blob {len}\x00" + content).
func gitBlobSHA1(content []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(content))
	h.Write(content)
	return hex.EncodeToString(h.Sum(nil))
}

func sha256Hex(content []byte) string {
	s := sha256.Sum256(content)
	return hex.EncodeToString(s[:])
}

// lfsPointer is the git-lfs pointer file stored in git in place of an LFS file.
func lfsPointer(oid string, size int64) []byte {
	return fmt.Appendf(nil, "version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n", oid, size)
}

// treeID is a deterministic digest of a tree (path, mode and blob id of every
// file, sorted), standing in for git's tree object id.
func treeID(tree map[string]entry) string {
	h := sha1.New()
	for _, p := range sortedPaths(tree) {
		fmt.Fprintf(h, "100644 %s\x00%s\n", p, tree[p].BlobID)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// commitID is git-like: sha1 over the tree id, the parents, the author and the
// message. The date is left out so that seeding is reproducible run to run.
func commitID(tree map[string]entry, parents []string, author, message string) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "tree %s\n", treeID(tree))
	for _, p := range parents {
		fmt.Fprintf(&b, "parent %s\n", p)
	}
	fmt.Fprintf(&b, "author %s\n\n%s", author, message)
	h := sha1.New()
	fmt.Fprintf(h, "commit %d\x00", b.Len())
	h.Write(b.Bytes())
	return hex.EncodeToString(h.Sum(nil))
}

// objectID derives a stable 24-hex _id for a repo from its name.
func objectID(repoID string) string {
	s := sha1.Sum([]byte("repo:" + repoID))
	return hex.EncodeToString(s[:12])
}

// defaultGitattributes is the file the real Hub puts in every new model repo.
const defaultGitattributes = `*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.ftz filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.joblib filter=lfs diff=lfs merge=lfs -text
*.lfs.* filter=lfs diff=lfs merge=lfs -text
*.mlmodel filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.ot filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pb filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.rar filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
saved_model/**/* filter=lfs diff=lfs merge=lfs -text
*.tar.* filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.tflite filter=lfs diff=lfs merge=lfs -text
*.tgz filter=lfs diff=lfs merge=lfs -text
*.wasm filter=lfs diff=lfs merge=lfs -text
*.xz filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
`

// lfsPatterns returns the patterns marked filter=lfs in a .gitattributes file.
func lfsPatterns(gitattributes string) []string {
	var out []string
	for _, line := range strings.Split(gitattributes, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		for _, attr := range f[1:] {
			if attr == "filter=lfs" {
				out = append(out, f[0])
			}
		}
	}
	return out
}

// matchAttr reports whether a .gitattributes pattern matches the repo path p:
// patterns without a slash match the base name, others the whole path, with
// "dir/**/*" matching everything under dir.
func matchAttr(pattern, p string) bool {
	if !strings.Contains(pattern, "/") {
		ok, _ := path.Match(pattern, path.Base(p))
		return ok
	}
	if dir, ok := strings.CutSuffix(pattern, "/**/*"); ok {
		return strings.HasPrefix(p, dir+"/")
	}
	ok, _ := path.Match(strings.TrimPrefix(pattern, "/"), p)
	return ok
}

// validRepoPath rejects paths a Hub commit would refuse.
func validRepoPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("empty path")
	case strings.HasPrefix(p, "/"), strings.HasSuffix(p, "/"):
		return fmt.Errorf("path %q must be relative and name a file", p)
	case strings.Contains(p, "\\"), strings.Contains(p, "\x00"):
		return fmt.Errorf("path %q contains a forbidden character", p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." || seg == ".git" {
			return fmt.Errorf("path %q has a forbidden segment %q", p, seg)
		}
	}
	return nil
}

// validRepoID checks "namespace/name" the way the Hub does (roughly).
func validRepoID(id string) error {
	ns, name, ok := strings.Cut(id, "/")
	if !ok || strings.Contains(name, "/") {
		return fmt.Errorf("repo id %q must be namespace/name", id)
	}
	for _, part := range []string{ns, name} {
		if part == "" || len(part) > 96 || strings.HasPrefix(part, ".") || strings.HasPrefix(part, "-") ||
			strings.HasSuffix(part, ".git") || strings.Contains(part, "..") || strings.Contains(part, "--") {
			return fmt.Errorf("repo id %q: invalid part %q", id, part)
		}
		for _, r := range part {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
				return fmt.Errorf("repo id %q: invalid character %q", id, r)
			}
		}
	}
	return nil
}
