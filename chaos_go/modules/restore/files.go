package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"chaosrun/chaos_go/kit"
)

// stateAfter is what the change left at its path (kit.Report.Changed records it); empty
// for a record made before chaosrun kept it.
func stateAfter(c change) map[string]any { return obj(c.Detail["state_after"]) }

func digestOf(data []byte) string { d := sha256.Sum256(data); return hex.EncodeToString(d[:]) }

// drifted says how the file at the change's path differs from what the change left, or "".
func drifted(c change, now kit.FileState) string {
	after := stateAfter(c)
	if len(after) == 0 {
		return ""
	}
	if exists, _ := after["exists"].(bool); !exists {
		if now.Exists {
			return "a file is there again since the run"
		}
		return ""
	}
	if !now.Exists {
		return "it is gone since the run"
	}
	if want := str(after["sha256"]); want != "" && want != now.Digest() {
		return "its content changed since the run"
	}
	if size, ok := after["size"].(float64); ok && str(after["sha256"]) == "" && int64(size) != int64(len(now.Content)) {
		return "its size changed since the run"
	}
	return ""
}

// recordIs says whether the file state matches a record of kit.FileState.Record.
func recordIs(now kit.FileState, rec map[string]any) bool {
	if exists, ok := rec["exists"].(bool); ok && !exists {
		return !now.Exists
	}
	if !now.Exists || str(rec["sha256"]) != now.Digest() {
		return false
	}
	return str(rec["mode"]) == fmt.Sprintf("%04o", now.Mode) && int(num(rec["uid"])) == now.UID && int(num(rec["gid"])) == now.GID
}

func statMode(path string) (syscall.Stat_t, error) {
	var st syscall.Stat_t
	err := syscall.Stat(path, &st)
	return st, err
}

func undoChmod(c change) outcome {
	before, after := str(c.Before), str(c.After)
	want, err := strconv.ParseUint(before, 8, 32)
	if err != nil {
		return broke("the record's mode before, %q, is not octal", before)
	}
	st, err := statMode(c.Path)
	if err != nil {
		return since("%v", err)
	}
	now := fmt.Sprintf("%04o", st.Mode&07777)
	switch now {
	case before:
		return was("mode is %s", now)
	case after:
	default:
		return since("mode is %s now, not the run's %s", now, after)
	}
	if err := syscall.Chmod(c.Path, uint32(want)); err != nil {
		return broke("chmod: %v", err)
	}
	return did("mode %s -> %s", now, before)
}

func undoChown(c change) outcome {
	before, after := obj(c.Before), obj(c.After)
	st, err := statMode(c.Path)
	if err != nil {
		return since("%v", err)
	}
	uid, gid := int(st.Uid), int(st.Gid)
	bu, bg, au, ag := int(num(before["uid"])), int(num(before["gid"])), int(num(after["uid"])), int(num(after["gid"]))
	if uid == bu && gid == bg {
		return was("owner is %d:%d", uid, gid)
	}
	if uid != au || gid != ag {
		return since("owner is %d:%d now, not the run's %d:%d", uid, gid, au, ag)
	}
	if err := os.Chown(c.Path, bu, bg); err != nil {
		return broke("chown: %v", err)
	}
	// chown cleared setuid and setgid: put the mode from before back too.
	if mode, err := strconv.ParseUint(str(c.Detail["mode_before"]), 8, 32); err == nil {
		if err := syscall.Chmod(c.Path, uint32(mode)); err != nil {
			return broke("chmod after chown: %v", err)
		}
	}
	return did("owner %d:%d -> %d:%d", uid, gid, bu, bg)
}

