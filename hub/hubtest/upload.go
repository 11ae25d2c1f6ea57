package hubtest

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// handlePreupload answers POST /api/models/{repo}/preupload/{rev}: which
// files go through LFS, and the oid of files already present at rev.
func (s *Server) handlePreupload(w http.ResponseWriter, r *http.Request, c caller, id, rev string) {
	var body struct {
		GitAttributes string `json:"gitAttributes"`
		Files         []struct {
			Path   string `json:"path"`
			Sample string `json:"sample"`
			Size   int64  `json:"size"`
		} `json:"files"`
	}
	if err := decodeJSON(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rp, ok := s.writableRepo(w, c, id)
	if !ok {
		return
	}
	cm, ok := resolveRev(w, rp, rev)
	if !ok {
		return
	}
	attrs := body.GitAttributes
	if attrs == "" {
		if e, ok := cm.Tree[".gitattributes"]; ok {
			attrs = string(s.contentLocked(e))
		}
	}
	patterns := lfsPatterns(attrs)
	type fileOut struct {
		Path         string `json:"path"`
		UploadMode   string `json:"uploadMode"`
		ShouldIgnore bool   `json:"shouldIgnore"`
		OID          string `json:"oid,omitempty"`
	}
	out := []fileOut{}
	for _, f := range body.Files {
		if err := validRepoPath(f.Path); err != nil {
			writeError(w, http.StatusBadRequest, "", err.Error())
			return
		}
		if _, err := base64.StdEncoding.DecodeString(f.Sample); err != nil {
			writeError(w, http.StatusBadRequest, "", fmt.Sprintf("file %s: sample is not base64: %v", f.Path, err))
			return
		}
		fo := fileOut{Path: f.Path, UploadMode: "regular"}
		if s.isLFSPath(patterns, f.Path, f.Size) {
			fo.UploadMode = "lfs"
		}
		if e, ok := cm.Tree[f.Path]; ok {
			fo.OID = e.etag()
		}
		out = append(out, fo)
	}
	writeJSON(w, http.StatusOK, map[string]any{"files": out, "commitOid": cm.ID})
}

// commitLine is one NDJSON line of a commit.
type commitLine struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// parseCommit reads the NDJSON body of a commit: the header and the ops.
func parseCommit(body io.Reader) (summary, description, parent string, ops []op, err error) {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 1<<20), maxJSONBody)
	first := true
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var l commitLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			return "", "", "", nil, fmt.Errorf("invalid NDJSON line: %w", err)
		}
		if first != (l.Key == "header") {
			return "", "", "", nil, fmt.Errorf("the first line, and only it, must be the header (got %q)", l.Key)
		}
		first = false
		var v struct {
			Summary      string `json:"summary"`
			Description  string `json:"description"`
			ParentCommit string `json:"parentCommit"`
			Path         string `json:"path"`
			Content      string `json:"content"`
			Encoding     string `json:"encoding"`
			Algo         string `json:"algo"`
			OID          string `json:"oid"`
			Size         int64  `json:"size"`
		}
		if err := json.Unmarshal(l.Value, &v); err != nil {
			return "", "", "", nil, fmt.Errorf("invalid %s value: %w", l.Key, err)
		}
		switch l.Key {
		case "header":
			summary, description, parent = v.Summary, v.Description, v.ParentCommit
		case "file":
			data, err := decodeContent(v.Content, v.Encoding)
			if err != nil {
				return "", "", "", nil, fmt.Errorf("file %s: %w", v.Path, err)
			}
			ops = append(ops, op{kind: "file", path: v.Path, content: data})
		case "lfsFile":
			if v.Algo != "" && v.Algo != "sha256" {
				return "", "", "", nil, fmt.Errorf("lfsFile %s: unsupported algo %q", v.Path, v.Algo)
			}
			ops = append(ops, op{kind: "lfsFile", path: v.Path, oid: v.OID, size: v.Size})
		case "deletedFile", "deletedFolder":
			ops = append(ops, op{kind: l.Key, path: v.Path})
		default:
			return "", "", "", nil, fmt.Errorf("unknown operation %q", l.Key)
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", "", nil, fmt.Errorf("reading NDJSON: %w", err)
	}
	if first {
		return "", "", "", nil, errors.New("empty commit payload: the header line is missing")
	}
	if strings.TrimSpace(summary) == "" {
		return "", "", "", nil, errors.New("the commit summary must not be empty")
	}
	return summary, description, parent, ops, nil
}

