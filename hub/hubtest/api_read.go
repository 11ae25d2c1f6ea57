package hubtest

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// siblingJSON is one entry of a repo info's siblings.
type siblingJSON struct {
	RFilename string   `json:"rfilename"`
	Size      *int64   `json:"size,omitempty"`
	BlobID    string   `json:"blobId,omitempty"`
	LFS       *lfsJSON `json:"lfs,omitempty"`
}

type lfsJSON struct {
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256,omitempty"`
	OID         string `json:"oid,omitempty"`
	PointerSize int    `json:"pointerSize"`
}

// repoInfo builds the JSON of GET /api/models/{repo}[/revision/{rev}].
// Callers hold s.mu.
func (s *Server) repoInfo(rp *repo, cm *commit, blobs bool) map[string]any {
	card := s.cardData(cm)
	sib := make([]siblingJSON, 0, len(cm.Tree))
	for _, p := range sortedPaths(cm.Tree) {
		e := cm.Tree[p]
		sj := siblingJSON{RFilename: p}
		if blobs {
			size := e.Size
			sj.Size, sj.BlobID = &size, e.BlobID
			if e.isLFS() {
				sj.LFS = &lfsJSON{Size: e.Size, SHA256: e.LFS, PointerSize: e.PointerSize}
			}
		}
		sib = append(sib, sj)
	}
	info := map[string]any{
		"_id":          rp.ObjectID,
		"id":           rp.ID,
		"modelId":      rp.ID,
		"author":       rp.namespace(),
		"sha":          cm.ID,
		"lastModified": isoTime(cm.Date),
		"createdAt":    isoTime(rp.CreatedAt),
		"private":      rp.Private,
		"gated":        gatedJSON(rp.Gated),
		"disabled":     rp.Disabled,
		"downloads":    0,
		"likes":        0,
		"tags":         cardTags(card),
		"siblings":     sib,
		"spaces":       []string{},
	}
	if card != nil {
		info["cardData"] = card
		if lib, ok := card["library_name"].(string); ok {
			info["library_name"] = lib
		}
		if pt, ok := card["pipeline_tag"].(string); ok {
			info["pipeline_tag"] = pt
		}
	}
	return info
}

func gatedJSON(g string) any {
	if g == "" {
		return false
	}
	return g
}

// cardData parses the YAML front matter of README.md at commit cm; nil when
// there is none or it does not parse. Callers hold s.mu.
func (s *Server) cardData(cm *commit) map[string]any {
	e, ok := cm.Tree["README.md"]
	if !ok {
		return nil
	}
	front, ok := frontMatter(s.contentLocked(e))
	if !ok {
		return nil
	}
	var m map[string]any
	if err := yaml.Unmarshal(front, &m); err != nil || m == nil {
		return nil
	}
	return jsonSafe(m).(map[string]any)
}

// jsonSafe turns the maps YAML decodes with non-string keys (e.g. `1: x`)
// into string-keyed maps, so that any parsed card encodes as JSON.
func jsonSafe(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = jsonSafe(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[fmt.Sprint(k)] = jsonSafe(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonSafe(e)
		}
		return out
	}
	return v
}

// frontMatter returns the YAML between a leading "---" line and the next one.
func frontMatter(readme []byte) ([]byte, bool) {
	text := bytes.ReplaceAll(readme, []byte("\r\n"), []byte("\n"))
	rest, ok := bytes.CutPrefix(text, []byte("---\n"))
	if !ok {
		return nil, false
	}
	if bytes.HasPrefix(rest, []byte("---\n")) || bytes.Equal(rest, []byte("---")) {
		return nil, true
	}
	i := bytes.Index(rest, []byte("\n---\n"))
	if i < 0 {
		if !bytes.HasSuffix(rest, []byte("\n---")) {
			return nil, false
		}
		i = len(rest) - 4
	}
	return rest[:i+1], true
}

// cardTags derives the Hub's tags from a model card: its tags, library,
// license and base models.
func cardTags(card map[string]any) []string {
	tags := []string{}
	add := func(v any, prefix string) {
		switch x := v.(type) {
		case string:
			tags = append(tags, prefix+x)
		case []any:
			for _, it := range x {
				if s, ok := it.(string); ok {
					tags = append(tags, prefix+s)
				}
			}
		}
	}
	if card == nil {
		return tags
	}
	add(card["library_name"], "")
	add(card["tags"], "")
	add(card["license"], "license:")
	add(card["base_model"], "base_model:")
	return tags
}

