package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

// fakeMount keeps a mountinfo file of one mount and flips it to ro when called as
// `mount -o remount,ro -- /srv/data`, as the kernel's table would show it.
func fakeMount(t *testing.T, options string) (mount, info string) {
	t.Helper()
	dir := t.TempDir()
	info = filepath.Join(dir, "mountinfo")
	os.WriteFile(info, []byte("30 22 7:0 / /srv/data "+options+" shared:9 - ext4 /dev/loop0 rw\n"), 0o644)
	mount = filepath.Join(dir, "mount")
	os.WriteFile(mount, []byte(`#!/bin/sh
[ "$*" = "-o remount,ro -- /srv/data" ] || { echo "mount: unexpected $*" >&2; exit 32; }
sed -i 's# rw,# ro,#' `+info+`
`), 0o755)
	return mount, info
}

func TestRemountsReadOnlyAndRecordsTheWayBack(t *testing.T) {
	mount, info := fakeMount(t, "rw,relatime")
	r := kit.NewTestReport()
	p := moduletest.Params(t, declaration, `{"mount_point": "/srv/data/", "mount_path": "`+mount+`", "mountinfo": "`+info+`"}`)
	if err := run(context.Background(), p, r); err != nil {
		t.Fatal(err)
	}
	if res := r.Result(); res["already"] != false || res["before"] != "rw,relatime" || res["source"] != "/dev/loop0" {
		t.Errorf("result = %v", res)
	}
	c := r.Changes()
	if len(c) != 1 || c[0].After.(map[string]any)["options"] != "ro,relatime" {
		t.Fatalf("changes = %+v", c)
	}
	if undo := c[0].Detail["undo"].([][]string); strings.Join(undo[0][1:], " ") != "-o remount,rw -- /srv/data" {
		t.Errorf("undo = %v", undo)
	}
	again := kit.NewTestReport()
	if err := run(context.Background(), p, again); err != nil || again.Result()["already"] != true || len(again.Changes()) != 0 {
		t.Errorf("second run: %v, %v, %v; want already and no change", err, again.Result(), again.Changes())
	}
}

func TestNotAMountPointOrABusyOneIsAClearError(t *testing.T) {
	mount, info := fakeMount(t, "rw,relatime")
	p := moduletest.Params(t, declaration, `{"mount_point": "/srv", "mount_path": "`+mount+`", "mountinfo": "`+info+`"}`)
	if err := run(context.Background(), p, kit.NewTestReport()); err == nil || err.Error() != "/srv is not a mount point" {
		t.Errorf("run = %v", err)
	}
	busy := filepath.Join(t.TempDir(), "mount")
	os.WriteFile(busy, []byte("#!/bin/sh\necho 'mount: /srv/data: mount point is busy.' >&2\nexit 32\n"), 0o755)
	r := kit.NewTestReport()
	p = moduletest.Params(t, declaration, `{"mount_point": "/srv/data", "mount_path": "`+busy+`", "mountinfo": "`+info+`"}`)
	if err := run(context.Background(), p, r); err == nil || !strings.Contains(err.Error(), "mount point is busy") || len(r.Changes()) != 0 {
		t.Errorf("busy: %v, changes %v", err, r.Changes())
	}
}
