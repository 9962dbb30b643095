// Package sysexec finds a system tool (systemctl, nft, tc, ...), runs it and tidies what it
// printed (FirstLine, OneLine), for modules that drive one. It uses os.StartProcess, not os/exec, which would add about 0.15 MB to
// every binary that imports it (docs/module-authoring.md, "Binary size").
package sysexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// toolDirs are searched after PATH: a non-login SSH session's PATH may leave the sbin
// directories out.
var toolDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// LookTool finds the executable name, labelled label in errors: a name holding a "/" is
// a path taken as given; otherwise it is looked for in PATH's absolute directories and
// then in the sbin and bin directories. The errors start "LABEL not found: ".
// Every tool found is remembered (Resolved): the kit hashes it into the step's tamper
// sensors (docs/protocol.md, "sensors"), so a fake tool on one target shows.
func LookTool(label, name string) (string, error) {
	path, err := lookTool(label, name)
	if err == nil {
		remember(label, path)
	}
	return path, err
}

func lookTool(label, name string) (string, error) {
	if strings.Contains(name, "/") {
		if isExecutable(name) {
			return name, nil
		}
		return "", fmt.Errorf("%s not found: %s is not an executable file", label, name)
	}
	dirs := append(filepath.SplitList(os.Getenv("PATH")), toolDirs...)
	for _, dir := range dirs {
		if candidate := filepath.Join(dir, name); filepath.IsAbs(dir) && isExecutable(candidate) {
			return candidate, nil
		}
	}
	return "", fmt.Errorf("%s not found: no executable %q in PATH or the sbin and bin directories", label, name)
}

// Tool is one tool LookTool found: its label and the path it resolved to.
type Tool struct {
	Label string
	Path  string
}

// maxResolved bounds the registry; a module looks up a handful of tools.
const maxResolved = 32

var resolved struct {
	sync.Mutex
	tools []Tool
}

func remember(label, path string) {
	resolved.Lock()
	defer resolved.Unlock()
	for _, t := range resolved.tools {
		if t.Label == label && t.Path == path {
			return
		}
	}
	if len(resolved.tools) < maxResolved {
		resolved.tools = append(resolved.tools, Tool{Label: label, Path: path})
	}
}

// Resolved returns the tools LookTool found so far in this process, in the order found.
func Resolved() []Tool {
	resolved.Lock()
	defer resolved.Unlock()
	return append([]Tool{}, resolved.tools...)
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// Run runs argv (argv[0] a path, as LookTool returns it) with stdin as its input and
// returns what it printed. The tool gets this process's environment plus LC_ALL=C,
// SYSTEMD_PAGER= and SYSTEMD_COLORS=0, so its messages are plain English text. A non-zero
// exit is an error such as "exit status 1"; ctx ending kills the tool, and the error
// then wraps ctx.Err().
func Run(ctx context.Context, argv []string, stdin string) (stdout, stderr string, err error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return "", "", err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW)
		return "", "", err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW, outR, outW)
		return "", "", err
	}
	env := append(os.Environ(), "LC_ALL=C", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0")
	proc, err := os.StartProcess(argv[0], argv, &os.ProcAttr{Env: env, Files: []*os.File{inR, outW, errW}})
	closeAll(inR, outW, errW)
	if err != nil {
		closeAll(inW, outR, errR)
		return "", "", err
	}
	go feed(inW, stdin) // an empty stdin is at its end at once
	outc, errc := make(chan string, 1), make(chan string, 1)
	go drain(outR, outc)
	go drain(errR, errc)
	stop := context.AfterFunc(ctx, func() { proc.Kill() })
	state, err := proc.Wait()
	stop()
	stdout, stderr = <-outc, <-errc
	if err == nil && !state.Success() {
		err = errors.New(state.String())
	}
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return stdout, stderr, err
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// feed is the goroutine writing a tool's stdin.
func feed(w *os.File, s string) {
	w.WriteString(s)
	w.Close()
}

// drain is the goroutine reading one of a tool's output pipes to its end.
func drain(r *os.File, out chan<- string) {
	b, _ := io.ReadAll(r)
	r.Close()
	out <- string(b)
}
