package hub

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// lfsMediaType is the git-lfs batch API's content type.
const lfsMediaType = "application/vnd.git-lfs+json"

type lfsAction struct {
	Href   string            `json:"href"`
	Header map[string]string `json:"header"`
}

type lfsObject struct {
	OID     string `json:"oid"`
	Size    int64  `json:"size"`
	Actions *struct {
		Upload *lfsAction `json:"upload"`
		Verify *lfsAction `json:"verify"`
	} `json:"actions"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// uploadLFS sends the content of every LFS file the Hub does not have yet:
// one batch request per 256 objects, then per object a basic PUT or a
// multipart upload to the presigned URLs (without the Hub token), and the
// verify call (with it). Objects already stored come back without actions.
func (c *Client) uploadLFS(ctx context.Context, repo, rev string, files []*upFile, prog *progress) error {
	byOID := map[string]*upFile{}
	var uniq []*upFile
	for _, f := range files {
		if _, dup := byOID[f.sha256]; !dup {
			byOID[f.sha256] = f
			uniq = append(uniq, f)
		}
	}
	for start := 0; start < len(uniq); start += 256 {
		chunk := uniq[start:min(start+256, len(uniq))]
		objs, err := c.lfsBatch(ctx, repo, rev, chunk)
		if err != nil {
			return err
		}
		todo := map[string]lfsObject{}
		var oids []string
		for _, o := range objs {
			f, ok := byOID[o.OID]
			if !ok {
				return &Error{Op: "lfs batch", Repo: repo, Revision: rev, Err: ErrProtocol,
					Message: "answer names an object we did not ask for: " + o.OID}
			}
			if o.Error != nil {
				return &Error{Op: "lfs batch", Repo: repo, Revision: rev, Path: f.Path, Status: o.Error.Code,
					Err: ErrBadRequest, Message: c.redact(o.Error.Message)}
			}
			if o.Actions == nil || o.Actions.Upload == nil {
				prog.add(f.size) // already stored
				continue
			}
			todo[o.OID] = o
			oids = append(oids, o.OID)
		}
		err = c.fetchAll(ctx, oids, func(ctx context.Context, oid string) error {
			return c.lfsUpload(ctx, repo, rev, byOID[oid], todo[oid], prog)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *Client) lfsBatch(ctx context.Context, repo, rev string, files []*upFile) ([]lfsObject, error) {
	type obj struct {
		OID  string `json:"oid"`
		Size int64  `json:"size"`
	}
	req := map[string]any{
		"operation": "upload",
		"transfers": []string{"basic", "multipart"},
		"hash_algo": "sha256",
		"ref":       map[string]string{"name": rev},
	}
	objs := make([]obj, 0, len(files))
	for _, f := range files {
		objs = append(objs, obj{f.sha256, f.size})
	}
	req["objects"] = objs
	body, err := jsonBody(req)
	if err != nil {
		return nil, err
	}
	cl := &call{method: http.MethodPost, url: c.apiURL("/"+repo+".git/info/lfs/objects/batch", nil), body: body,
		auth: true, header: http.Header{"Accept": {lfsMediaType}, "Content-Type": {lfsMediaType}},
		op: "lfs batch", repo: repo, rev: rev}
	var resp struct {
		Transfer string      `json:"transfer"`
		Objects  []lfsObject `json:"objects"`
	}
	if _, err := c.doJSON(ctx, cl, &resp); err != nil {
		return nil, err
	}
	if resp.Objects == nil {
		return nil, &Error{Op: "lfs batch", Repo: repo, Revision: rev, Err: ErrProtocol, Message: "no objects in answer"}
	}
	return resp.Objects, nil
}

// lfsUpload sends one object, then verifies it.
func (c *Client) lfsUpload(ctx context.Context, repo, rev string, f *upFile, o lfsObject, prog *progress) error {
	up := o.Actions.Upload
	r, closeFn, err := f.open()
	if err != nil {
		return err
	}
	defer closeFn()
	if cs, ok := up.Header["chunk_size"]; ok {
		chunk, err := strconv.ParseInt(cs, 10, 64)
		if err != nil || chunk <= 0 {
			return &Error{Op: "lfs upload", Repo: repo, Revision: rev, Path: f.Path, Err: ErrProtocol,
				Message: fmt.Sprintf("bad chunk_size %q", cs)}
		}
		err = c.lfsMultipart(ctx, repo, rev, f, r, up, chunk, prog)
		if err != nil {
			return err
		}
	} else {
		cl := &call{method: http.MethodPut, url: up.Href, body: sectionBody(r, 0, f.size),
			op: "lfs upload", repo: repo, rev: rev, path: f.Path}
		if err := c.expectOK(ctx, cl); err != nil {
			return err
		}
		prog.add(f.size)
	}
	if v := o.Actions.Verify; v != nil {
		body, err := jsonBody(map[string]any{"oid": f.sha256, "size": f.size})
		if err != nil {
			return err
		}
		hdr := http.Header{"Accept": {lfsMediaType}, "Content-Type": {lfsMediaType}}
		for k, val := range v.Header {
			hdr.Set(k, val)
		}
		cl := &call{method: http.MethodPost, url: v.Href, body: body, auth: true, header: hdr,
			op: "lfs verify", repo: repo, rev: rev, path: f.Path}
		if err := c.expectOK(ctx, cl); err != nil {
			return err
		}
	}
	return nil
}

// lfsMultipart PUTs each part to its presigned URL (numeric keys of the
// action header, "1", "2", ...), collects the ETags and completes the upload.
func (c *Client) lfsMultipart(ctx context.Context, repo, rev string, f *upFile, r io.ReaderAt,
	up *lfsAction, chunk int64, prog *progress) error {
	type part struct {
		n    int
		href string
	}
	var parts []part
	for k, v := range up.Header {
		if n, err := strconv.Atoi(k); err == nil && n > 0 {
			parts = append(parts, part{n, v})
		}
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].n < parts[j].n })
	want := (f.size + chunk - 1) / chunk
	if int64(len(parts)) != want {
		return &Error{Op: "lfs upload", Repo: repo, Revision: rev, Path: f.Path, Err: ErrProtocol,
			Message: fmt.Sprintf("%d part URLs for %d bytes in %d-byte chunks, want %d", len(parts), f.size, chunk, want)}
	}
	type done struct {
		PartNumber int    `json:"partNumber"`
		ETag       string `json:"etag"`
	}
	completed := make([]done, 0, len(parts))
	for i, p := range parts {
		off := int64(i) * chunk
		n := min(chunk, f.size-off)
		cl := &call{method: http.MethodPut, url: p.href, body: sectionBody(r, off, n),
			op: "lfs upload part " + strconv.Itoa(i+1), repo: repo, rev: rev, path: f.Path}
		resp, err := c.do(ctx, cl)
		if err != nil {
			return err
		}
		if _, err := c.check(resp, cl); err != nil {
			return err
		}
		etag := resp.Header.Get("ETag")
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, errorBodyLimit))
		resp.Body.Close()
		if etag == "" {
			return &Error{Op: cl.op, Repo: repo, Revision: rev, Path: f.Path, Err: ErrProtocol, Message: "no ETag"}
		}
		completed = append(completed, done{i + 1, etag})
		prog.add(n)
	}
	body, err := jsonBody(map[string]any{"oid": f.sha256, "parts": completed})
	if err != nil {
		return err
	}
	// Like Python, the completion call carries the LFS headers only; the
	// token goes along when the URL is on the Hub itself (newRequest checks).
	cl := &call{op: "lfs complete multipart", repo: repo, rev: rev, path: f.Path,
		method: http.MethodPost, url: up.Href, body: body, auth: true,
		header: http.Header{"Accept": {lfsMediaType}, "Content-Type": {lfsMediaType}}}
	return c.expectOK(ctx, cl)
}

// sectionBody serves bytes [off, off+n) of r for each attempt, with an
// exact length: presigned storage refuses chunked bodies.
func sectionBody(r io.ReaderAt, off, n int64) func() (io.Reader, int64, error) {
	return func() (io.Reader, int64, error) { return io.NewSectionReader(r, off, n), n, nil }
}

// expectOK sends cl and discards a 2xx body.
func (c *Client) expectOK(ctx context.Context, cl *call) error {
	if u, err := url.Parse(cl.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return &Error{Op: cl.op, Repo: cl.repo, Revision: cl.rev, Path: cl.path, Err: ErrProtocol,
			Message: "bad URL " + strings.SplitN(cl.url, "?", 2)[0]}
	}
	_, err := c.doJSON(ctx, cl, nil)
	return err
}
