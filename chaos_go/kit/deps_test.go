package kit

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit/kittest"
)

// TestRuntimePackagesLinkNoHeavyStdlibPackages guards the binary size budget
// (docs/module-authoring.md, "Binary size"): the packages a module binary links
// for every module must not bring in net, os/exec or encoding/json.
func TestRuntimePackagesLinkNoHeavyStdlibPackages(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	runtimePkgs := []string{"chaosrun/chaos_go/kit", "chaosrun/chaos_go/kit/procfs", "chaosrun/chaos_go/kit/sysexec", "chaosrun/chaos_go/kit/systemd", "chaosrun/chaos_go/kit/mounts", "chaosrun/chaos_go/kit/sockets"}
	for _, pkg := range runtimePkgs {
		cmd := exec.Command(kittest.GoTool(t), "list", "-deps", pkg)
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "GOPROXY=off", "GOFLAGS=-mod=mod")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			switch dep {
			case "net", "os/exec", "encoding/json":
				t.Errorf("%s depends on %s; want it left to the modules that need it", pkg, dep)
			}
		}
	}
}
