// Package shell runs a shell command line the way the command probe and the run_command
// chaos module both need: /bin/sh -c, stdin empty, in its own process group (killed at
// the timeout, and whatever it left in the group when it returns), output capped.
package shell

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// waitDelay bounds how long output pipes are drained after the shell exits,
// should something it started in the background still hold them.
const waitDelay = 500 * time.Millisecond

// capped keeps the first max bytes written to it and counts the rest.
type capped struct {
	mu    sync.Mutex
	max   int
	buf   []byte
	total int
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total += len(p)
	if room := c.max - len(c.buf); room > 0 {
		c.buf = append(c.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// String is the kept bytes, cut back to a whole UTF-8 sequence when the cap
// fell inside one.
func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.buf
	if c.total > len(b) {
		for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
			if utf8.RuneStart(b[i]) {
				if !utf8.FullRune(b[i:]) {
					b = b[:i]
				}
				break
			}
		}
	}
	return string(b)
}

func (c *capped) Truncated() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total > len(c.buf)
}

// Result is how a command ended and what it wrote.
type Result struct {
	ExitStatus int    // -1 when a signal ended it
	Signal     string // the signal's name ("killed"), or ""
	Stdout     string // at most MaxOutput bytes
	Stderr     string
	TimedOut   bool // killed at the timeout
	Truncated  bool // stdout or stderr was longer than MaxOutput
	Duration   time.Duration
}

// Run runs shellPath -c command (shellPath "" is /bin/sh) for at most timeout, keeping
// maxOut bytes of stdout and of stderr each. The error is for a shell that could not be
// started or waited for; a command that fails, or is killed because ctx ended, is a Result.
func Run(ctx context.Context, shellPath, command string, timeout time.Duration, maxOut int) (Result, error) {
	if shellPath == "" {
		shellPath = "/bin/sh"
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return Result{}, err
	}
	defer devnull.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return Result{}, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return Result{}, err
	}
	start := time.Now()
	// Its own process group, so the timeout and the cleanup reach every
	// process the shell started, not only the shell. os.StartProcess, not
	// os/exec, which would add about 0.15 MB to the binary.
	proc, err := os.StartProcess(shellPath, []string{shellPath, "-c", command}, &os.ProcAttr{
		Env:   os.Environ(),
		Files: []*os.File{devnull, outW, errW},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return Result{}, fmt.Errorf("start %s: %w", shellPath, err)
	}
	stdout, stderr := &capped{max: maxOut}, &capped{max: maxOut}
	var copies sync.WaitGroup
	copies.Add(2)
	go collect(outR, stdout, &copies)
	go collect(errR, stderr, &copies)
	stop := context.AfterFunc(tctx, func() { syscall.Kill(-proc.Pid, syscall.SIGKILL) })
	state, err := proc.Wait()
	took := time.Since(start)
	stop()
	syscall.Kill(-proc.Pid, syscall.SIGKILL) // whatever it left behind in its group
	// Something that left the group may still hold the pipes: stop reading soon.
	outR.SetReadDeadline(time.Now().Add(waitDelay))
	errR.SetReadDeadline(time.Now().Add(waitDelay))
	copies.Wait()
	if err != nil {
		return Result{}, fmt.Errorf("wait for %s: %w", shellPath, err)
	}
	res := Result{
		ExitStatus: state.ExitCode(),
		Stdout:     stdout.String(),
		Stderr:     stderr.String(),
		TimedOut:   errors.Is(tctx.Err(), context.DeadlineExceeded) && !state.Exited(),
		Truncated:  stdout.Truncated() || stderr.Truncated(),
		Duration:   took,
	}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		res.Signal = ws.Signal().String()
	}
	return res, nil
}

// collect is the goroutine copying one of the shell's output pipes into c.
func collect(r *os.File, c *capped, wg *sync.WaitGroup) {
	defer wg.Done()
	io.Copy(c, r)
	r.Close()
}
