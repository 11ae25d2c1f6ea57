package hubtest

import (
	"net/http"
	"net/url"
	"strings"
)

// segments splits the escaped URL path into unescaped segments, so that an
// escaped revision like refs%2Fpr%2F1 stays one segment.
func segments(r *http.Request) []string {
	raw := strings.Trim(r.URL.EscapedPath(), "/")
	if raw == "" {
		return nil
	}
	parts := strings.Split(raw, "/")
	for i, p := range parts {
		if u, err := url.PathUnescape(p); err == nil {
			parts[i] = u
		}
	}
	return parts
}

// takeRev takes a revision off the front of segs. A revision is one segment
// (escaped slashes included), or refs/{heads,tags,pr,convert}/X written
// with plain slashes.
func takeRev(segs []string) (rev string, rest []string) {
	if len(segs) == 0 {
		return "", nil
	}
	if segs[0] == "refs" && len(segs) >= 3 {
		switch segs[1] {
		case "heads", "tags", "pr", "convert":
			return strings.Join(segs[:3], "/"), segs[3:]
		}
	}
	return segs[0], segs[1:]
}

func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeError(w, http.StatusMethodNotAllowed, "", "Method not allowed")
	return false
}

func notFound(w http.ResponseWriter) {
	writeError(w, http.StatusNotFound, "", "Sorry, we can't find the page you are looking for.")
}

// routeHub dispatches requests to the Hub host.
func (s *Server) routeHub(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	segs := segments(r)
	if len(segs) >= 1 && segs[0] == "api" {
		s.routeAPI(w, r, c, segs[1:])
		return
	}
	// /{ns}/{name}.git/info/lfs/objects/{batch,verify}
	if len(segs) == 6 && strings.HasSuffix(segs[1], ".git") && segs[2] == "info" && segs[3] == "lfs" && segs[4] == "objects" {
		id := segs[0] + "/" + strings.TrimSuffix(segs[1], ".git")
		if !allow(w, r, http.MethodPost) {
			return
		}
		switch segs[5] {
		case "batch":
			s.handleLFSBatch(w, r, c, id)
			return
		case "verify":
			s.handleLFSVerify(w, r, c, id)
			return
		}
	}
	// /{ns}/{name}/{resolve,raw}/{rev}/{path...}
	if len(segs) >= 5 && (segs[2] == "resolve" || segs[2] == "raw") {
		rev, rest := takeRev(segs[3:])
		switch {
		case len(rest) == 0:
			notFound(w)
		case !allow(w, r, http.MethodGet, http.MethodHead):
		case segs[2] == "raw":
			s.handleRaw(w, r, c, segs[0]+"/"+segs[1], rev, strings.Join(rest, "/"))
		default:
			s.handleResolve(w, r, c, segs[0]+"/"+segs[1], rev, strings.Join(rest, "/"))
		}
		return
	}
	notFound(w)
}

func (s *Server) routeAPI(w http.ResponseWriter, r *http.Request, c caller, segs []string) {
	switch {
	case len(segs) == 1 && segs[0] == "whoami-v2":
		if allow(w, r, http.MethodGet) {
			s.handleWhoami(w, c)
		}
		return
	case len(segs) == 1 && segs[0] == "validate-yaml":
		if allow(w, r, http.MethodPost) {
			s.handleValidateYAML(w, r)
		}
		return
	case len(segs) == 1 && segs[0] == "complete_multipart":
		if allow(w, r, http.MethodPost) {
			s.handleCompleteMultipart(w, r)
		}
		return
	case len(segs) == 2 && segs[0] == "repos" && segs[1] == "create":
		if allow(w, r, http.MethodPost) {
			s.handleCreateRepo(w, r, c)
		}
		return
	case len(segs) == 2 && segs[0] == "repos" && segs[1] == "delete":
		if allow(w, r, http.MethodDelete) {
			s.handleDeleteRepo(w, r, c)
		}
		return
	case len(segs) >= 6 && segs[0] == "resolve-cache" && segs[1] == "models":
		if allow(w, r, http.MethodGet, http.MethodHead) {
			s.handleResolveCache(w, r, c, segs[2]+"/"+segs[3], segs[4], strings.Join(segs[5:], "/"))
		}
		return
	case len(segs) == 1 && segs[0] == "models":
		if allow(w, r, http.MethodGet) {
			s.handleListModels(w, r, c)
		}
		return
	case len(segs) >= 3 && segs[0] == "models":
		s.routeModel(w, r, c, segs[1]+"/"+segs[2], segs[3:])
		return
	}
	notFound(w)
}