func (s *Server) handleRepoInfo(w http.ResponseWriter, r *http.Request, c caller, id, rev string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp, cm, ok := s.lookupRev(w, c, id, rev)
	if !ok {
		return
	}
	q := r.URL.Query()
	blobs := q.Get("blobs") == "true" || q.Get("blobs") == "1"
	info := s.repoInfo(rp, cm, blobs)
	// With expand, the Hub answers _id, id and the expanded fields only.
	if expand := append(q["expand"], q["expand[]"]...); len(expand) > 0 {
		only := map[string]any{"_id": info["_id"], "id": info["id"]}
		for _, k := range expand {
			if v, ok := info[k]; ok {
				only[k] = v
			}
		}
		info = only
	}
	writeJSON(w, http.StatusOK, info)
}

type refJSON struct {
	Name         string `json:"name"`
	Ref          string `json:"ref"`
	TargetCommit string `json:"targetCommit"`
}

func (s *Server) handleRefs(w http.ResponseWriter, r *http.Request, c caller, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp, ok := s.lookupRepo(w, c, id)
	if !ok {
		return
	}
	refs := func(m map[string]string, prefix string) []refJSON {
		out := []refJSON{}
		for _, name := range sortedKeys(m) {
			out = append(out, refJSON{Name: name, Ref: prefix + name, TargetCommit: m[name]})
		}
		return out
	}
	body := map[string]any{
		"branches": refs(rp.Branches, "refs/heads/"),
		"tags":     refs(rp.Tags, "refs/tags/"),
		"converts": []refJSON{},
	}
	if q := r.URL.Query().Get("include_prs"); q == "1" || q == "true" {
		prs := []refJSON{}
		for i, head := range rp.PRs {
			n := strconv.Itoa(i + 1)
			prs = append(prs, refJSON{Name: n, Ref: "refs/pr/" + n, TargetCommit: head})
		}
		body["pullRequests"] = prs
	}
	writeJSON(w, http.StatusOK, body)
}

// pageParams reads limit (default def, at most max) and the page index p.
func pageParams(r *http.Request, def, max int) (limit, page int, err error) {
	q := r.URL.Query()
	limit, page = def, 0
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 {
			return 0, 0, fmt.Errorf("invalid limit %q", v)
		}
		limit = min(limit, max)
	}
	if v := q.Get("p"); v != "" {
		if page, err = strconv.Atoi(v); err != nil || page < 0 {
			return 0, 0, fmt.Errorf("invalid page %q", v)
		}
	}
	return limit, page, nil
}

// setNextLink sets an absolute Link rel="next" for page+1 when more items
// follow.
func (s *Server) setNextLink(w http.ResponseWriter, r *http.Request, page, limit, total int) {
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	if page >= total || (page+1)*limit >= total {
		return
	}
	q := r.URL.Query()
	q.Set("p", strconv.Itoa(page+1))
	q.Set("limit", strconv.Itoa(limit))
	w.Header().Set("Link", "<"+s.URL+r.URL.EscapedPath()+"?"+q.Encode()+`>; rel="next"`)
}

func pageSlice[T any](items []T, page, limit int) []T {
	if page > len(items) { // also keeps page*limit from overflowing
		return nil
	}
	lo := min(page*limit, len(items))
	hi := min(lo+limit, len(items))
	return items[lo:hi]
}

type authorJSON struct {
	User   string `json:"user"`
	Avatar string `json:"avatar"`
}

type commitJSON struct {
	ID      string       `json:"id"`
	Title   string       `json:"title"`
	Message string       `json:"message"`
	Authors []authorJSON `json:"authors"`
	Date    string       `json:"date"`
}

