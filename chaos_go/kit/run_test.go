package kit

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"chaosrun/chaos_go/kit/internal/jsonx"
	"chaosrun/chaos_go/kit/internal/wire"
	"chaosrun/chaos_go/kit/kittest"
)

func testOptions() options {
	return options{dial: time.Second, hello: time.Second, write: time.Second, ack: 300 * time.Millisecond, grace: 100 * time.Millisecond,
		exe: "/proc/self/exe"}
}

func testModule(run RunFunc) Module {
	return Module{Declaration: testDeclaration, Run: run}
}

// runAgainst runs module m with config line cfg against mon and returns the exit code,
// stderr and what the monitor received.
func runAgainst(t *testing.T, mon *kittest.Monitor, m Module, cfg []byte) (int, string, kittest.Outcome) {
	t.Helper()
	outc := make(chan kittest.Outcome, 1)
	go func() { outc <- mon.Serve(5 * time.Second) }()
	var stderr bytes.Buffer
	code := run(m, bytes.NewReader(cfg), &stderr, testOptions())
	return code, stderr.String(), <-outc
}

var okParams = map[string]any{"path": "/x", "size_mb": 2}

func TestRunStreamsLogsInOrderThenResultAndGetsAck(t *testing.T) {
	for _, compress := range []bool{false, true} {
		mon := kittest.NewMonitor(t)
		mon.Compress = compress
		m := testModule(func(ctx context.Context, p Params, r *Report) error {
			for i := 0; i < 200; i++ {
				r.Logf("line %d of %s", i, p.String("path"))
			}
			r.Warnf("careful")
			r.Set("written_mb", p.Int("size_mb"))
			r.Changed(Change{Action: "create_file", Path: p.String("path"), After: 2})
			return nil
		})
		code, stderr, out := runAgainst(t, mon, m, mon.Config("t", okParams, 5*time.Second))
		if code != ExitOK || out.Err != nil {
			t.Fatalf("compress=%v: got exit %d, monitor error %v, stderr %q; want 0, nil", compress, code, out.Err, stderr)
		}
		if out.Hello["run"] != "run-test" || out.Hello["step"] != "step-test" {
			t.Errorf("hello: got %v; want run and step ids", out.Hello)
		}
		if len(out.Changes) != 1 || out.Changes[0]["change"].(map[string]any)["action"] != "create_file" {
			t.Errorf("compress=%v: change messages %v; want the create_file streamed", compress, out.Changes)
		}
		msgs := out.LogMessages()
		if len(msgs) != 201 {
			t.Fatalf("got %d logs; want 201", len(msgs))
		}
		for i := 0; i < 200; i++ {
			if want := fmt.Sprintf("line %d of /x", i); msgs[i] != want {
				t.Fatalf("log %d: got %q; want %q", i, msgs[i], want)
			}
		}
		if got := out.Logs[200]["level"]; got != "warn" {
			t.Errorf("level: got %q; want %q", got, "warn")
		}
		if _, ok := out.Logs[0]["ts"]; !ok {
			t.Errorf("log without ts: %v", out.Logs[0])
		}
		if out.Result["ok"] != true || out.Result["error"] != nil || out.Result["step"] != "step-test" {
			t.Errorf("result: got %v; want ok, no error, step-test", out.Result)
		}
		if got := fmt.Sprint(out.ResultFields()["written_mb"]); got != "2" {
			t.Errorf("written_mb: got %q; want %q", got, "2")
		}
		changes, _ := out.Result["changes"].([]any)
		if len(changes) != 1 || changes[0].(map[string]any)["action"] != "create_file" {
			t.Errorf("changes: got %v; want one create_file", changes)
		}
	}
}

func TestRunModuleErrorExitsOneWithTheReason(t *testing.T) {
	mon := kittest.NewMonitor(t)
	m := testModule(func(ctx context.Context, p Params, r *Report) error {
		r.Set("partial", true)
		return fmt.Errorf("open %s: %w", p.String("path"), errors.New("permission denied"))
	})
	code, _, out := runAgainst(t, mon, m, mon.Config("t", okParams, 5*time.Second))
	if code != ExitFailed {
		t.Errorf("exit: got %d; want %d", code, ExitFailed)
	}
	if got := out.Result["error"]; got != "open /x: permission denied" {
		t.Errorf("error: got %q; want %q", got, "open /x: permission denied")
	}
	if out.Result["ok"] != false || out.ResultFields()["partial"] != true {
		t.Errorf("result: got %v; want ok=false with partial result", out.Result)
	}
}

func TestRunPanicBecomesFailedResult(t *testing.T) {
	mon := kittest.NewMonitor(t)
	m := testModule(func(ctx context.Context, p Params, r *Report) error { panic("boom") })
	code, _, out := runAgainst(t, mon, m, mon.Config("t", okParams, 5*time.Second))
	if code != ExitFailed || out.Result["error"] != "panic: boom" {
		t.Errorf("got exit %d error %q; want %d %q", code, out.Result["error"], ExitFailed, "panic: boom")
	}
}