func undoChattr(c change) outcome {
	const mask = kit.FlagImmutable | kit.FlagAppend
	before, after := int32(num(c.Detail["flags_before"]))&mask, int32(num(c.Detail["flags_after"]))&mask
	fd, err := syscall.Open(c.Path, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return since("%v", err)
	}
	defer syscall.Close(fd)
	flags, err := kit.FileFlags(fd)
	if err != nil {
		return broke("get flags: %v", err)
	}
	switch flags & mask {
	case before:
		return was("attributes are %q", str(c.Before))
	case after:
	default:
		return since("its a/i attributes changed since the run")
	}
	if err := kit.SetFileFlags(fd, flags&^mask|before); err != nil {
		return broke("set flags: %v", err)
	}
	return did("attributes %q -> %q", str(c.After), str(c.Before))
}

// undoWrite puts back a file kit.WriteRecorded wrote: its old content, mode and owner, or
// no file (and none of the folders it made) when there was none.
func undoWrite(c change) outcome {
	before, after := obj(c.Before), obj(c.After)
	now, err := kit.ReadFileState(c.Path)
	if err != nil {
		return since("%v", err)
	}
	if recordIs(now, before) {
		return was("it is as before")
	}
	if !recordIs(now, after) {
		return since("it changed since the run (content, mode or owner)")
	}
	if exists, _ := before["exists"].(bool); !exists && before["sha256"] == nil {
		if err := os.Remove(c.Path); err != nil {
			return broke("remove: %v", err)
		}
		return did("removed (there was no file)%s", removeDirs(strs(listOf(c.Detail["made_dirs"]))))
	}
	content, err := base64.StdEncoding.DecodeString(str(before["content_base64"]))
	if err != nil || digestOf(content) != str(before["sha256"]) {
		return outcome{irreversible, "the record does not hold the old content"}
	}
	mode, _ := strconv.ParseUint(str(before["mode"]), 8, 32)
	want := kit.FileState{Exists: true, Content: content, Mode: uint32(mode), UID: int(num(before["uid"])), GID: int(num(before["gid"]))}
	if _, err := kit.WriteFileState(c.Path, want, false); err != nil {
		return broke("%v", err)
	}
	return did("old content back (%d bytes, mode %s)", len(content), str(before["mode"]))
}

func listOf(v any) []any {
	l, _ := v.([]any)
	return l
}

// removeDirs removes folders a change made, innermost first, as long as they are empty.
func removeDirs(dirs []string) string {
	var removed, kept []string
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err == nil || errors.Is(err, fs.ErrNotExist) {
			removed = append(removed, dirs[i])
		} else {
			kept = append(kept, dirs[i])
		}
	}
	out := ""
	if len(removed) > 0 {
		out += ", and " + strings.Join(removed, ", ")
	}
	if len(kept) > 0 {
		out += "; kept " + strings.Join(kept, ", ") + " (not empty)"
	}
	return out
}

// undoEdit puts back the text of a file edited in place (corrupt_config, hosts_entry,
// resolv_conf, a boot configuration line, a certificate), keeping its mode and owner.
func undoEdit(ctx context.Context, c change) outcome {
	now, err := kit.ReadFileState(c.Path)
	if err != nil {
		return since("%v", err)
	}
	before, kept := c.Before.(string)
	if kept && now.Exists && now.Digest() == digestOf([]byte(before)) {
		return was("it is as before")
	}
	if why := drifted(c, now); why != "" {
		return since("%s", why)
	}
	if !now.Exists {
		return since("it is gone since the run")
	}
	if !kept {
		if undo := argvs(c.Detail["undo"]); len(undo) > 0 {
			return runUndo(ctx, undo)
		}
		return outcome{irreversible, "the record does not hold the old content (" + str(c.Detail["before_omitted"]) + ")"}
	}
	if err := kit.WriteFileAtomic(c.Path, []byte(before), 0o644); err != nil {
		return broke("%v", err)
	}
	return did("old content back (%d bytes)", len(before))
}

