package hubtest

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// lfsMediaType is the git-lfs batch API's content type.
const lfsMediaType = "application/vnd.git-lfs+json"

// pendingUpload is a multipart LFS upload in progress.
type pendingUpload struct {
	size  int64
	chunk int64
	parts map[int][]byte // part number (1-based) -> bytes
	etags map[int]string
}

func (p *pendingUpload) numParts() int { return int((p.size + p.chunk - 1) / p.chunk) }

type lfsAction struct {
	Href      string            `json:"href"`
	Header    map[string]string `json:"header,omitempty"`
	ExpiresAt string            `json:"expires_at,omitempty"`
}

type lfsObjectOut struct {
	OID           string               `json:"oid"`
	Size          int64                `json:"size"`
	Authenticated bool                 `json:"authenticated,omitempty"`
	Actions       map[string]lfsAction `json:"actions,omitempty"`
	Error         *lfsObjectError      `json:"error,omitempty"`
}

type lfsObjectError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// handleLFSBatch answers POST /{repo}.git/info/lfs/objects/batch.
func (s *Server) handleLFSBatch(w http.ResponseWriter, r *http.Request, c caller, id string) {
	var body struct {
		Operation string   `json:"operation"`
		Transfers []string `json:"transfers"`
		HashAlgo  string   `json:"hash_algo"`
		Objects   []struct {
			OID  string `json:"oid"`
			Size int64  `json:"size"`
		} `json:"objects"`
	}
	if err := decodeJSON(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	if body.Operation != "upload" {
		writeError(w, http.StatusBadRequest, "", "hubtest supports the upload operation only, not "+body.Operation)
		return
	}
	if body.HashAlgo != "" && body.HashAlgo != "sha256" && body.HashAlgo != "sha_256" {
		writeError(w, http.StatusBadRequest, "", "unsupported hash_algo "+body.HashAlgo)
		return
	}
	multipartOK := slices.Contains(body.Transfers, "multipart")
	if len(body.Transfers) > 0 && !slices.Contains(body.Transfers, "basic") && !multipartOK {
		writeError(w, http.StatusBadRequest, "", "no supported transfer among "+strings.Join(body.Transfers, ","))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.writableRepo(w, c, id); !ok {
		return
	}
	transfer := "basic"
	out := []lfsObjectOut{}
	for _, o := range body.Objects {
		obj := lfsObjectOut{OID: o.OID, Size: o.Size}
		switch {
		case !isSHA256(o.OID) || o.Size < 0:
			obj.Error = &lfsObjectError{Code: http.StatusUnprocessableEntity, Message: "invalid object: oid must be a sha256 and size non-negative"}
		case s.hasLFS(o.OID, o.Size):
			// Already stored: no actions.
		default:
			obj.Authenticated = true
			verify := lfsAction{Href: s.URL + "/" + id + ".git/info/lfs/objects/verify"}
			if multipartOK && o.Size > s.multipartChunk {
				transfer = "multipart"
				obj.Actions = map[string]lfsAction{"upload": s.startMultipart(o.OID, o.Size), "verify": verify}
			} else {
				href := s.presign(s.CDNURL, "/upload/"+o.OID, url.Values{"size": {itoa(o.Size)}})
				obj.Actions = map[string]lfsAction{"upload": {Href: href}, "verify": verify}
			}
		}
		out = append(out, obj)
	}
	body2 := map[string]any{"transfer": transfer, "objects": out, "hash_algo": "sha256"}
	writeJSONType(w, http.StatusOK, lfsMediaType, body2)
}

// startMultipart registers an upload and returns its action: the completion
// URL as href, chunk_size and one presigned part URL per numeric key.
// Callers hold s.mu.
func (s *Server) startMultipart(oid string, size int64) lfsAction {
	up := &pendingUpload{size: size, chunk: s.multipartChunk, parts: map[int][]byte{}, etags: map[int]string{}}
	s.uploads[oid] = up
	header := map[string]string{"chunk_size": itoa(up.chunk)}
	for n := 1; n <= up.numParts(); n++ {
		header[fmt.Sprintf("%05d", n)] = s.presign(s.CDNURL, "/upload/"+oid+"/"+strconv.Itoa(n), nil)
	}
	done := "/api/complete_multipart"
	q := url.Values{"oid": {oid}, "signature": {s.sign(done + "/" + oid)}}
	return lfsAction{Href: s.URL + done + "?" + q.Encode(), Header: header}
}

// hasLFS reports whether the object is stored with this size. Callers hold s.mu.
func (s *Server) hasLFS(oid string, size int64) bool {
	data, ok := s.lfs[oid]
	return ok && int64(len(data)) == size
}

// readUploadBody reads a PUT body the way S3 accepts it: a Content-Length is
// required (chunked bodies get 501).
func readUploadBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.ContentLength < 0 || slices.Contains(r.TransferEncoding, "chunked") {
		writeS3Error(w, http.StatusNotImplemented, "NotImplemented",
			"A header you provided implies functionality that is not implemented (Transfer-Encoding)")
		return nil, false
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		writeS3Error(w, http.StatusBadRequest, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header: "+err.Error())
		return nil, false
	}
	return data, true
}

// handleCDNPut stores a basic-transfer upload.
func (s *Server) handleCDNPut(w http.ResponseWriter, r *http.Request, oid string) {
	if !s.checkPresigned(w, r, "/upload/"+oid) {
		return
	}
	size := r.URL.Query().Get("size")
	data, ok := readUploadBody(w, r)
	if !ok {
		return
	}
	if itoa(int64(len(data))) != size || sha256Hex(data) != oid {
		writeS3Error(w, http.StatusBadRequest, "XAmzContentSHA256Mismatch",
			"The provided 'x-amz-content-sha256' header does not match what was computed.")
		return
	}
	sum := md5.Sum(data)
	s.mu.Lock()
	s.lfs[oid] = data
	s.mu.Unlock()
	w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:])+`"`)
	w.WriteHeader(http.StatusOK)
}

