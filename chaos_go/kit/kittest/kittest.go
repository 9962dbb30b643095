// Package kittest is a fake monitor for tests of the kit and of module binaries: it listens
// on 127.0.0.1, speaks the callback protocol (docs/protocol.md) and records what a binary sent.
package kittest

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"chaosrun/chaos_go/kit/internal/wire"
)

// AckMode says how the fake monitor answers a result.
type AckMode int

const (
	AckNormal   AckMode = iota // a valid {"t":"ack"}
	AckNone                    // no answer at all
	AckTampered                // an ack frame with one ciphertext byte flipped
)

// Monitor is a fake monitor listening on 127.0.0.1 for one step.
type Monitor struct {
	Addr     string
	Token    string
	Key      *ecdh.PrivateKey // the step's X25519 key; its public half is the config's monitor_key
	Compress bool
	Ack      AckMode

	ln net.Listener
}

// Run and step ids of the configs a Monitor makes.
const (
	RunID  = "run-test"
	StepID = "step-test"
)

// Outcome is what one connection delivered.
type Outcome struct {
	Hello   map[string]any
	Logs    []map[string]any
	Changes []map[string]any // the change messages, "t" included, as they came
	Result  map[string]any   // the whole result message, "t" included
	Err     error            // why the monitor dropped the connection, if it did
}

// NewMonitor listens on 127.0.0.1:0 with a fresh token and key; the listener closes with t.
func NewMonitor(t testing.TB) *Monitor {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		t.Fatalf("read token: %v", err)
	}
	return &Monitor{Addr: ln.Addr().String(), Token: base64.RawURLEncoding.EncodeToString(tok), Key: key, ln: ln}
}

// Config returns the step config line (JSON + "\n") for module with params.
func (m *Monitor) Config(module string, params map[string]any, timeout time.Duration) []byte {
	if params == nil {
		params = map[string]any{}
	}
	line, err := json.Marshal(map[string]any{
		"v": 2, "monitor": m.Addr, "monitor_key": base64.StdEncoding.EncodeToString(m.Key.PublicKey().Bytes()),
		"token": m.Token, "run": RunID, "step": StepID, "module": module, "params": params,
		"timeout_ms": timeout.Milliseconds(), "compress": m.Compress,
	})
	if err != nil {
		panic(err)
	}
	return append(line, '\n')
}

// ConfigDigest is the config_sha256 a binary reports for the config line: hex SHA-256 of
// its bytes without the terminating newline.
func ConfigDigest(line []byte) string {
	sum := sha256.Sum256(bytes.TrimSuffix(line, []byte("\n")))
	return hex.EncodeToString(sum[:])
}

// Serve accepts one connection within timeout and reads it to its result (then acks as
// m.Ack says), or until it breaks the protocol.
func (m *Monitor) Serve(timeout time.Duration) Outcome {
	_ = m.ln.(*net.TCPListener).SetDeadline(time.Now().Add(timeout))
	return m.serve(timeout)
}

func (m *Monitor) serve(timeout time.Duration) Outcome {
	var out Outcome
	nc, err := m.ln.Accept()
	if err != nil {
		out.Err = fmt.Errorf("accept: %w", err)
		return out
	}
	defer nc.Close()
	conn, err := wire.Server(nc, m.Key, m.Compress, timeout)
	if err != nil {
		out.Err = err
		return out
	}
	deadline := time.Now().Add(timeout)
	if out.Hello, err = conn.Recv(deadline); err != nil {
		out.Err = fmt.Errorf("hello: %w", err)
		return out
	}
	proof, _ := out.Hello["proof"].(string)
	want := wire.Proof(m.Token, conn.Transcript(RunID, StepID))
	if out.Hello["t"] != "hello" || !hmac.Equal([]byte(proof), []byte(want)) {
		out.Err = errors.New("hello: bad message or proof")
		return out
	}
	for {
		msg, err := conn.Recv(deadline)
		if err != nil {
			out.Err = err
			return out
		}
		switch msg["t"] {
		case "log":
			out.Logs = append(out.Logs, msg)
		case "change":
			out.Changes = append(out.Changes, msg)
		case "result":
			out.Result = msg
			out.Err = m.ack(conn)
			return out
		default:
			out.Err = fmt.Errorf("unexpected message %q", msg["t"])
			return out
		}
	}
}

func (m *Monitor) ack(conn *wire.Conn) error {
	switch m.Ack {
	case AckNone:
		time.Sleep(100 * time.Millisecond)
		return nil
	case AckTampered:
		pt, err := wire.EncodeBody(map[string]any{"t": "ack"}, m.Compress)
		if err != nil {
			return err
		}
		frame, err := conn.SealNext(pt)
		if err != nil {
			return err
		}
		frame[len(frame)-1] ^= 0x01
		if err := conn.WriteFrame(frame); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
		return nil
	}
	return conn.Send(map[string]any{"t": "ack"})
}

// LogMessages returns the "msg" of each log.
func (o Outcome) LogMessages() []string {
	out := make([]string, len(o.Logs))
	for i, l := range o.Logs {
		out[i], _ = l["msg"].(string)
	}
	return out
}

// ResultFields returns the result message's "result" object.
func (o Outcome) ResultFields() map[string]any {
	r, _ := o.Result["result"].(map[string]any)
	return r
}

// GoTool returns the go command that runs these tests: $GO, then GOROOT/bin/go, then PATH.
func GoTool(t testing.TB) string {
	t.Helper()
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	if root := runtime.GOROOT(); root != "" {
		if g := filepath.Join(root, "bin", "go"); fileExists(g) {
			return g
		}
	}
	g, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go tool to build with: %v", err)
	}
	return g
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Build builds the main package at pkg (an import path or a directory) the way the monitor
// does (CGO_ENABLED=0, -trimpath, -ldflags "-s -w") into t.TempDir() and returns its path.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "bin")
	cmd := exec.Command(GoTool(t), "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOPROXY=off", "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// Run is one run of a module binary against a fake monitor.
type Run struct {
	Exit    int
	Stderr  string
	Outcome Outcome
}

// RunBinary runs the module binary bin (as the monitor would: no arguments, an empty
// environment, the config on stdin) against m, and returns what happened.
func (m *Monitor) RunBinary(t testing.TB, bin, module string, params map[string]any, timeout time.Duration) Run {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{}
	cmd.Stdin = strings.NewReader(string(m.Config(module, params, timeout)))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	_ = m.ln.(*net.TCPListener).SetDeadline(time.Now().Add(timeout + 10*time.Second))
	outc := make(chan Outcome, 1)
	go serveOne(m, timeout+10*time.Second, outc)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	err := cmd.Wait()
	// The binary is gone: a connection it made is already queued, so stop waiting for one soon.
	_ = m.ln.(*net.TCPListener).SetDeadline(time.Now().Add(500 * time.Millisecond))
	r := Run{Stderr: stderr.String(), Outcome: <-outc}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.Exit = ee.ExitCode()
	case err != nil:
		t.Fatalf("wait %s: %v", bin, err)
	}
	return r
}

// serveOne is the goroutine that serves one connection for RunBinary.
func serveOne(m *Monitor, timeout time.Duration, out chan<- Outcome) {
	out <- m.serve(timeout)
}
