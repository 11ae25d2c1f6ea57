package hubtest

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"sort"
	"strings"
)

// treeItemJSON is one entry of the tree and paths-info endpoints.
type treeItemJSON struct {
	Type       string          `json:"type"` // "file" or "directory"
	OID        string          `json:"oid"`
	Size       int64           `json:"size"`
	Path       string          `json:"path"`
	LFS        *lfsJSON        `json:"lfs,omitempty"`
	LastCommit *lastCommitJSON `json:"lastCommit,omitempty"`
	Security   *securityJSON   `json:"securityFileStatus,omitempty"`
}

type lastCommitJSON struct {
	ID    string `json:"id"`
	Title string `json:"title"`
	Date  string `json:"date"`
}

type securityJSON struct {
	Status string `json:"status"`
}

// dirOID is a stable id for a directory of a commit's tree.
func dirOID(tree map[string]entry, dir string) string {
	h := sha1.Sum([]byte("tree\x00" + subtreeSignature(tree, dir)))
	return hex.EncodeToString(h[:])
}

func fileItem(e entry) treeItemJSON {
	it := treeItemJSON{Type: "file", OID: e.BlobID, Size: e.Size, Path: e.Path}
	if e.isLFS() {
		it.LFS = &lfsJSON{OID: e.LFS, Size: e.Size, PointerSize: e.PointerSize}
	}
	return it
}

// listTree returns the direct children of dir ("" for the root), or all
// descendants when recursive, sorted by path.
func listTree(tree map[string]entry, dir string, recursive bool) []treeItemJSON {
	prefix := ""
	if dir != "" {
		prefix = dir + "/"
	}
	dirs := map[string]bool{}
	var out []treeItemJSON
	for _, p := range sortedPaths(tree) {
		rel, ok := strings.CutPrefix(p, prefix)
		if !ok {
			continue
		}
		parts := strings.Split(rel, "/")
		for i := 1; i < len(parts); i++ {
			d := prefix + strings.Join(parts[:i], "/")
			if !dirs[d] && (recursive || i == 1) {
				dirs[d] = true
				out = append(out, treeItemJSON{Type: "directory", OID: dirOID(tree, d), Path: d})
			}
		}
		if recursive || len(parts) == 1 {
			out = append(out, fileItem(tree[p]))
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func isDir(tree map[string]entry, dir string) bool {
	for p := range tree {
		if strings.HasPrefix(p, dir+"/") {
			return true
		}
	}
	return false
}

func (s *Server) handleTree(w http.ResponseWriter, r *http.Request, c caller, id, rev, dir string) {
	limit, page, err := pageParams(r, 1000, 1000)
	if err != nil {
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	q := r.URL.Query()
	recursive := q.Get("recursive") == "true" || q.Get("recursive") == "1"
	expand := q.Get("expand") == "true" || q.Get("expand") == "1"
	s.mu.Lock()
	defer s.mu.Unlock()
	rp, cm, ok := s.lookupRev(w, c, id, rev)
	if !ok {
		return
	}
	dir = strings.Trim(dir, "/")
	if dir != "" && !isDir(cm.Tree, dir) {
		writeError(w, http.StatusNotFound, "EntryNotFound", fmt.Sprintf("%s does not exist on %q", dir, rev))
		return
	}
	items := listTree(cm.Tree, dir, recursive)
	page1 := pageSlice(items, page, limit)
	if expand {
		for i := range page1 {
			s.expandItem(rp, cm, &page1[i])
		}
	}
	s.setNextLink(w, r, page, limit, len(items))
	if page1 == nil {
		page1 = []treeItemJSON{}
	}
	writeJSON(w, http.StatusOK, page1)
}

// expandItem adds lastCommit and securityFileStatus. Callers hold s.mu.
func (s *Server) expandItem(rp *repo, cm *commit, it *treeItemJSON) {
	last := rp.lastCommitFor(cm, it.Path)
	it.LastCommit = &lastCommitJSON{ID: last.ID, Title: last.Title, Date: isoTime(last.Date)}
	if it.Type == "file" {
		it.Security = &securityJSON{Status: "safe"}
	}
}

// handlePathsInfo answers POST /api/models/{repo}/paths-info/{rev}; the body
// is JSON {paths, expand} (JS client) or a form with repeated paths (Python).
func (s *Server) handlePathsInfo(w http.ResponseWriter, r *http.Request, c caller, id, rev string) {
	var body struct {
		Paths  []string `json:"paths"`
		Expand any      `json:"expand"`
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/x-www-form-urlencoded" {
		if err := r.ParseForm(); err != nil {
			writeError(w, http.StatusBadRequest, "", "bad form: "+err.Error())
			return
		}
		body.Paths = r.PostForm["paths"]
		body.Expand = r.PostForm.Get("expand")
	} else if err := decodeJSON(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	expand := body.Expand == true || body.Expand == "true" || body.Expand == "True" || body.Expand == "1"
	s.mu.Lock()
	defer s.mu.Unlock()
	rp, cm, ok := s.lookupRev(w, c, id, rev)
	if !ok {
		return
	}
	out := []treeItemJSON{}
	for _, p := range body.Paths {
		p = strings.Trim(path.Clean("/"+p), "/")
		var it treeItemJSON
		if e, ok := cm.Tree[p]; ok {
			it = fileItem(e)
		} else if p != "" && isDir(cm.Tree, p) {
			it = treeItemJSON{Type: "directory", OID: dirOID(cm.Tree, p), Path: p}
		} else {
			continue // missing paths are left out, as on the Hub
		}
		if expand {
			s.expandItem(rp, cm, &it)
		}
		out = append(out, it)
	}
	writeJSON(w, http.StatusOK, out)
}

// maxJSONBody bounds JSON request bodies (commits carry base64 files).
const maxJSONBody = 256 << 20

// decodeJSON reads a JSON request body into v.
func decodeJSON(r *http.Request, v any) error {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxJSONBody))
	if err != nil {
		return fmt.Errorf("reading body: %w", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("invalid JSON body: %w", err)
	}
	return nil
}