func (s *Server) handleCommits(w http.ResponseWriter, r *http.Request, c caller, id, rev string) {
	limit, page, err := pageParams(r, 50, 1000)
	if err != nil {
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rp, cm, ok := s.lookupRev(w, c, id, rev)
	if !ok {
		return
	}
	hist := rp.history(cm)
	out := []commitJSON{}
	for _, h := range pageSlice(hist, page, limit) {
		out = append(out, commitJSON{ID: h.ID, Title: h.Title, Message: h.Message, Date: isoTime(h.Date),
			Authors: []authorJSON{{User: h.Author, Avatar: "https://cdn-avatars.huggingface.co/" + url.PathEscape(h.Author)}}})
	}
	s.setNextLink(w, r, page, limit, len(hist))
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleListModels(w http.ResponseWriter, r *http.Request, c caller) {
	limit, page, err := pageParams(r, 1000, 1000)
	if err != nil {
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	q := r.URL.Query()
	author, search := q.Get("author"), strings.ToLower(q.Get("search"))
	full := q.Get("full") == "true" || q.Get("full") == "1"
	expand := q["expand"]
	expand = append(expand, q["expand[]"]...)
	s.mu.Lock()
	defer s.mu.Unlock()
	var hits []*repo
	for _, rp := range s.repos {
		if !s.canSee(c, rp) || (author != "" && rp.namespace() != author) ||
			(search != "" && !strings.Contains(strings.ToLower(rp.ID), search)) ||
			!hasAllTags(s.cardTagsLocked(rp), q["filter"]) {
			continue
		}
		hits = append(hits, rp)
	}
	sortRepos(hits, q.Get("sort"), q.Get("direction"))
	out := []map[string]any{}
	for _, rp := range pageSlice(hits, page, limit) {
		cm, _ := rp.resolve("main")
		info := s.repoInfo(rp, cm, false)
		item := map[string]any{}
		for _, k := range []string{"_id", "id", "modelId", "likes", "downloads", "tags", "private", "createdAt", "library_name", "pipeline_tag"} {
			if v, ok := info[k]; ok {
				item[k] = v
			}
		}
		if full {
			for _, k := range []string{"sha", "lastModified", "siblings", "gated", "disabled", "author"} {
				item[k] = info[k]
			}
		}
		for _, k := range expand {
			if v, ok := info[k]; ok {
				item[k] = v
			}
		}
		out = append(out, item)
	}
	s.setNextLink(w, r, page, limit, len(hits))
	writeJSON(w, http.StatusOK, out)
}

// cardTagsLocked is the tag list of a repo's main branch. Callers hold s.mu.
func (s *Server) cardTagsLocked(rp *repo) []string {
	cm, _ := rp.resolve("main")
	return cardTags(s.cardData(cm))
}

// hasAllTags reports whether every wanted tag is among tags (the listing's
// filter= parameters).
func hasAllTags(tags, wanted []string) bool {
	for _, w := range wanted {
		if !slices.Contains(tags, w) {
			return false
		}
	}
	return true
}

// sortRepos orders repos by the sort key (lastModified, createdAt or id),
// descending unless direction is "1"; ties break by id.
func sortRepos(rs []*repo, key, direction string) {
	less := func(a, b *repo) int {
		switch key {
		case "lastModified":
			return a.lastModified().Compare(b.lastModified())
		case "createdAt":
			return a.CreatedAt.Compare(b.CreatedAt)
		}
		return strings.Compare(a.ID, b.ID)
	}
	desc := key != "" && key != "id" && direction != "1"
	sort.SliceStable(rs, func(i, j int) bool {
		c := less(rs[i], rs[j])
		if c == 0 {
			return rs[i].ID < rs[j].ID
		}
		if desc {
			return c > 0
		}
		return c < 0
	})
}

func (s *Server) handleWhoami(w http.ResponseWriter, c caller) {
	if c.user == "" {
		writeError(w, http.StatusUnauthorized, "", "Invalid credentials in Authorization header")
		return
	}
	s.mu.Lock()
	orgs := []map[string]any{}
	for _, o := range sortedKeys(s.orgs) {
		if s.orgs[o][c.user] {
			orgs = append(orgs, map[string]any{"type": "org", "name": o, "roleInOrg": "write"})
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"type": "user", "id": objectID("user:" + c.user), "name": c.user, "fullname": c.user,
		"email": c.user + "@example.invalid", "emailVerified": true, "canPay": false, "isPro": false,
		"orgs": orgs,
		"auth": map[string]any{"type": "access_token", "accessToken": map[string]any{"displayName": "hubtest", "role": "write"}},
	})
}

// handleValidateYAML accepts any README whose front matter parses.
func (s *Server) handleValidateYAML(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Content string `json:"content"`
	}
	if err := decodeJSON(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	if front, ok := frontMatter([]byte(body.Content)); ok {
		var m map[string]any
		if err := yaml.Unmarshal(front, &m); err != nil {
			writeError(w, http.StatusBadRequest, "", "Invalid YAML in README.md: "+err.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"errors": []any{}, "warnings": []any{}})
}
