// Command stop_service stops, disables or masks a systemd service.
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

// actionArgv is the systemctl command for action. disable and mask carry
// --now so the unit also stops at once instead of at the next boot.
func actionArgv(systemctl, action, service string) []string {
	if action == "stop" {
		return []string{systemctl, "stop", service}
	}
	return []string{systemctl, action, "--now", service}
}

// undoArgvs are the commands that bring the unit back to its state before
// action, judged from what is-active and is-enabled said then.
func undoArgvs(systemctl, action, service, wasActive, wasEnabled string) [][]string {
	var undo [][]string
	if action == "mask" {
		undo = append(undo, []string{systemctl, "unmask", service})
	}
	if action != "stop" && wasEnabled == "enabled" {
		undo = append(undo, []string{systemctl, "enable", service})
	}
	if wasActive == "active" || wasActive == "activating" || wasActive == "reloading" {
		undo = append(undo, []string{systemctl, "start", service})
	}
	return undo
}

// unitState asks systemctl is-active or is-enabled. Those exit non-zero for
// states such as "inactive" or "disabled", so the answer is what they print;
// "unknown" with systemctl's message when they print nothing.
func unitState(ctx context.Context, systemctl, query, service string) (state, reason string) {
	stdout, stderr, _ := runArgv(ctx, []string{systemctl, query, service}, "")
	if line, _, _ := strings.Cut(strings.TrimSpace(stdout), "\n"); line != "" {
		return line, ""
	}
	return "unknown", firstLine(stderr)
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	service, action := p.String("service"), p.String("action")
	if !unitName.MatchString(service) {
		return fmt.Errorf("service %q is not a unit name", service)
	}
	systemctl, err := lookTool("systemctl", p.String("systemctl_path"))
	if err != nil {
		return err
	}
	wasActive, why := unitState(ctx, systemctl, "is-active", service)
	if why != "" {
		r.Warnf("is-active %s before: %s", service, why)
	}
	wasEnabled, _ := unitState(ctx, systemctl, "is-enabled", service)

	argv := actionArgv(systemctl, action, service)
	if _, stderr, err := runArgv(ctx, argv, ""); err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(argv[1:], " "), err, oneLine(stderr))
	}
	active, _ := unitState(ctx, systemctl, "is-active", service)
	enabled, _ := unitState(ctx, systemctl, "is-enabled", service)
	r.Logf("systemctl %s: %s/%s -> %s/%s", strings.Join(argv[1:], " "), wasActive, wasEnabled, active, enabled)

	r.Set("service", service)
	r.Set("before_active", wasActive)
	r.Set("before_enabled", wasEnabled)
	r.Set("active", active)
	r.Set("enabled", enabled)
	r.Changed(kit.Change{
		Action: "systemctl_" + action,
		Path:   service,
		Before: map[string]any{"active": wasActive, "enabled": wasEnabled},
		After:  map[string]any{"active": active, "enabled": enabled},
		Detail: map[string]any{
			"argv": argv,
			"undo": undoArgvs(systemctl, action, service, wasActive, wasEnabled),
		},
	})
	return nil
}

// oneLine joins a tool's message lines with "; " so an error stays one line.
func oneLine(s string) string {
	return strings.Join(strings.FieldsFunc(strings.TrimSpace(s), func(r rune) bool { return r == '\n' }), "; ")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
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
	kit.Main(kit.Module{Name: "stop_service", Kind: kit.Chaos, Declaration: declaration, Run: run})
}
