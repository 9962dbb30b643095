package kit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"unsafe"

	"chaosrun/chaos_go/kit/internal/jsonx"
)

// PathState is what a path is, as a change record keeps it and restore compares it:
// {"exists": false}, or its type (file, dir, symlink, other), mode (four octal digits),
// uid and gid, a file's size and, up to MaxRecorded bytes, the SHA-256 of its content.
// A symlink is followed; "symlink" then holds the link's own target.
func PathState(path string) map[string]any {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			var lst syscall.Stat_t
			if syscall.Lstat(path, &lst) == nil { // a dangling symlink
				target, _ := os.Readlink(path)
				return map[string]any{"exists": false, "symlink": target}
			}
			return map[string]any{"exists": false}
		}
		return map[string]any{"exists": true, "error": err.Error()}
	}
	out := map[string]any{"exists": true, "type": fileType(st.Mode), "mode": fmt.Sprintf("%04o", st.Mode&07777),
		"uid": int(st.Uid), "gid": int(st.Gid)}
	if target, err := os.Readlink(path); err == nil {
		out["symlink"] = target
	}
	if st.Mode&syscall.S_IFMT == syscall.S_IFREG {
		out["size"] = st.Size
		if st.Size <= MaxRecorded {
			if digest, err := fileDigest(path); err == nil {
				out["sha256"] = digest
			}
		}
	}
	return out
}

func fileType(mode uint32) string {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return "file"
	case syscall.S_IFDIR:
		return "dir"
	case syscall.S_IFLNK:
		return "symlink"
	}
	return "other"
}

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Inode flags of FS_IOC_GETFLAGS (chattr's a and i), from linux/fs.h (the ioctl numbers
// encode sizeof(long); the kernel reads an int).
const (
	FlagImmutable = 0x00000010
	FlagAppend    = 0x00000020
	iocGetFlags   = 0x80086601
	iocSetFlags   = 0x40086602
)

// FileFlags reads the inode flags of the open file fd (lsattr).
func FileFlags(fd int) (int32, error) {
	var flags int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), iocGetFlags, uintptr(unsafe.Pointer(&flags))); errno != 0 {
		return 0, errno
	}
	return flags, nil
}

// SetFileFlags sets the inode flags of the open file fd (chattr).
func SetFileFlags(fd int, flags int32) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), iocSetFlags, uintptr(unsafe.Pointer(&flags))); errno != 0 {
		return errno
	}
	return nil
}

// DecodeObject decodes a JSON object (numbers as float64), with the kit's small codec.
func DecodeObject(text string) (map[string]any, error) {
	return jsonx.DecodeObject([]byte(text), false)
}
