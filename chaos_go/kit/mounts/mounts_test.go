package mounts

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

const info = `22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
30 22 0:26 / /srv/my\040data rw,nosuid,nodev shared:9 - ext4 /dev/loop0 rw
31 22 0:27 / /srv/ro ro,relatime shared:10 master:2 - ext4 /dev/loop1 ro
32 30 0:28 / /srv/my\040data rw,relatime - tmpfs tmpfs rw,size=1024k
bad line
`

func TestParseUnescapesAndTheTopOfAStackIsWhatIsSeen(t *testing.T) {
	ms := Parse(info)
	if len(ms) != 4 {
		t.Fatalf("parsed %d mounts; want 4: %+v", len(ms), ms)
	}
	m, ok := At(ms, "/srv/my data")
	if !ok || m.FSType != "tmpfs" || m.Source != "tmpfs" {
		t.Errorf("At /srv/my data = %+v, %v; want the tmpfs mounted over the ext4", m, ok)
	}
	ro, _ := At(ms, "/srv/ro")
	if !ro.ReadOnly() || !reflect.DeepEqual(ro.Options(), []string{"ro", "relatime"}) {
		t.Errorf("/srv/ro: read-only %v, options %v", ro.ReadOnly(), ro.Options())
	}
	root, _ := At(ms, "/")
	if root.ReadOnly() || !reflect.DeepEqual(root.Options(), []string{"rw", "relatime", "errors=remount-ro"}) {
		t.Errorf("/: %+v", root)
	}
	if got := Escape("/srv/my data\\x"); got != `/srv/my\040data\134x` || Unescape(got) != "/srv/my data\\x" {
		t.Errorf("Escape = %q", got)
	}
	if _, ok := At(ms, "/srv"); ok {
		t.Error("/srv is not a mount point")
	}
}

func TestReadFstabSkipsCommentsAndFillsDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fstab")
	os.WriteFile(path, []byte("# comment\n\nUUID=1 / ext4 errors=remount-ro 0 1\n/dev/sdb1\t/srv/a\\040b\n"), 0o644)
	got, err := ReadFstab(path)
	want := []Entry{{"UUID=1", "/", "ext4", "errors=remount-ro", 3}, {"/dev/sdb1", "/srv/a b", "auto", "defaults", 4}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ReadFstab = %+v, %v; want %+v", got, err, want)
	}
}