// undoCreate removes a file the run created (and the folders it made for it).
func undoCreate(c change) outcome {
	var st syscall.Stat_t
	if err := syscall.Lstat(c.Path, &st); errors.Is(err, fs.ErrNotExist) {
		return was("there is no file")
	}
	after := stateAfter(c)
	if c.Detail["written_by"] != nil {
		// a file a fault process writes: its content was never the run's to compare
	} else if size, ok := after["size"].(float64); ok && str(after["sha256"]) == "" {
		if st.Size != int64(size) { // too large to hash: its size tells
			return since("its size changed since the run")
		}
	} else {
		now, err := kit.ReadFileState(c.Path)
		if err != nil {
			return since("%v", err)
		}
		if why := drifted(c, now); why != "" {
			return since("%s", why)
		}
	}
	if err := os.Remove(c.Path); err != nil {
		return broke("remove: %v", err)
	}
	return did("removed%s", removeDirs(strs(listOf(c.Detail["created_dirs"]))))
}

// undoCreateFiles removes the files exhaust_inodes made, by their names.
func undoCreateFiles(c change) outcome {
	// limit: the names the step tried (a record streamed before its first file has only
	// that); an older record has only how many it created.
	prefix, count := str(c.Detail["prefix"]), int64(num(c.Detail["limit"]))
	if _, ok := c.Detail["limit"]; !ok {
		count = int64(num(c.Detail["created"]))
	}
	if prefix == "" {
		return outcome{irreversible, "the record does not name the files"}
	}
	removed := 0
	for i := int64(0); i < count; i++ {
		name := filepath.Join(c.Path, prefix+fmt.Sprintf("%08s", strconv.FormatInt(i, 16)))
		if err := syscall.Unlink(name); err == nil {
			removed++
		} else if !errors.Is(err, fs.ErrNotExist) {
			return broke("remove %s: %v (%d removed)", name, err, removed)
		}
	}
	msg := ""
	if top := str(c.Detail["created_dir"]); top != "" {
		var dirs []string
		for d := c.Path; ; d = filepath.Dir(d) {
			dirs = append([]string{d}, dirs...)
			if d == top || d == filepath.Dir(d) {
				break
			}
		}
		msg = removeDirs(dirs)
	}
	if removed == 0 && msg == "" {
		return was("none of its %d files is there", count)
	}
	return did("removed %d files%s", removed, msg)
}

// undoDelete writes a deleted file back from its record: a regular file's content, a
// symlink's target, an empty folder.
func undoDelete(c change) outcome {
	before := obj(c.Before)
	var st syscall.Stat_t
	if err := syscall.Lstat(c.Path, &st); err == nil {
		if now, err := kit.ReadFileState(c.Path); err == nil && now.Exists && now.Digest() == str(before["sha256"]) {
			return was("it is back as before")
		}
		return since("something is at the path again")
	}
	mode, _ := strconv.ParseUint(str(before["mode"]), 8, 32)
	uid, gid := int(num(before["uid"])), int(num(before["gid"]))
	switch str(before["type"]) {
	case "symlink":
		if err := os.Symlink(str(before["link_target"]), c.Path); err != nil {
			return broke("symlink: %v", err)
		}
		if err := os.Lchown(c.Path, uid, gid); err != nil {
			return broke("chown: %v", err)
		}
		return did("symlink to %s back", str(before["link_target"]))
	case "dir":
		if err := os.Mkdir(c.Path, 0o700); err != nil {
			return broke("mkdir: %v", err)
		}
		if err := os.Chown(c.Path, uid, gid); err != nil {
			return broke("chown: %v", err)
		}
		if err := syscall.Chmod(c.Path, uint32(mode)); err != nil {
			return broke("chmod: %v", err)
		}
		return did("empty folder back")
	case "file":
		text, ok := before["content_base64"].(string)
		content, err := base64.StdEncoding.DecodeString(text)
		if !ok || err != nil || digestOf(content) != str(before["sha256"]) {
			return outcome{irreversible, "deleted for good: the record does not hold its content (larger than 256 KiB)"}
		}
		want := kit.FileState{Exists: true, Content: content, Mode: uint32(mode), UID: uid, GID: gid}
		if _, err := kit.WriteFileState(c.Path, want, false); err != nil {
			return broke("%v", err)
		}
		return did("written back (%d bytes, mode %s)", len(content), str(before["mode"]))
	}
	return outcome{irreversible, "a " + str(before["type"]) + " cannot be made again"}
}

