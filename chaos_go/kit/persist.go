package kit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxBeforeContent bounds the content from before an edit that a change record carries
// (corrupt_config keeps the same limit).
const maxBeforeContent = 64 << 10

// LineEdit is an edit that only adds whole lines to a text file -- a boot configuration
// such as /etc/nftables.conf or a file in /etc/sysctl.d -- planned first (the file read,
// nothing written), then applied, and undone exactly: by its Change record's `undo`
// commands, or by Revert from the same process.
type LineEdit struct {
	Path    string   // the file written (a symlink resolved to its target)
	Link    string   // the path asked for, when it was a symlink; else ""
	Lines   []string // the lines added
	Existed bool
	Before  []byte // content before (nil for a new file)
	After   []byte
	First   int      // line number (1-based) of the first line added
	Append  bool     // added at the end (else inserted before line First)
	Dirs    []string // parent directories that are missing, outermost first
	perm    os.FileMode
}

// PlanLines plans adding lines to the text file at path: inserted before the line of
// 0-based index at, or appended when at < 0 or at is past the last line. A missing file
// (and its missing parents) will be created with mode perm; an existing one keeps its mode
// and owner. Nothing is written.
func PlanLines(path string, at int, lines []string, perm os.FileMode) (*LineEdit, error) {
	if len(lines) == 0 {
		return nil, errors.New("plan lines: no lines to add")
	}
	e := &LineEdit{Path: path, Lines: append([]string{}, lines...), perm: perm}
	if target, err := filepath.EvalSymlinks(path); err == nil {
		if target != path {
			e.Path, e.Link = target, path
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("resolve %s: %w", path, err)
	}
	before, err := os.ReadFile(e.Path)
	switch {
	case err == nil:
		e.Existed, e.Before = true, before
	case errors.Is(err, fs.ErrNotExist):
		for dir := filepath.Dir(e.Path); ; dir = filepath.Dir(dir) {
			if _, err := os.Lstat(dir); err == nil || dir == filepath.Dir(dir) {
				break
			}
			e.Dirs = append([]string{dir}, e.Dirs...)
		}
	default:
		return nil, fmt.Errorf("read %s: %w", e.Path, err)
	}
	text := string(e.Before)
	var old []string
	if text != "" {
		old = strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	}
	added := strings.Join(lines, "\n") + "\n"
	if at < 0 || at >= len(old) {
		e.Append, e.First = true, len(old)+1
		if text != "" && !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		e.After = []byte(text + added)
		return e, nil
	}
	e.First = at + 1
	head := strings.Join(old[:at], "\n")
	if at > 0 {
		head += "\n"
	}
	e.After = []byte(head + added + text[len(head):])
	return e, nil
}

// Apply writes the planned content (kit.WriteFileAtomic), creating the missing parent
// directories (mode 0755) first.
func (e *LineEdit) Apply() error {
	for _, dir := range e.Dirs {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create %s: %w", dir, err)
		}
	}
	return WriteFileAtomic(e.Path, e.After, e.perm)
}

// Revert puts back what Apply changed: the content from before, or no file and none of
// the directories Apply created.
func (e *LineEdit) Revert() error {
	if e.Existed {
		return WriteFileAtomic(e.Path, e.Before, e.perm)
	}
	if err := os.Remove(e.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for i := len(e.Dirs) - 1; i >= 0; i-- {
		if err := os.Remove(e.Dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// UndoArgv are the commands that undo the applied edit on the target, exactly as long as
// nobody edited the file since: `rm -f FILE` then `rmdir` of each directory created, for
// a new file; `truncate -s SIZE FILE` (the size from before) for lines appended;
// `sed -i FIRST,LASTd FILE` for lines inserted.
func (e *LineEdit) UndoArgv() [][]string {
	if !e.Existed {
		undo := [][]string{{"rm", "-f", e.Path}}
		for i := len(e.Dirs) - 1; i >= 0; i-- {
			undo = append(undo, []string{"rmdir", e.Dirs[i]})
		}
		return undo
	}
	if e.Append {
		return [][]string{{"truncate", "-s", strconv.Itoa(len(e.Before)), e.Path}}
	}
	last := e.First + len(e.Lines) - 1
	return [][]string{{"sed", "-i", fmt.Sprintf("%d,%dd", e.First, last), e.Path}}
}

// Change is the record of the applied edit: `create_file` (After the new content,
// Detail.created_dirs the directories made) or `edit_file` (Before the content from
// before when at most 64 KiB, Detail.edit `append` or `insert`); both with
// Detail.lines_added, Detail.line_numbers and Detail.undo (UndoArgv).
func (e *LineEdit) Change() Change {
	numbers := make([]int, len(e.Lines))
	for i := range numbers {
		numbers[i] = e.First + i
	}
	detail := map[string]any{
		"lines_added":  append([]string{}, e.Lines...),
		"line_numbers": numbers,
		"undo":         e.UndoArgv(),
	}
	if e.Link != "" {
		detail["link"] = e.Link
	}
	if !e.Existed {
		detail["created_dirs"] = append([]string{}, e.Dirs...)
		return Change{Action: "create_file", Path: e.Path, After: string(e.After), Detail: detail}
	}
	detail["edit"] = "insert"
	if e.Append {
		detail["edit"] = "append"
	}
	c := Change{Action: "edit_file", Path: e.Path, Detail: detail}
	if len(e.Before) <= maxBeforeContent {
		c.Before = string(e.Before)
	} else {
		detail["before_omitted"] = "larger than 64 KiB"
	}
	return c
}
