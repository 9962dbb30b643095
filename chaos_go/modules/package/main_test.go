package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

const status = `Package: nginx
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 1.22.1-9+deb12u1
Description: small, powerful, scalable web/proxy server
 Nginx ("engine X") is a high-performance web and reverse proxy server.

Package: apache2
Status: deinstall ok config-files
Architecture: amd64
Version: 2.4.62-1~deb12u2

`

func probe(t *testing.T, with map[string]any) map[string]any {
	path := filepath.Join(t.TempDir(), "status")
	if err := os.WriteFile(path, []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
	with["status_file"] = path
	return moduletest.Probe(t, declaration, run, with)
}

func TestAnInstalledPackageAndItsVersion(t *testing.T) {
	res := probe(t, map[string]any{"name": "nginx", "min_version": "1.22"})
	if res["installed"] != true || res["version"] != "1.22.1-9+deb12u1" || res["architecture"] != "amd64" || res["version_ok"] != true {
		t.Errorf("result %v", res)
	}
	if res := probe(t, map[string]any{"name": "nginx", "min_version": "1:1.0"}); res["version_ok"] != false {
		t.Errorf("an epoch outranks any version: %v", res)
	}
}

func TestARemovedOrUnknownPackageIsNotInstalled(t *testing.T) {
	if res := probe(t, map[string]any{"name": "apache2"}); res["installed"] != false || res["status"] != "deinstall ok config-files" || res["version_ok"] != false {
		t.Errorf("removed: %v", res)
	}
	if res := probe(t, map[string]any{"name": "nope"}); res["installed"] != false || res["status"] != "" || res["version"] != "" {
		t.Errorf("unknown: %v", res)
	}
}

func TestVersionsCompareAsDpkgCompares(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"1.0", "1.0", 0}, {"1.0~rc1", "1.0", -1}, {"1.0", "1.0+b1", -1}, {"1.2", "1.10", -1},
		{"1:0.1", "2.0", 1}, {"1.0-1", "1.0-2", -1}, {"1.0-10", "1.0-9", 1}, {"1.0a", "1.0", 1},
		{"1.22.1-9+deb12u1", "1.22.1-9", 1}, {"2.4.62-1~deb12u2", "2.4.62-1", -1}, {"0001", "1", 0},
	} {
		got := compareVersions(c.a, c.b)
		if (got > 0) != (c.want > 0) || (got < 0) != (c.want < 0) {
			t.Errorf("compare(%q, %q) = %d; want sign %d", c.a, c.b, got, c.want)
		}
	}
}

func TestVersionsAgreeWithDpkgItselfWhereItIsInstalled(t *testing.T) {
	dpkg, err := exec.LookPath("dpkg")
	if err != nil {
		t.Skip("no dpkg here")
	}
	versions := []string{"1.0", "1.0~rc1", "1.0+b1", "1:0.1", "1.0-1", "1.0-10", "1.0a", "1.0~~", "1.0~", "2.4.62-1~deb12u2", "1.2.3.4", "0.9-0ubuntu1"}
	for _, a := range versions {
		for _, b := range versions {
			lt := exec.Command(dpkg, "--compare-versions", a, "lt", b).Run() == nil
			if got := compareVersions(a, b) < 0; got != lt {
				t.Errorf("%q < %q: ours %v, dpkg %v", a, b, got, lt)
			}
		}
	}
}
