// Command netem adds latency, jitter and packet loss to an interface with tc's netem qdisc.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// shaping is the netem settings of one step.
type shaping struct {
	DelayMs, JitterMs int64
	LossPercent       float64
}

// netemArgv is the tc command that installs s on dev, replacing whatever root
// qdisc is there.
func netemArgv(tc, dev string, s shaping) ([]string, error) {
	if s.DelayMs == 0 && s.LossPercent == 0 {
		return nil, errors.New("nothing to do: set delay_ms or loss_percent")
	}
	if s.JitterMs > 0 && s.DelayMs == 0 {
		return nil, errors.New("jitter_ms needs delay_ms")
	}
	argv := []string{tc, "qdisc", "replace", "dev", dev, "root", "netem"}
	if s.DelayMs > 0 {
		argv = append(argv, "delay", fmt.Sprintf("%dms", s.DelayMs))
		if s.JitterMs > 0 {
			argv = append(argv, fmt.Sprintf("%dms", s.JitterMs))
		}
	}
	if s.LossPercent > 0 {
		argv = append(argv, "loss", strconv.FormatFloat(s.LossPercent, 'f', -1, 64)+"%")
	}
	return argv, nil
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	dev := p.String("interface")
	s := shaping{DelayMs: p.Int("delay_ms"), JitterMs: p.Int("jitter_ms"), LossPercent: p.Float("loss_percent")}
	tc, err := lookTool("tc", p.String("tc_path"))
	if err != nil {
		return err
	}
	argv, err := netemArgv(tc, dev, s)
	if err != nil {
		return err
	}
	before, _, _ := runArgv(ctx, []string{tc, "qdisc", "show", "dev", dev, "root"}, "")
	command := "tc " + strings.Join(argv[1:], " ")
	if _, stderr, err := runArgv(ctx, argv, ""); err != nil {
		msg := strings.TrimSpace(stderr)
		if strings.Contains(msg, "kind is unknown") {
			msg += " (this kernel has no netem queueing discipline: sch_netem is missing)"
		}
		return fmt.Errorf("%s: %w: %s", command, err, msg)
	}
	after, _, _ := runArgv(ctx, []string{tc, "qdisc", "show", "dev", dev, "root"}, "")
	r.Logf("%s", command)
	r.Set("command", command)
	r.Set("qdisc", strings.TrimSpace(after))
	r.Changed(kit.Change{
		Action: "tc_qdisc_replace",
		Path:   dev,
		Before: strings.TrimSpace(before),
		After:  strings.TrimSpace(after),
		Detail: map[string]any{"argv": argv, "undo": [][]string{{"tc", "qdisc", "del", "dev", dev, "root"}}},
	})
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
	kit.Main(kit.Module{Name: "netem", Kind: kit.Chaos, Declaration: declaration, Run: run})
}
