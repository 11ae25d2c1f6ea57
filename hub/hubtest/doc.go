// Package hubtest is an in-process fake of the Hugging Face Hub, faithful
// enough that the official clients (Python huggingface_hub, JS
// @huggingface/hub) and lorasync's own hub.Client work against it unchanged.
// Every test in the project and `lorasync demo` use it.
//
// A Server listens twice: URL is the Hub endpoint, CDNURL stands for the CDN
// and S3 and has a different host name (localhost vs 127.0.0.1), so that a
// client following a redirect there must drop its Authorization header; the
// CDN refuses requests that carry one (400) and chunked upload bodies (501),
// as S3 does.
//
// What it serves:
//   - repo info (/api/models/{repo}[/revision/{rev}], ?blobs=true), refs,
//     commits (newest first, absolute Link rel="next" paging), model listing
//     (author, search, sort, full/expand), tree and paths-info, whoami-v2;
//   - downloads: /{repo}/resolve/{rev}/{path} answers a relative 307 to
//     /api/resolve-cache/... for regular files (ETag = git blob sha1) and a
//     302 to the CDN for LFS files (X-Linked-Etag = sha256, X-Linked-Size,
//     no ETag); both carry X-Repo-Commit. Content is served with Range
//     support; text files are gzipped (chunked, no Content-Length) when the
//     client sends Accept-Encoding: gzip without a Range;
//   - uploads: repo creation, branches, preupload, the git-lfs batch API
//     (basic and multipart transfers to presigned CDN URLs, verify), and
//     NDJSON commits with parentCommit (412 when the branch moved) and
//     create_pr (refs/pr/N);
//   - the Hub's errors: X-Error-Code (RepoNotFound: 401 anonymous, 404 with
//     a token; GatedRepo; RevisionNotFound; EntryNotFound), X-Error-Message
//     and a JSON {"error": ...} body; unknown tokens get 401 "Invalid
//     credentials in Authorization header".
//
// Storage is content addressed: regular files by git blob sha1, LFS files
// (by the repo's .gitattributes patterns, or at least 10 MiB) by sha256.
// Commit ids are git-like sha1s of tree, parents, author and message, so
// seeding is reproducible.
//
// CDN URLs are presigned (an HMAC over path and query) and expire one hour
// after they are issued, by the server's clock (WithClock).
//
// Tests seed it from Go (CreateRepo, Commit, CreateBranch, AddToken, ...),
// inspect it (Head, Commits, File, Stat, Requests, ServedBytes) and break it
// on purpose (Inject a Fault, Corrupt a blob as served).
package hubtest