// splitSummary models how the Hub titles a commit: the git message is
// summary + "\n\n" + description, and the title the commits API reports is
// its first line (the rest of a multi-line summary joins the description).
func splitSummary(summary, desc string) (title, description string) {
	title, rest, _ := strings.Cut(summary, "\n")
	rest = strings.Trim(rest, "\n")
	switch {
	case rest == "":
		return title, desc
	case desc == "":
		return title, rest
	}
	return title, rest + "\n\n" + desc
}

// handleCommit answers POST /api/models/{repo}/commit/{rev}[?create_pr=1].
func (s *Server) handleCommit(w http.ResponseWriter, r *http.Request, c caller, id, rev string) {
	summary, desc, parent, ops, err := parseCommit(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	createPR := r.URL.Query().Get("create_pr") == "1" || r.URL.Query().Get("create_pr") == "true"
	s.mu.Lock()
	defer s.mu.Unlock()
	rp, ok := s.writableRepo(w, c, id)
	if !ok {
		return
	}
	head, isBranch := rp.Branches[strings.TrimPrefix(rev, "refs/heads/")]
	prN, isPR := prNumber(rev)
	switch {
	case isPR && prN <= len(rp.PRs):
		head = rp.PRs[prN-1]
	case isBranch:
	default:
		if _, ok := rp.resolve(rev); ok {
			writeError(w, http.StatusBadRequest, "", "Commits can only be pushed to a branch or a pull request, not "+rev)
		} else {
			writeError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		}
		return
	}
	base := head
	if parent != "" {
		if _, known := rp.Commits[parent]; !known {
			writeError(w, http.StatusBadRequest, "", "Invalid parentCommit: "+parent)
			return
		}
		if parent != head && !createPR {
			writeError(w, http.StatusPreconditionFailed, "",
				"A commit has happened since. Please refresh and try again.")
			return
		}
		base = parent
	}
	for _, o := range ops {
		if o.kind == "file" && int64(len(o.content)) >= s.lfsThreshold {
			writeError(w, http.StatusBadRequest, "", fmt.Sprintf(
				"Your push was rejected because it contains files larger than %d bytes. Please use LFS for %s.", s.lfsThreshold, o.path))
			return
		}
	}
	title, desc := splitSummary(summary, desc)
	cm, err := s.applyLocked(rp, rp.Commits[base], ops, title, desc, c.user, false)
	switch {
	case errors.Is(err, ErrLFSMissing):
		writeError(w, http.StatusUnprocessableEntity, "", "Your push was rejected because an LFS pointer points to a file that does not exist: "+err.Error())
		return
	case errors.Is(err, ErrEntryNotFound):
		writeError(w, http.StatusNotFound, "EntryNotFound", err.Error())
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	resp := map[string]any{"success": true, "commitOid": cm.ID, "commitUrl": s.URL + "/" + id + "/commit/" + cm.ID, "hookOutput": ""}
	switch {
	case createPR:
		rp.PRs = append(rp.PRs, cm.ID)
		n := strconv.Itoa(len(rp.PRs))
		resp["pullRequestUrl"] = s.URL + "/" + id + "/discussions/" + n
		resp["pullRequestRevision"] = "refs/pr/" + n
	case isPR:
		rp.PRs[prN-1] = cm.ID
	default:
		rp.Branches[strings.TrimPrefix(rev, "refs/heads/")] = cm.ID
	}
	writeJSON(w, http.StatusOK, resp)
}