// routeModel dispatches /api/models/{ns}/{name}/...
func (s *Server) routeModel(w http.ResponseWriter, r *http.Request, c caller, id string, segs []string) {
	if len(segs) == 0 {
		if allow(w, r, http.MethodGet) {
			s.handleRepoInfo(w, r, c, id, "")
		}
		return
	}
	verb := segs[0]
	rev, rest := takeRev(segs[1:])
	switch verb {
	case "revision":
		if len(rest) == 0 && rev != "" && allow(w, r, http.MethodGet) {
			s.handleRepoInfo(w, r, c, id, rev)
			return
		}
	case "refs":
		if len(segs) == 1 && allow(w, r, http.MethodGet) {
			s.handleRefs(w, r, c, id)
			return
		}
	case "commits":
		if rev != "" && len(rest) == 0 && allow(w, r, http.MethodGet) {
			s.handleCommits(w, r, c, id, rev)
			return
		}
	case "tree":
		if rev != "" && allow(w, r, http.MethodGet) {
			s.handleTree(w, r, c, id, rev, strings.Join(rest, "/"))
			return
		}
	case "paths-info":
		if rev != "" && len(rest) == 0 && allow(w, r, http.MethodPost) {
			s.handlePathsInfo(w, r, c, id, rev)
			return
		}
	case "preupload":
		if rev != "" && len(rest) == 0 && allow(w, r, http.MethodPost) {
			s.handlePreupload(w, r, c, id, rev)
			return
		}
	case "commit":
		if rev != "" && len(rest) == 0 && allow(w, r, http.MethodPost) {
			s.handleCommit(w, r, c, id, rev)
			return
		}
	case "tag":
		tag := strings.Join(segs[1:], "/")
		if tag != "" && allow(w, r, http.MethodPost, http.MethodDelete) {
			s.handleTag(w, r, c, id, tag)
			return
		}
	case "branch":
		branch := strings.Join(segs[1:], "/")
		if branch != "" && allow(w, r, http.MethodPost, http.MethodDelete) {
			s.handleBranch(w, r, c, id, branch)
			return
		}
	}
	notFound(w)
}

// routeCDN dispatches requests to the CDN/S3 host.
func (s *Server) routeCDN(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "" {
		// S3 refuses a second authentication mechanism next to the presigned query.
		writeS3Error(w, http.StatusBadRequest, "InvalidArgument",
			"Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified")
		return
	}
	segs := segments(r)
	switch {
	case len(segs) == 2 && segs[0] == "repos":
		if allow(w, r, http.MethodGet, http.MethodHead) {
			s.handleCDNGet(w, r, segs[1])
		}
		return
	case len(segs) == 2 && segs[0] == "upload":
		if allow(w, r, http.MethodPut) {
			s.handleCDNPut(w, r, segs[1])
		}
		return
	case len(segs) == 3 && segs[0] == "upload":
		if allow(w, r, http.MethodPut) {
			s.handleCDNPart(w, r, segs[1], segs[2])
		}
		return
	}
	writeS3Error(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
}

// writeS3Error answers like S3: an XML error document.
func writeS3Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?>` + "\n<Error><Code>" + code + "</Code><Message>" + msg + "</Message></Error>")) //nolint:errcheck
}
