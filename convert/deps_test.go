package convert

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoNetworkInConvert enforces the layering of docs/architecture.md:
// the conversion takes files and tensors, never the network. No package
// under convert/ may depend (even indirectly) on net/http or on the hub.
func TestNoNetworkInConvert(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-test=false", "github.com/lorasync/lorasync/convert/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "net/http" || strings.HasPrefix(dep, "github.com/lorasync/lorasync/hub") || strings.HasPrefix(dep, "github.com/lorasync/lorasync/daemon") {
			t.Errorf("a package under convert/ depends on %s", dep)
		}
	}
}
