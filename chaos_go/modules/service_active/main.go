// Command service_active asks systemd whether a service is running and enabled.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// unitName repeats the declaration's pattern: a name that could pass for an
// option (a leading "-") must never reach systemctl's argv.
var unitName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9@._:\\-]*$`)

// query runs `systemctl VERB service`. is-active and is-enabled exit non-zero
// for "inactive" or "disabled", so the answer is the first line printed;
// "unknown" and systemctl's message when nothing is printed.
func query(ctx context.Context, systemctl, verb, service string) (state, reason string) {
	stdout, stderr, err := runArgv(ctx, []string{systemctl, verb, service}, "")
	if line := firstLine(stdout); line != "" {
		return line, ""
	}
	reason = oneLine(stderr)
	if reason == "" && err != nil {
		reason = fmt.Sprintf("systemctl %s %s: %v", verb, service, err)
	}
	return "unknown", reason
}

// oneLine joins a tool's message lines with "; ".
func oneLine(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(line)
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	service := p.String("service")
	if !unitName.MatchString(service) {
		return fmt.Errorf("service %q is not a unit name", service)
	}
	state, enabled, reason := "unknown", "unknown", ""
	if systemctl, err := lookTool("systemctl", p.String("systemctl_path")); err != nil {
		reason = err.Error()
	} else {
		state, reason = query(ctx, systemctl, "is-active", service)
		enabled, _ = query(ctx, systemctl, "is-enabled", service)
	}
	r.Set("active", state == "active")
	r.Set("state", state)
	r.Set("enabled", enabled)
	r.Set("reason", reason)
	return nil
}

// runArgv runs argv (argv[0] a path, as lookTool returns it) in the C locale
// with stdin as its input and returns what it printed; a non-zero exit is an
// error such as "exit status 1", and ctx ending kills it. os.StartProcess,
// not os/exec, which would add about 0.15 MB to the binary.
func runArgv(ctx context.Context, argv []string, stdin string) (stdout, stderr string, err error) {
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

// feed is the goroutine writing a child's stdin.
func feed(w *os.File, s string) {
	w.WriteString(s)
	w.Close()
}

// drain is the goroutine reading one of a child's output pipes to its end.
func drain(r *os.File, out chan<- string) {
	b, _ := io.ReadAll(r)
	r.Close()
	out <- string(b)
}

// lookTool finds the executable name, labelled label in errors: a path as
// given, else in PATH's absolute directories and then the sbin and bin
// directories, which a non-login SSH session's PATH may leave out.
func lookTool(label, name string) (string, error) {
	if strings.Contains(name, "/") {
		if isExecutable(name) {
			return name, nil
		}
		return "", fmt.Errorf("%s not found: %s is not an executable file", label, name)
	}
	dirs := append(filepath.SplitList(os.Getenv("PATH")), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
	for _, dir := range dirs {
		if candidate := filepath.Join(dir, name); filepath.IsAbs(dir) && isExecutable(candidate) {
			return candidate, nil
		}
	}
	return "", fmt.Errorf("%s not found: no executable %q in PATH or the sbin and bin directories", label, name)
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

func main() {
	kit.Main(kit.Module{Name: "service_active", Kind: kit.Probe, Declaration: declaration, Run: run})
}