// handleCDNPart stores one part of a multipart upload and answers its ETag.
func (s *Server) handleCDNPart(w http.ResponseWriter, r *http.Request, oid, part string) {
	if !s.checkPresigned(w, r, "/upload/"+oid+"/"+part) {
		return
	}
	n, err := strconv.Atoi(part)
	data, ok := readUploadBody(w, r)
	if !ok {
		return
	}
	sum := md5.Sum(data)
	etag := `"` + hex.EncodeToString(sum[:]) + `"`
	s.mu.Lock()
	up := s.uploads[oid]
	if up == nil || err != nil || n < 1 || n > up.numParts() {
		s.mu.Unlock()
		writeS3Error(w, http.StatusNotFound, "NoSuchUpload", "The specified multipart upload does not exist.")
		return
	}
	up.parts[n], up.etags[n] = data, etag
	s.mu.Unlock()
	w.Header().Set("ETag", etag)
	w.WriteHeader(http.StatusOK)
}

// handleCompleteMultipart assembles a multipart upload: every part must be
// there with the ETag S3 gave it, and the whole must hash to the oid.
func (s *Server) handleCompleteMultipart(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	oid := q.Get("oid")
	if !hmac.Equal([]byte(s.sign("/api/complete_multipart/"+oid)), []byte(q.Get("signature"))) {
		writeError(w, http.StatusForbidden, "", "Invalid signature for multipart completion")
		return
	}
	var body struct {
		OID   string    `json:"oid"`
		Parts []partRef `json:"parts"`
	}
	if err := decodeJSON(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	// Collect the parts under the lock; assemble and hash outside it.
	s.mu.Lock()
	up := s.uploads[oid]
	if up == nil || body.OID != oid {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "", "No multipart upload in progress for "+body.OID)
		return
	}
	size, parts, err := up.collect(body.Parts)
	s.mu.Unlock()
	if err != nil {
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	whole := bytes.Join(parts, nil)
	if int64(len(whole)) != size || sha256Hex(whole) != oid {
		writeError(w, http.StatusBadRequest, "", fmt.Sprintf("assembled object is %d bytes with a different sha256 than %s", len(whole), oid))
		return
	}
	s.mu.Lock()
	s.lfs[oid] = whole
	if s.uploads[oid] == up {
		delete(s.uploads, oid)
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{})
}

type partRef struct {
	PartNumber int    `json:"partNumber"`
	ETag       string `json:"etag"`
}

// collect checks the completion's part list (every part, in order, with the
// ETag the CDN answered for it) and returns the object size and the parts.
// Callers hold s.mu.
func (p *pendingUpload) collect(refs []partRef) (int64, [][]byte, error) {
	if len(refs) != p.numParts() {
		return 0, nil, fmt.Errorf("expected %d parts, got %d", p.numParts(), len(refs))
	}
	parts := make([][]byte, 0, len(refs))
	for i, ref := range refs {
		if ref.PartNumber != i+1 {
			return 0, nil, fmt.Errorf("part %d out of order (got partNumber %d)", i+1, ref.PartNumber)
		}
		if p.etags[ref.PartNumber] == "" || normETag(ref.ETag) != normETag(p.etags[ref.PartNumber]) {
			return 0, nil, fmt.Errorf("part %d: etag %q does not match the uploaded part", ref.PartNumber, ref.ETag)
		}
		parts = append(parts, p.parts[ref.PartNumber])
	}
	return p.size, parts, nil
}

func normETag(e string) string { return strings.Trim(strings.TrimPrefix(e, "W/"), `"`) }

// handleLFSVerify answers the verify action: the object must be stored with
// the given size (its sha256 was checked when it was received).
func (s *Server) handleLFSVerify(w http.ResponseWriter, r *http.Request, c caller, id string) {
	var body struct {
		OID  string `json:"oid"`
		Size int64  `json:"size"`
	}
	if err := decodeJSON(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.writableRepo(w, c, id); !ok {
		return
	}
	data, ok := s.lfs[body.OID]
	switch {
	case !ok:
		writeError(w, http.StatusNotFound, "", "Object "+body.OID+" was not uploaded")
	case int64(len(data)) != body.Size:
		writeError(w, http.StatusUnprocessableEntity, "", fmt.Sprintf("Object %s has size %d, not %d", body.OID, len(data), body.Size))
	default:
		writeJSONType(w, http.StatusOK, lfsMediaType, map[string]any{"oid": body.OID, "size": body.Size})
	}
}

func writeJSONType(w http.ResponseWriter, status int, ctype string, v any) {
	w.Header().Set("Content-Type", ctype)
	writeJSON(w, status, v)
}
