// Package selinux tells whether SELinux is on and edits file contexts and booleans
// through the kernel's own interfaces (the security.selinux attribute, selinuxfs), as
// chcon and setsebool do, without libselinux.
package selinux

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Attr is the extended attribute that holds a file's SELinux context.
const Attr = "security.selinux"

// Enabled says whether SELinux is on: selinuxfs is mounted at fs (normally /sys/fs/selinux)
// with its enforce file. An error names what is missing, for the step's message.
func Enabled(fs string) error {
	if _, err := os.Stat(filepath.Join(fs, "enforce")); err != nil {
		return fmt.Errorf("SELinux is not enabled on this machine (no %s; Debian and Ubuntu ship without it)", filepath.Join(fs, "enforce"))
	}
	return nil
}

// Context reads a file's context ("system_u:object_r:httpd_sys_content_t:s0"), without
// following a symlink at path.
func Context(path string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := syscall.Getxattr(path, Attr, buf)
		if errors.Is(err, syscall.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if err != nil {
			return "", fmt.Errorf("read the SELinux context of %s: %w", path, err)
		}
		return strings.TrimRight(string(buf[:n]), "\x00"), nil
	}
}

// WithType is ctx with its type (the third field) replaced.
func WithType(ctx, typ string) (string, error) {
	fields := strings.SplitN(ctx, ":", 4)
	if len(fields) < 3 {
		return "", fmt.Errorf("%q is not an SELinux context (user:role:type[:level])", ctx)
	}
	fields[2] = typ
	return strings.Join(fields, ":"), nil
}

// SetContext writes a file's context.
func SetContext(path, ctx string) error {
	if err := syscall.Setxattr(path, Attr, []byte(ctx), 0); err != nil {
		return fmt.Errorf("set the SELinux context of %s to %s: %w", path, ctx, err)
	}
	return nil
}

// Boolean reads a boolean's current value from selinuxfs ("1 1": current, then pending).
func Boolean(fs, name string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(fs, "booleans", name))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("SELinux has no boolean %q (see getsebool -a)", name)
		}
		return false, err
	}
	current, _, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	return current == "1", nil
}

// SetBoolean sets a boolean for the running system and commits it, as `setsebool NAME
// on|off` without -P does: the policy on disk keeps its value for the next boot.
func SetBoolean(fs, name string, on bool) error {
	value := "0"
	if on {
		value = "1"
	}
	if err := os.WriteFile(filepath.Join(fs, "booleans", name), []byte(value), 0); err != nil {
		return fmt.Errorf("set SELinux boolean %s: %w", name, err)
	}
	if err := os.WriteFile(filepath.Join(fs, "commit_pending_bools"), []byte("1"), 0); err != nil {
		return fmt.Errorf("commit SELinux boolean %s: %w", name, err)
	}
	return nil
}
