package hubtest

import (
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"encoding/hex"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
	"unicode/utf8"
)

// checkGate writes GatedRepo and returns false when c may not download path
// of a gated repo. Callers hold s.mu.
func (s *Server) checkGate(w http.ResponseWriter, c caller, r *repo, p string) bool {
	if r.Gated == "" || p == "README.md" || p == ".gitattributes" || s.canWrite(c, r.namespace()) || r.Granted[c.user] {
		return true
	}
	if c.user == "" {
		writeError(w, http.StatusUnauthorized, "GatedRepo", "Access to model "+r.ID+
			" is restricted. You must have access to it and be authenticated to access it. Please log in.")
		return false
	}
	writeError(w, http.StatusForbidden, "GatedRepo", "Access to model "+r.ID+
		" is restricted and you are not in the authorized list. Visit https://huggingface.co/"+r.ID+" to ask for access.")
	return false
}

// locate finds repo, revision and file for a download, writing the Hub's
// error when one is missing. Callers hold s.mu.
func (s *Server) locate(w http.ResponseWriter, c caller, id, rev, p string) (*repo, *commit, entry, bool) {
	rp, cm, ok := s.lookupRev(w, c, id, rev)
	if !ok {
		return nil, nil, entry{}, false
	}
	w.Header().Set("X-Repo-Commit", cm.ID)
	e, ok := cm.Tree[p]
	if !ok {
		writeError(w, http.StatusNotFound, "EntryNotFound", "Entry not found")
		return nil, nil, entry{}, false
	}
	if !s.checkGate(w, c, rp, p) {
		return nil, nil, entry{}, false
	}
	return rp, cm, e, true
}

// handleResolve answers /{repo}/resolve/{rev}/{path}: a relative 307 to
// /api/resolve-cache for regular files, a 302 to the CDN for LFS files.
func (s *Server) handleResolve(w http.ResponseWriter, r *http.Request, c caller, id, rev, p string) {
	s.mu.Lock()
	_, cm, e, ok := s.locate(w, c, id, rev, p)
	s.mu.Unlock()
	if !ok {
		return
	}
	h := w.Header()
	if e.isLFS() {
		h.Set("X-Linked-Etag", `"`+e.LFS+`"`)
		h.Set("X-Linked-Size", itoa(e.Size))
		h.Set("Location", s.cdnDownloadURL(e.LFS, path.Base(p)))
		h.Set("Content-Length", "0")
		w.WriteHeader(http.StatusFound)
		return
	}
	h.Set("Location", "/api/resolve-cache/models/"+id+"/"+cm.ID+"/"+escapePath(p))
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// handleResolveCache serves a regular file of a commit.
func (s *Server) handleResolveCache(w http.ResponseWriter, r *http.Request, c caller, id, commitID, p string) {
	s.mu.Lock()
	_, _, e, ok := s.locate(w, c, id, commitID, p)
	var data []byte
	if ok {
		data = s.contentLocked(e)
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	if e.isLFS() {
		w.Header().Set("Location", s.cdnDownloadURL(e.LFS, path.Base(p)))
		w.WriteHeader(http.StatusFound)
		return
	}
	w.Header().Set("Content-Disposition", contentDisposition(path.Base(p)))
	s.serveBlob(w, r, e.BlobID, e.BlobID, data, contentType(p, data), true)
}

// handleRaw serves /{repo}/raw/{rev}/{path}: the git blob itself, so the
// pointer file for an LFS file, without a redirect.
func (s *Server) handleRaw(w http.ResponseWriter, r *http.Request, c caller, id, rev, p string) {
	s.mu.Lock()
	_, _, e, ok := s.locate(w, c, id, rev, p)
	var data []byte
	if ok {
		data = s.contentLocked(e)
		if e.isLFS() {
			data = lfsPointer(e.LFS, e.Size)
		}
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	s.serveBlob(w, r, e.BlobID, e.BlobID, data, contentType(p, data), true)
}

// cdnDownloadURL is the presigned CDN URL of an LFS object.
func (s *Server) cdnDownloadURL(oid, filename string) string {
	return s.presign(s.CDNURL, "/repos/"+oid, url.Values{"response-content-disposition": {contentDisposition(filename)}})
}

// handleCDNGet serves an LFS object from the CDN host.
func (s *Server) handleCDNGet(w http.ResponseWriter, r *http.Request, oid string) {
	if !s.checkPresigned(w, r, "/repos/"+oid) {
		return
	}
	s.mu.Lock()
	data, ok := s.lfs[oid]
	etag := s.cdnTags[oid]
	s.mu.Unlock()
	if !ok {
		writeS3Error(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	if etag == "" { // S3's ETag of a single-part object is its MD5; hash it once, not per request
		sum := md5.Sum(data)
		etag = hex.EncodeToString(sum[:])
		s.mu.Lock()
		s.cdnTags[oid] = etag
		s.mu.Unlock()
	}
	if cd := r.URL.Query().Get("response-content-disposition"); cd != "" {
		w.Header().Set("Content-Disposition", cd)
	}
	s.serveBlob(w, r, oid, etag, data, "application/octet-stream", false)
}

// serveBlob sends content with Range support (206, Content-Range, If-Range)
// and, when allowed and asked for, gzip with chunked encoding.
func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, oid, etag string, data []byte, ctype string, allowGzip bool) {
	data = s.servedContent(oid, data)
	if cw, ok := w.(*countingWriter); ok {
		cw.setOID(oid)
	}
	h := w.Header()
	h.Set("ETag", `"`+etag+`"`)
	h.Set("Content-Type", ctype)
	h.Set("Accept-Ranges", "bytes")
	if allowGzip && r.Method == http.MethodGet && r.Header.Get("Range") == "" && acceptsGzip(r) && isTextType(ctype) {
		h.Set("Content-Encoding", "gzip")
		h.Set("Vary", "Accept-Encoding")
		h.Del("Accept-Ranges")
		w.WriteHeader(http.StatusOK)
		if f, ok := w.(http.Flusher); ok {
			f.Flush() // headers out without Content-Length: the body is chunked
		}
		gz := gzip.NewWriter(w)
		gz.Write(data) //nolint:errcheck // client may be gone
		gz.Close()     //nolint:errcheck
		return
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.TrimSpace(q) != "q=0" {
			return true
		}
	}
	return false
}

func isTextType(ct string) bool {
	return strings.HasPrefix(ct, "text/") || strings.HasPrefix(ct, "application/json")
}

// contentType guesses the type of a repo file from its extension and content.
func contentType(p string, data []byte) string {
	switch path.Ext(p) {
	case ".json":
		return "application/json; charset=utf-8"
	case ".md", ".txt", ".py", ".yaml", ".yml", ".jinja", ".cfg", ".toml", "":
		if utf8.Valid(data) {
			return "text/plain; charset=utf-8"
		}
		return "application/octet-stream"
	}
	if t := mime.TypeByExtension(path.Ext(p)); t != "" {
		return t
	}
	if utf8.Valid(data) && !bytes.ContainsRune(data, 0) {
		return "text/plain; charset=utf-8"
	}
	return "application/octet-stream"
}

func contentDisposition(filename string) string {
	return `inline; filename*=UTF-8''` + url.PathEscape(filename) + `; filename="` + strings.ReplaceAll(filename, `"`, "") + `";`
}

// escapePath escapes each segment of a repo path.
func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}
