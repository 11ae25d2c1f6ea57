package hub

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
)

// repoIDRE follows huggingface_hub's validate_repo_id: an optional namespace
// and a name, each of letters, digits, "-", "_" and ".", at most 96 chars.
var repoIDRE = regexp.MustCompile(`^(?:[\w\-.]{1,96}/)?[\w\-.]{1,96}$`)

// commitRE matches a full commit hash (REGEX_COMMIT_HASH in Python).
var commitRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// IsCommit reports whether rev is a full 40-hex commit hash.
func IsCommit(rev string) bool { return commitRE.MatchString(rev) }

// checkRepoID rejects ids that the Hub would refuse or that could escape the
// cache once turned into a folder name ("--" and ".." are forbidden, as in Python).
func checkRepoID(repo string) error {
	if !repoIDRE.MatchString(repo) || strings.Contains(repo, "--") || strings.Contains(repo, "..") ||
		strings.HasPrefix(repo, ".") || strings.HasSuffix(repo, ".") {
		return &Error{Op: "validate", Repo: repo, Err: ErrBadRequest,
			Message: `repo id must be "name" or "namespace/name" of [A-Za-z0-9_.-], without "--" or ".."`}
	}
	return nil
}

// repoFolderName is huggingface_hub's repo_folder_name for a model repo:
// "org/name" -> "models--org--name".
func repoFolderName(repo string) string {
	return "models--" + strings.ReplaceAll(repo, "/", "--")
}

// checkRelPath validates a repository-relative path (a file path from the
// network, or a revision used as a refs/ file name). It must be a clean
// relative slash path: not empty, not absolute, no backslash, no NUL, no
// empty, "." or ".." segment.
func checkRelPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty path", ErrUnsafePath)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("%w: absolute path %q", ErrUnsafePath, p)
	case strings.ContainsAny(p, "\\\x00"):
		return fmt.Errorf("%w: backslash or NUL in %q", ErrUnsafePath, p)
	case len(p) >= 2 && p[1] == ':':
		return fmt.Errorf("%w: drive-letter path %q", ErrUnsafePath, p)
	}
	for _, seg := range strings.Split(p, "/") {
		switch seg {
		case "":
			return fmt.Errorf("%w: empty segment in %q", ErrUnsafePath, p)
		case ".", "..":
			return fmt.Errorf("%w: %q segment in %q", ErrUnsafePath, seg, p)
		}
	}
	return nil
}

// checkRevision validates a revision name before it becomes refs/{rev}.
func checkRevision(repo, rev string) error {
	if err := checkRelPath(rev); err != nil {
		return &Error{Op: "validate", Repo: repo, Revision: rev, Err: ErrUnsafePath, Cause: err}
	}
	return nil
}

// within joins root with the slash path rel and verifies that the result is
// lexically inside root. rel must already have passed checkRelPath; this is
// the last line of defence against writes outside the cache.
func within(root, rel string) (string, error) {
	p := filepath.Join(root, filepath.FromSlash(rel))
	r, err := filepath.Rel(root, p)
	if err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) || filepath.IsAbs(r) {
		return "", fmt.Errorf("%w: %q escapes %s", ErrUnsafePath, rel, root)
	}
	return p, nil
}

// Glob matching follows huggingface_hub.utils.filter_repo_objects, which uses
// Python's fnmatch.fnmatchcase: "*" matches any run of characters INCLUDING
// "/", "?" one character, "[seq]" and "[!seq]" character classes; a pattern
// ending in "/" gets "*" appended (a directory means everything under it);
// backslashes are normalised to "/" in patterns.

// matchAny reports whether name matches any of the patterns.
func matchAny(name string, patterns []string) bool {
	for _, p := range patterns {
		if fnmatch(normalizePattern(p), name) {
			return true
		}
	}
	return false
}

func normalizePattern(p string) string {
	p = strings.ReplaceAll(p, "\\", "/")
	if strings.HasSuffix(p, "/") {
		p += "*"
	}
	return p
}

// wanted applies include (allow) and exclude (ignore) pattern lists.
func wanted(name string, include, exclude []string) bool {
	if len(include) > 0 && !matchAny(name, include) {
		return false
	}
	return !(len(exclude) > 0 && matchAny(name, exclude))
}

// fnmatch is fnmatchcase for patterns without Python's regex escapes.
// It backtracks only on "*", so it runs in O(len(pattern)*len(name)).
func fnmatch(pattern, name string) bool {
	px, nx := 0, 0
	starP, starN := -1, -1
	for nx < len(name) {
		if px < len(pattern) {
			switch c := pattern[px]; c {
			case '*':
				starP, starN = px, nx
				px++
				continue
			case '?':
				px++
				nx++
				continue
			case '[':
				if ok, width, valid := matchClass(pattern[px:], name[nx]); valid {
					if ok {
						px += width
						nx++
						continue
					}
				} else if name[nx] == '[' { // unterminated "[" is a literal
					px++
					nx++
					continue
				}
			default:
				if c == name[nx] {
					px++
					nx++
					continue
				}
			}
		}
		if starP >= 0 {
			starN++
			px, nx = starP+1, starN
			continue
		}
		return false
	}
	for px < len(pattern) && pattern[px] == '*' {
		px++
	}
	return px == len(pattern)
}

// matchClass matches byte b against the class at the start of p ("[...]").
// It returns whether b matched, the width of the class in p, and whether the
// class is well formed (closed by "]").
func matchClass(p string, b byte) (matched bool, width int, valid bool) {
	i := 1
	negate := false
	if i < len(p) && p[i] == '!' {
		negate = true
		i++
	}
	start := i
	for i < len(p) && (p[i] != ']' || i == start) {
		lo := p[i]
		hi := lo
		if i+2 < len(p) && p[i+1] == '-' && p[i+2] != ']' {
			hi = p[i+2]
			i += 3
		} else {
			i++
		}
		if lo <= b && b <= hi {
			matched = true
		}
	}
	if i >= len(p) {
		return false, 0, false
	}
	return matched != negate, i + 1, true
}
