package hubtest

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
)

// handleCreateRepo answers POST /api/repos/create.
func (s *Server) handleCreateRepo(w http.ResponseWriter, r *http.Request, c caller) {
	if c.user == "" {
		writeError(w, http.StatusUnauthorized, "", "You must be authenticated to create a repo")
		return
	}
	var body struct {
		Name         string `json:"name"`
		Organization string `json:"organization"`
		Type         string `json:"type"`
		Private      *bool  `json:"private"`
		Visibility   string `json:"visibility"`
		Files        []struct {
			Path     string `json:"path"`
			Content  string `json:"content"`
			Encoding string `json:"encoding"`
		} `json:"files"`
	}
	if err := decodeJSON(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	if body.Type != "" && body.Type != "model" {
		writeError(w, http.StatusBadRequest, "", "hubtest only hosts model repos, not "+body.Type)
		return
	}
	ns := body.Organization
	if ns == "" {
		ns = c.user
	}
	id := ns + "/" + body.Name
	if err := validRepoID(id); err != nil {
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	private := body.Visibility == "private" || (body.Private != nil && *body.Private)
	files := map[string][]byte{}
	for _, f := range body.Files {
		data, err := decodeContent(f.Content, f.Encoding)
		if err != nil {
			writeError(w, http.StatusBadRequest, "", fmt.Sprintf("file %s: %v", f.Path, err))
			return
		}
		files[f.Path] = data
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.canWrite(c, ns) {
		writeError(w, http.StatusForbidden, "", "You don't have the rights to create a model under the namespace \""+ns+"\"")
		return
	}
	if _, exists := s.repos[id]; exists {
		writeJSON(w, http.StatusConflict, map[string]string{"error": "You already created this model repo", "url": s.URL + "/" + id})
		return
	}
	rp, err := s.createRepoLocked(id, private, files)
	if err != nil {
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"url": s.URL + "/" + id, "name": id, "id": rp.ObjectID})
}

func decodeContent(content, encoding string) ([]byte, error) {
	switch encoding {
	case "base64":
		return base64.StdEncoding.DecodeString(content)
	case "", "utf-8":
		return []byte(content), nil
	}
	return nil, fmt.Errorf("unknown encoding %q", encoding)
}

// writableRepo finds a repo the caller may write to, writing the Hub's
// error otherwise. Callers hold s.mu.
func (s *Server) writableRepo(w http.ResponseWriter, c caller, id string) (*repo, bool) {
	rp, ok := s.lookupRepo(w, c, id)
	if !ok {
		return nil, false
	}
	if !s.canWrite(c, rp.namespace()) {
		if c.user == "" {
			writeError(w, http.StatusUnauthorized, "", "You must be authenticated to write to "+id)
		} else {
			writeError(w, http.StatusForbidden, "", "You don't have the rights to write to "+id)
		}
		return nil, false
	}
	return rp, true
}

// handleBranch answers POST (create; {startingPoint, overwrite}) and DELETE
// on /api/models/{repo}/branch/{branch}.
func (s *Server) handleBranch(w http.ResponseWriter, r *http.Request, c caller, id, branch string) {
	var body struct {
		StartingPoint string `json:"startingPoint"`
		Overwrite     bool   `json:"overwrite"`
		EmptyBranch   bool   `json:"emptyBranch"`
	}
	if r.Method == http.MethodPost && r.ContentLength != 0 {
		if err := decodeJSON(r, &body); err != nil {
			writeError(w, http.StatusBadRequest, "", err.Error())
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rp, ok := s.writableRepo(w, c, id)
	if !ok {
		return
	}
	if r.Method == http.MethodDelete {
		if _, ok := rp.Branches[branch]; !ok || branch == "main" {
			writeError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+branch)
			return
		}
		delete(rp.Branches, branch)
		writeJSON(w, http.StatusOK, map[string]any{})
		return
	}
	if _, ok := rp.Branches[branch]; ok && !body.Overwrite {
		writeError(w, http.StatusConflict, "", "Reference already exists")
		return
	}
	if body.EmptyBranch {
		writeError(w, http.StatusBadRequest, "", "hubtest does not support empty branches")
		return
	}
	if strings.HasPrefix(branch, "refs/") || isCommitID(branch) {
		writeError(w, http.StatusBadRequest, "", "Invalid branch name: "+branch)
		return
	}
	cm, ok := rp.resolve(body.StartingPoint)
	if !ok {
		writeError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+body.StartingPoint)
		return
	}
	rp.Branches[branch] = cm.ID
	writeJSON(w, http.StatusOK, map[string]any{})
}

// handleTag answers POST /api/models/{repo}/tag/{rev} {tag, message} and
// DELETE /api/models/{repo}/tag/{tag}.
func (s *Server) handleTag(w http.ResponseWriter, r *http.Request, c caller, id, arg string) {
	var body struct {
		Tag     string `json:"tag"`
		Message string `json:"message"`
	}
	if r.Method == http.MethodPost {
		if err := decodeJSON(r, &body); err != nil {
			writeError(w, http.StatusBadRequest, "", err.Error())
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rp, ok := s.writableRepo(w, c, id)
	if !ok {
		return
	}
	if r.Method == http.MethodDelete {
		if _, ok := rp.Tags[arg]; !ok {
			writeError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+arg)
			return
		}
		delete(rp.Tags, arg)
		writeJSON(w, http.StatusOK, map[string]any{})
		return
	}
	cm, ok := rp.resolve(arg)
	if !ok {
		writeError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+arg)
		return
	}
	if body.Tag == "" || strings.HasPrefix(body.Tag, "refs/") {
		writeError(w, http.StatusBadRequest, "", "Invalid tag name: "+body.Tag)
		return
	}
	if _, ok := rp.Tags[body.Tag]; ok {
		writeError(w, http.StatusConflict, "", "Tag "+body.Tag+" already exists")
		return
	}
	rp.Tags[body.Tag] = cm.ID
	writeJSON(w, http.StatusOK, map[string]any{})
}

// handleDeleteRepo answers DELETE /api/repos/delete {name, organization, type}.
func (s *Server) handleDeleteRepo(w http.ResponseWriter, r *http.Request, c caller) {
	var body struct {
		Name         string `json:"name"`
		Organization string `json:"organization"`
	}
	if err := decodeJSON(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	ns := body.Organization
	if ns == "" {
		ns = c.user
	}
	id := ns + "/" + body.Name
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.writableRepo(w, c, id); !ok {
		return
	}
	delete(s.repos, id)
	writeJSON(w, http.StatusOK, map[string]any{})
}
