package conformance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// jsDir holds the node scripts and their package-lock.json.
const jsDir = "js"

// scriptTimeout bounds one node run; the largest moves ~11 MiB over loopback.
const scriptTimeout = 2 * time.Minute

// requireNode skips (or, with LORASYNC_REQUIRE_CONFORMANCE=1, fails) when
// node or the installed @huggingface/hub package is missing.
func requireNode(t *testing.T) string {
	t.Helper()
	missing := func(what string) {
		msg := what + "; install the JS peer with `npm ci` in hub/conformance/js (Node >= 20)"
		if os.Getenv("LORASYNC_REQUIRE_CONFORMANCE") == "1" {
			t.Fatal("conformance required (LORASYNC_REQUIRE_CONFORMANCE=1) but " + msg)
		}
		t.Skip(msg)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not on PATH")
	}
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "@huggingface", "hub", "package.json")); err != nil {
		missing("@huggingface/hub is not installed in hub/conformance/js/node_modules")
	}
	return node
}

// runNode runs a script with env and args and decodes its RESULT file into
// out. It returns the combined stderr, and an error when node fails.
func runNode(t *testing.T, node, script string, env map[string]string, out any, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	result := filepath.Join(t.TempDir(), "result.json")
	cmd := exec.CommandContext(ctx, node, append([]string{script}, args...)...)
	cmd.Dir = jsDir
	cmd.Env = append(os.Environ(), "RESULT="+result, "NODE_NO_WARNINGS=1")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr // downloadFileToCacheDir logs progress with console.debug
	if err := cmd.Run(); err != nil {
		return stderr.String(), err
	}
	data, err := os.ReadFile(result)
	if err != nil {
		return stderr.String(), err
	}
	return stderr.String(), json.Unmarshal(data, out)
}

// randomBytes is deterministic pseudo-random content.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// writeFiles writes name -> content under a temp dir and returns
// "repoPath=localPath" arguments for upload.mjs.
func writeFiles(t *testing.T, files map[string][]byte) []string {
	t.Helper()
	dir := t.TempDir()
	var args []string
	for name, data := range files {
		p := filepath.Join(dir, strings.ReplaceAll(name, "/", "_"))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, name+"="+p)
	}
	return args
}
