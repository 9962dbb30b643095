package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func machine(t *testing.T, now string) (procSys, root string) {
	dir := t.TempDir()
	procSys, root = filepath.Join(dir, "proc"), filepath.Join(dir, "root")
	write(t, filepath.Join(procSys, "vm", "swappiness"), now+"\n")
	return procSys, root
}

func probe(t *testing.T, procSys, root string) map[string]any {
	return moduletest.Probe(t, declaration, run, map[string]any{"key": "vm.swappiness", "proc_sys": procSys, "root": root})
}

func TestTheLastFileByNameWinsAndAnEtcFileMasksTheSameNameInUsrLib(t *testing.T) {
	procSys, root := machine(t, "10")
	write(t, root+"/usr/lib/sysctl.d/50-default.conf", "vm.swappiness = 60\n")
	write(t, root+"/usr/lib/sysctl.d/70-vendor.conf", "vm.swappiness=30\n")
	write(t, root+"/etc/sysctl.d/70-vendor.conf", "# the admin's copy\n")
	write(t, root+"/etc/sysctl.d/60-local.conf", " vm.swappiness =  10 \n")
	res := probe(t, procSys, root)
	if res["value"] != "10" || res["boot_value"] != "10" || res["boot_file"] != root+"/etc/sysctl.d/60-local.conf" || res["persisted"] != true {
		t.Errorf("result %v", res)
	}
}

func TestAValueSetOnlyAtRunTimeIsNotPersisted(t *testing.T) {
	procSys, root := machine(t, "10")
	write(t, root+"/usr/lib/sysctl.d/50-default.conf", "vm/swappiness = 60\n")
	res := probe(t, procSys, root)
	if res["value"] != "10" || res["boot_value"] != "60" || res["persisted"] != false {
		t.Errorf("result %v", res)
	}
	procSys, root = machine(t, "60")
	if res := probe(t, procSys, root); res["boot_value"] != "" || res["boot_file"] != "" || res["persisted"] != false {
		t.Errorf("no file sets it: %v", res)
	}
}

func TestAnUnknownKeyDoesNotExist(t *testing.T) {
	procSys, root := machine(t, "10")
	res := moduletest.Probe(t, declaration, run, map[string]any{"key": "vm.nope", "proc_sys": procSys, "root": root})
	if res["exists"] != false || !strings.Contains(res["reason"].(string), "no such file") {
		t.Errorf("result %v", res)
	}
}
