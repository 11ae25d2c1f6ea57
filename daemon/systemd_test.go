package daemon

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// unitFiles are the shipped systemd units, relative to this package.
var unitFiles = []string{"lorasync.service", "lorasync-run.service", "lorasync-run.timer"}

const unitDir = "../systemd"

// installedBinary is where the units expect lorasync.
const installedBinary = "/usr/local/bin/lorasync"

// TestSystemdUnitsVerify runs `systemd-analyze verify` on the units. verify
// refuses an ExecStart whose binary does not exist, so the units are copied
// to a temp dir with /usr/local/bin/lorasync replaced by this test binary:
// verify checks only that the path is an executable file, which the test
// binary is, and checks every other directive exactly as shipped. Warnings
// (unknown keys, bad values) exit 0, so any output also fails the test.
func TestSystemdUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("LORASYNC_REQUIRE_CONFORMANCE") == "1" {
			t.Fatal("systemd-analyze not found and LORASYNC_REQUIRE_CONFORMANCE=1 (apt-get install systemd)")
		}
		t.Skip("systemd-analyze not found (apt-get install systemd); set LORASYNC_REQUIRE_CONFORMANCE=1 to make this a failure")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var args []string
	for _, name := range unitFiles {
		data, err := os.ReadFile(filepath.Join(unitDir, name))
		if err != nil {
			t.Fatal(err)
		}
		data = bytes.ReplaceAll(data, []byte(installedBinary), []byte(exe))
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "./"+name)
	}
	cmd := exec.Command(analyze, append([]string{"verify", "--man=no"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The units carry the properties the daemon relies on.
func TestSystemdUnitsDirectives(t *testing.T) {
	want := map[string][]string{
		"lorasync.service": {
			"Type=notify", "ExecStart=" + installedBinary + " daemon --config /etc/lorasync/config.yaml",
			"ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure", "WatchdogSec=60s",
			"DynamicUser=yes", "StateDirectory=lorasync", "CacheDirectory=lorasync",
			"LoadCredential=hf_token:/etc/lorasync/hf_token", "ProtectSystem=strict", "ProtectHome=yes",
			"PrivateTmp=yes", "NoNewPrivileges=yes", "Conflicts=lorasync-run.service",
		},
		"lorasync-run.service": {
			"Type=oneshot", "ExecStart=" + installedBinary + " run --config /etc/lorasync/config.yaml",
			"DynamicUser=yes", "StateDirectory=lorasync", "LoadCredential=hf_token:/etc/lorasync/hf_token",
			"ProtectSystem=strict", "Conflicts=lorasync.service",
		},
		"lorasync-run.timer": {"OnCalendar=*:0/15", "Persistent=true", "WantedBy=timers.target"},
	}
	for name, lines := range want {
		have := map[string]bool{}
		f, err := os.Open(filepath.Join(unitDir, name))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			have[strings.TrimSpace(sc.Text())] = true
		}
		f.Close()
		for _, l := range lines {
			if !have[l] {
				t.Errorf("%s: missing %q", name, l)
			}
		}
	}
}