// undoMove renames a file moved aside back to its name, never over another file.
func undoMove(c change) outcome {
	hidden := str(c.After)
	var st syscall.Stat_t
	here := syscall.Lstat(c.Path, &st) == nil
	aside := syscall.Lstat(hidden, &st) == nil
	switch {
	case here && !aside:
		return was("it is back at its name")
	case here && aside:
		return since("a new file is at its name; the old one is still at %s", hidden)
	case !aside:
		return since("%s is gone since the run", hidden)
	}
	if err := os.Link(hidden, c.Path); err == nil {
		if err := os.Remove(hidden); err != nil {
			return broke("remove %s: %v", hidden, err)
		}
	} else if err := os.Rename(hidden, c.Path); err != nil { // a folder, or hard links not allowed
		return broke("rename: %v", err)
	}
	return did("moved back from %s", hidden)
}

// masked is an account field as a change record shows it: a password hash as <hash>
// behind its lock marks (lock_user keeps the hash off the audit log).
func masked(field, value string) string {
	if field != "password" {
		return value
	}
	locks := value[:len(value)-len(strings.TrimLeft(value, "!"))]
	switch rest := value[len(locks):]; rest {
	case "", "*", "x":
		return value
	}
	return locks + "<hash>"
}

func undoAccount(c change) outcome {
	user, field, index := str(c.Detail["user"]), str(c.Detail["field"]), int(num(c.Detail["index"]))
	before, after := str(c.Before), str(c.After)
	data, err := os.ReadFile(c.Path)
	if err != nil {
		return since("%v", err)
	}
	lines := strings.Split(string(data), "\n")
	for i, line := range lines {
		fields := strings.Split(line, ":")
		if fields[0] != user || len(fields) <= index {
			continue
		}
		cur := fields[index]
		switch masked(field, cur) {
		case before:
			return was("%s of %s is as before", field, user)
		case after:
		default:
			return since("%s of %s changed since the run", field, user)
		}
		if field == "password" {
			fields[index] = cur[strings.Count(after, "!")-strings.Count(before, "!"):]
		} else {
			fields[index] = before
		}
		lines[i] = strings.Join(fields, ":")
		if err := kit.WriteFileAtomic(c.Path, []byte(strings.Join(lines, "\n")), 0o640); err != nil {
			return broke("%v", err)
		}
		return did("%s of %s back to %q", field, user, before)
	}
	return since("%s has no line for %s", c.Path, user)
}

// removeLeftovers removes the run's binaries a monitor killed mid-deploy left behind: each
// spec is SHA256:SIZE:PATH, from a deploy record whose cleanup never came. The file there
// goes when it is that binary, or a part of one (an upload cut short: a regular file no
// longer than the binary, at the random name the log recorded before the upload).
func removeLeftovers(specs []string, r *kit.Report) []string {
	removed := []string{}
	for _, spec := range specs {
		parts := strings.SplitN(spec, ":", 3)
		if len(parts) != 3 {
			continue
		}
		want, path := parts[0], parts[2]
		size, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil {
			continue
		}
		st, err := os.Lstat(path)
		if err != nil {
			continue // gone: the exec wrapper unlinked it
		}
		if !st.Mode().IsRegular() || st.Size() > size {
			r.Warnf("%s: not a binary of the run (%s, %d bytes): left as it is", path, st.Mode().Type(), st.Size())
			continue
		}
		if st.Size() == size {
			if content, err := os.ReadFile(path); err != nil || digestOf(content) != want {
				r.Warnf("%s: not the binary the run deployed there: left as it is", path)
				continue
			}
		}
		if err := os.Remove(path); err != nil {
			r.Warnf("remove %s: %v", path, err)
			continue
		}
		r.Logf("removed %s: a binary of the run its monitor never saw removed", path)
		removed = append(removed, path)
	}
	return removed
}