func TestRunDeadlineExceeded(t *testing.T) {
	for _, name := range []string{"honours ctx", "ignores ctx"} {
		mon := kittest.NewMonitor(t)
		m := testModule(func(ctx context.Context, p Params, r *Report) error {
			if name == "ignores ctx" {
				time.Sleep(2 * time.Second)
				return nil
			}
			<-ctx.Done()
			return fmt.Errorf("write: %w", ctx.Err())
		})
		start := time.Now()
		code, _, out := runAgainst(t, mon, m, mon.Config("t", okParams, 200*time.Millisecond))
		if code != ExitFailed || out.Result["error"] != "deadline exceeded" {
			t.Errorf("%s: got exit %d error %q; want %d %q", name, code, out.Result["error"], ExitFailed, "deadline exceeded")
		}
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Errorf("%s: took %v; want the result soon after the deadline", name, d)
		}
	}
}

func TestRunBadParamsStillDeliversAFailedResult(t *testing.T) {
	mon := kittest.NewMonitor(t)
	ran := false
	m := testModule(func(ctx context.Context, p Params, r *Report) error { ran = true; return nil })
	code, stderr, out := runAgainst(t, mon, m, mon.Config("t", map[string]any{"path": "/x", "size_mb": 0.5}, 5*time.Second))
	if code != ExitBadConfig {
		t.Errorf("exit: got %d; want %d", code, ExitBadConfig)
	}
	if ran {
		t.Errorf("module ran with bad params")
	}
	errMsg, _ := out.Result["error"].(string)
	if out.Result["ok"] != false || !strings.Contains(errMsg, "size_mb: got 0.5; want an integer") {
		t.Errorf("result: got %v; want ok=false naming size_mb", out.Result)
	}
	if !strings.Contains(stderr, "size_mb") {
		t.Errorf("stderr: got %q; want the reason", stderr)
	}
}

func TestRunWrongModuleNameIsBadConfig(t *testing.T) {
	mon := kittest.NewMonitor(t)
	m := testModule(func(ctx context.Context, p Params, r *Report) error { return nil })
	code, _, out := runAgainst(t, mon, m, mon.Config("fill_disk", okParams, 5*time.Second))
	if code != ExitBadConfig || out.Result["ok"] != false {
		t.Errorf("got exit %d result %v; want %d and ok=false", code, out.Result, ExitBadConfig)
	}
}

func TestRunUnreadableConfigExitsTwoWithoutDialing(t *testing.T) {
	cases := []string{"", "not json\n", `{"v": 2}` + "\n", `{"v":1,"monitor":"127.0.0.1:1","token":"x","key":"c2hvcnQ="}` + "\n",
		"{" + strings.Repeat(" ", maxConfigBytes+10) + "}\n"}
	for _, cfg := range cases {
		var stderr bytes.Buffer
		code := run(testModule(nil), strings.NewReader(cfg), &stderr, testOptions())
		if code != ExitBadConfig || stderr.Len() == 0 {
			t.Errorf("config %.40q: got exit %d stderr %q; want %d and a reason", cfg, code, stderr.String(), ExitBadConfig)
		}
	}
}

