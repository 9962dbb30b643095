// Command command runs a shell command and reports its exit status and output.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

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

func (c *capped) truncated() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total > len(c.buf)
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	timeout := time.Duration(p.Int("timeout_ms")) * time.Millisecond
	maxOut := int(p.Int("max_output"))
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return err
	}
	start := time.Now()
	// Its own process group, so the timeout and the cleanup reach every
	// process the shell started, not only the shell. os.StartProcess, not
	// os/exec, which would add about 0.15 MB to the binary.
	proc, err := os.StartProcess("/bin/sh", []string{"/bin/sh", "-c", p.String("command")}, &os.ProcAttr{
		Env:   os.Environ(),
		Files: []*os.File{devnull, outW, errW},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return fmt.Errorf("start /bin/sh: %w", err)
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
		return fmt.Errorf("wait for /bin/sh: %w", err)
	}
	signal := ""
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		signal = ws.Signal().String()
	}
	r.Set("exit_status", state.ExitCode())
	r.Set("stdout", stdout.String())
	r.Set("stderr", stderr.String())
	r.Set("timed_out", errors.Is(tctx.Err(), context.DeadlineExceeded) && !state.Exited())
	r.Set("truncated", stdout.truncated() || stderr.truncated())
	r.Set("signal", signal)
	r.Set("duration_ms", float64(took.Microseconds())/1000)
	return ctx.Err()
}

// collect is the goroutine copying one of the shell's output pipes into c.
func collect(r *os.File, c *capped, wg *sync.WaitGroup) {
	defer wg.Done()
	io.Copy(c, r)
	r.Close()
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