func TestRunCallbackFailuresExitThree(t *testing.T) {
	m := testModule(func(ctx context.Context, p Params, r *Report) error { return nil })

	t.Run("nobody listening", func(t *testing.T) {
		mon := kittest.NewMonitor(t)
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		cfg := bytes.Replace(mon.Config("t", okParams, time.Second), []byte(mon.Addr), []byte(addr), 1)
		var stderr bytes.Buffer
		if code := run(m, bytes.NewReader(cfg), &stderr, testOptions()); code != ExitCallback {
			t.Errorf("got exit %d; want %d", code, ExitCallback)
		}
		if !strings.Contains(stderr.String(), "dial") {
			t.Errorf("stderr: got %q; want the dial error", stderr.String())
		}
	})
	t.Run("no ack", func(t *testing.T) {
		mon := kittest.NewMonitor(t)
		mon.Ack = kittest.AckNone
		code, stderr, _ := runAgainst(t, mon, m, mon.Config("t", okParams, time.Second))
		if code != ExitCallback || !strings.Contains(stderr, "ack") {
			t.Errorf("got exit %d stderr %q; want %d mentioning the ack", code, stderr, ExitCallback)
		}
	})
	t.Run("tampered ack", func(t *testing.T) {
		mon := kittest.NewMonitor(t)
		mon.Ack = kittest.AckTampered
		code, stderr, _ := runAgainst(t, mon, m, mon.Config("t", okParams, time.Second))
		if code != ExitCallback || !strings.Contains(stderr, "authenticate") {
			t.Errorf("got exit %d stderr %q; want %d with an authentication error", code, stderr, ExitCallback)
		}
	})
	t.Run("wrong token", func(t *testing.T) {
		mon := kittest.NewMonitor(t)
		cfg := bytes.Replace(mon.Config("t", okParams, time.Second), []byte(mon.Token), []byte("forged"), 1)
		code, _, out := runAgainst(t, mon, m, cfg)
		if out.Err == nil || code != ExitCallback {
			t.Errorf("got exit %d monitor error %v; want %d and a rejected hello", code, out.Err, ExitCallback)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		mon := kittest.NewMonitor(t)
		other := kittest.NewMonitor(t)
		cfg := other.Config("t", okParams, time.Second)
		cfg = bytes.Replace(cfg, []byte(other.Addr), []byte(mon.Addr), 1)
		cfg = bytes.Replace(cfg, []byte(other.Token), []byte(mon.Token), 1)
		code, _, out := runAgainst(t, mon, m, cfg)
		if out.Err == nil || !strings.Contains(out.Err.Error(), "authenticate") || code != ExitCallback {
			t.Errorf("got exit %d monitor error %v; want %d and an authentication error", code, out.Err, ExitCallback)
		}
	})
}

func TestRunUnencodableResultBecomesFailedResultKeepingChanges(t *testing.T) {
	mon := kittest.NewMonitor(t)
	m := testModule(func(ctx context.Context, p Params, r *Report) error {
		r.Set("bad", func() {})
		r.Changed(Change{Action: "chmod", Path: "/x", Before: "0644"})
		return nil
	})
	code, _, out := runAgainst(t, mon, m, mon.Config("t", okParams, time.Second))
	errMsg, _ := out.Result["error"].(string)
	if code != ExitFailed || !strings.HasPrefix(errMsg, "encode result") {
		t.Errorf("got exit %d error %q; want %d and an encode error", code, errMsg, ExitFailed)
	}
	if changes, _ := out.Result["changes"].([]any); len(changes) != 1 {
		t.Errorf("changes: got %v; want the chmod kept", out.Result["changes"])
	}
}

func TestTestReportRecords(t *testing.T) {
	r := NewTestReport()
	r.Logf("a %d", 1)
	r.Warnf("b")
	r.Set("k", "v")
	r.Changed(Change{Action: "x"})
	if got := strings.Join(r.Logs(), ","); got != "a 1,b" {
		t.Errorf("Logs: got %q; want %q", got, "a 1,b")
	}
	if r.Entries()[1].Level != LevelWarn {
		t.Errorf("level: got %q; want %q", r.Entries()[1].Level, LevelWarn)
	}
	if r.Result()["k"] != "v" || len(r.Changes()) != 1 {
		t.Errorf("got %v %v; want k=v and one change", r.Result(), r.Changes())
	}
}

// tamperProxy relays one connection to upstream, flipping the last byte of the client's
// frame number victim (0 = hello); it returns the proxy's address.
func tamperProxy(t *testing.T, upstream string, victim int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go relayTampered(ln, upstream, victim)
	return ln.Addr().String()
}

// relayTampered is the goroutine behind tamperProxy.
func relayTampered(ln net.Listener, upstream string, victim int) {
	client, err := ln.Accept()
	if err != nil {
		return
	}
	defer client.Close()
	server, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	defer server.Close()
	go io.Copy(client, server)
	// The server hello goes the other way; from the client come its public key, then frames.
	key := make([]byte, 32)
	if _, err := io.ReadFull(client, key); err != nil {
		return
	}
	if _, err := server.Write(key); err != nil {
		return
	}
	for i := 0; ; i++ {
		var hdr [4]byte
		if _, err := io.ReadFull(client, hdr[:]); err != nil {
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(client, body); err != nil {
			return
		}
		if i == victim {
			body[len(body)-1] ^= 0x01
		}
		if _, err := server.Write(append(hdr[:], body...)); err != nil {
			return
		}
	}
}

func TestMonitorRejectsATamperedLogFrame(t *testing.T) {
	mon := kittest.NewMonitor(t)
	proxy := tamperProxy(t, mon.Addr, 1)
	m := testModule(func(ctx context.Context, p Params, r *Report) error {
		r.Logf("first")
		r.Logf("second")
		return nil
	})
	cfg := bytes.Replace(mon.Config("t", okParams, 2*time.Second), []byte(mon.Addr), []byte(proxy), 1)
	code, _, out := runAgainst(t, mon, m, cfg)
	if out.Err == nil || !strings.Contains(out.Err.Error(), "authenticate frame c2m #1") {
		t.Errorf("monitor error: got %v; want an authentication failure on frame 1", out.Err)
	}
	if len(out.Logs) != 0 || out.Result != nil {
		t.Errorf("monitor accepted logs %v result %v from a tampered stream", out.Logs, out.Result)
	}
	if code != ExitCallback {
		t.Errorf("exit: got %d; want %d", code, ExitCallback)
	}
}

func TestHelloAndResultReportTheConfigDigestAndTheHelloTheExecutables(t *testing.T) {
	mon := kittest.NewMonitor(t)
	m := testModule(func(ctx context.Context, p Params, r *Report) error { return nil })
	cfg := mon.Config("t", okParams, 5*time.Second)
	code, stderr, out := runAgainst(t, mon, m, cfg)
	if code != ExitOK || out.Err != nil {
		t.Fatalf("got exit %d, monitor error %v, stderr %q; want 0, nil", code, out.Err, stderr)
	}
	want := kittest.ConfigDigest(cfg)
	if got := out.Hello["config_sha256"]; got != want {
		t.Errorf("hello config_sha256: got %q; want %q", got, want)
	}
	if got := out.Result["config_sha256"]; got != want {
		t.Errorf("result config_sha256: got %q; want %q", got, want)
	}
	exe, err := exeDigest("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	if got := out.Hello["exe_sha256"]; got != exe || len(exe) != 64 {
		t.Errorf("hello exe_sha256: got %q; want %q", got, exe)
	}
	if _, ok := out.Hello["token"]; ok {
		t.Errorf("hello carries the token itself: %v", out.Hello)
	}
}

func TestTheConfigDigestIsOfTheBytesReadNotOfTheirMeaning(t *testing.T) {
	// The same config with a space more: same parameters, other bytes, other digest.
	mon := kittest.NewMonitor(t)
	cfg := mon.Config("t", okParams, 5*time.Second)
	spaced := append([]byte("{ "), cfg[1:]...)
	a, err := readConfig(bytes.NewReader(cfg))
	if err != nil {
		t.Fatal(err)
	}
	b, err := readConfig(bytes.NewReader(spaced))
	if err != nil {
		t.Fatal(err)
	}
	if a.digest == b.digest || a.digest != kittest.ConfigDigest(cfg) {
		t.Errorf("digests: got %q and %q; want %q and another", a.digest, b.digest, kittest.ConfigDigest(cfg))
	}
	noNewline, err := readConfig(bytes.NewReader(cfg[:len(cfg)-1]))
	if err != nil || noNewline.digest != a.digest {
		t.Errorf("without the newline: got %v, %q; want the same digest %q", err, noNewline.digest, a.digest)
	}
}

func TestAVersion1ConfigIsRefused(t *testing.T) {
	v1 := `{"v":1,"monitor":"127.0.0.1:1","token":"x","key":"` + strings.Repeat("A", 43) + `="}` + "\n"
	var stderr bytes.Buffer
	if code := run(testModule(nil), strings.NewReader(v1), &stderr, testOptions()); code != ExitBadConfig ||
		!strings.Contains(stderr.String(), "version 1; want 2") {
		t.Errorf("got exit %d stderr %q; want %d and the version", code, stderr.String(), ExitBadConfig)
	}
}

func TestLogsStayWithinTheMonitorsLimitsAndSayHowManyWereDropped(t *testing.T) {
	for _, c := range []struct {
		name  string
		lines int
		size  int
	}{{"many lines", 3000, 10}, {"big lines", 100, 60 << 10}} {
		mon := kittest.NewMonitor(t)
		m := testModule(func(ctx context.Context, p Params, r *Report) error {
			for i := 0; i < c.lines; i++ {
				r.Logf("%d %s", i, strings.Repeat("x", c.size))
				if i%500 == 0 {
					time.Sleep(5 * time.Millisecond) // let the stream drain: no queue drops
				}
			}
			return nil
		})
		code, stderr, out := runAgainst(t, mon, m, mon.Config("t", okParams, 5*time.Second))
		if code != ExitOK || out.Err != nil {
			t.Fatalf("%s: got exit %d, monitor error %v, stderr %q; want 0, nil", c.name, code, out.Err, stderr)
		}
		total := 0
		for _, l := range out.Logs {
			body, _ := jsonx.Marshal(l)
			total += len(body)
		}
		if len(out.Logs) > wire.MaxLogMessages || total > wire.MaxLogBytes {
			t.Errorf("%s: got %d logs of %d bytes; want at most %d and %d", c.name, len(out.Logs), total, wire.MaxLogMessages, wire.MaxLogBytes)
		}
		last := out.LogMessages()[len(out.Logs)-1]
		sent := len(out.Logs) - 1
		if want := fmt.Sprintf("%d log lines dropped", c.lines-sent); !strings.HasPrefix(last, want) {
			t.Errorf("%s: last log: got %q; want it to start %q", c.name, last, want)
		}
	}
}
