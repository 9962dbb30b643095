// Package kit is the runtime every chaos and probe module is built on: it reads the step's
// config from stdin, unlinks the binary, validates the parameters against the module's
// declaration, dials back to the monitor over the authenticated callback
// (docs/protocol.md), streams the module's logs, sends its result and exits.
package kit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"chaosrun/chaos_go/kit/internal/jsonx"
	"chaosrun/chaos_go/kit/internal/wire"
	"chaosrun/chaos_go/kit/sensors"
	"chaosrun/chaos_go/kit/sysexec"
)

// Kind says whether a module injects chaos or probes a testenv.
type Kind string

// Module kinds, as in a declaration's "x-kind". An internal module is one of chaosrun's
// own tools (restore): deployed like any module, never named in a scenario.
const (
	Chaos    Kind = "chaos"
	Probe    Kind = "probe"
	Internal Kind = "internal"
)

// RunFunc is a module's body. ctx ends at the step's deadline.
type RunFunc func(ctx context.Context, p Params, r *Report) error

// BackgroundFunc is the body of a detached fault process started with Spawn. args are the
// ones given to Spawn, decoded from JSON (numbers as float64).
type BackgroundFunc func(ctx context.Context, args map[string]any) error

// Module describes one chaos or probe module. Its name and kind are written once, in its
// declaration ("title" and "x-kind"; see Identity), and its folder bears the same name.
type Module struct {
	Declaration []byte // the module's params.schema.json, via //go:embed
	Run         RunFunc
	Background  BackgroundFunc // optional: body of a detached fault process started with Spawn
}

// Exit codes of a module binary (docs/protocol.md section 5).
const (
	ExitOK        = 0
	ExitFailed    = 1
	ExitBadConfig = 2
	ExitCallback  = 3
)

// Limits and timeouts of one run.
const (
	maxConfigBytes = 4 << 20
	defaultTimeout = 30 * time.Second
	dialTimeout    = 10 * time.Second
	helloTimeout   = 10 * time.Second
	writeTimeout   = 10 * time.Second
	ackTimeout     = 5 * time.Second
	// deadlineGrace is how long a module may take to return after its deadline before
	// the kit reports it anyway.
	deadlineGrace = 500 * time.Millisecond
	maxLogMsg     = 64 << 10
	maxPendingLog = 10000
)

// configEnv is the debugging fallback for the config when stdin is a terminal.
const configEnv = "CHAOSRUN_CONFIG"

// Main runs the module as the process's whole life and exits; it never returns.
// In a process started by Spawn it runs m.Background instead.
func Main(m Module) {
	RunIfChild(m)
	unlinkSelf()
	os.Exit(run(m, configSource(), os.Stderr, defaultOptions()))
}

// unlinkSelf removes the binary from disk, so a candidate listing the temp dir finds nothing.
func unlinkSelf() {
	if exe, err := os.Executable(); err == nil {
		_ = os.Remove(exe)
	}
}

// configSource is stdin, or CHAOSRUN_CONFIG when stdin is a terminal (manual debugging).
func configSource() io.Reader {
	if isTerminal(0) {
		if s := os.Getenv(configEnv); s != "" {
			return strings.NewReader(s)
		}
	}
	return os.Stdin
}

func isTerminal(fd uintptr) bool {
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}

// config is the step config line (docs/protocol.md section 1).
type config struct {
	V          int64
	Monitor    string
	MonitorKey string
	Token      string
	Run        string
	Step       string
	Module     string
	Params     map[string]any // numbers are jsonx.Number
	TimeoutMS  int64
	Compress   bool

	monitorKey []byte
	// digest is the hex SHA-256 of the exact bytes of the config line as read, its
	// terminating newline excluded: the hello and the result report it, so the monitor
	// sees parameters changed on the way to the binary.
	digest string
}

// readConfig reads the one JSON line of the step config, at most maxConfigBytes, and checks
// what is needed to call the monitor back. Unknown fields are ignored (a newer monitor).
func readConfig(in io.Reader) (*config, error) {
	br := bufio.NewReader(io.LimitReader(in, maxConfigBytes+1))
	line, err := br.ReadBytes('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(line) > maxConfigBytes {
		return nil, fmt.Errorf("read config: longer than %d bytes", maxConfigBytes)
	}
	if len(strings.TrimSpace(string(line))) == 0 {
		return nil, errors.New("read config: empty input")
	}
	obj, err := jsonx.DecodeObject(line, true)
	if err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	sum := sha256.Sum256(bytes.TrimSuffix(line, []byte("\n")))
	c := config{digest: hex.EncodeToString(sum[:])}
	f := fields{obj: obj}
	c.V = f.integer("v")
	c.Monitor = f.str("monitor")
	c.MonitorKey = f.str("monitor_key")
	c.Token = f.str("token")
	c.Run = f.str("run")
	c.Step = f.str("step")
	c.Module = f.str("module")
	c.Params = f.object("params")
	c.TimeoutMS = f.integer("timeout_ms")
	c.Compress = f.boolean("compress")
	if f.err != nil {
		return nil, fmt.Errorf("config: %w", f.err)
	}
	if c.V != 2 {
		return nil, fmt.Errorf("config: version %d; want 2", c.V)
	}
	if c.Monitor == "" {
		return nil, errors.New("config: monitor is missing")
	}
	if c.Token == "" {
		return nil, errors.New("config: token is missing")
	}
	c.monitorKey, err = base64.StdEncoding.DecodeString(c.MonitorKey)
	if err != nil {
		return nil, fmt.Errorf("config: monitor_key: %w", err)
	}
	if len(c.monitorKey) != wire.PublicKeyLen {
		return nil, fmt.Errorf("config: monitor_key is %d bytes; want %d", len(c.monitorKey), wire.PublicKeyLen)
	}
	return &c, nil
}

// fields reads typed members of a decoded JSON object, keeping the first type error.
type fields struct {
	obj map[string]any
	err error
}

func (f *fields) get(name, want string, ok func(any) bool) any {
	v, present := f.obj[name]
	if !present || v == nil {
		return nil
	}
	if !ok(v) {
		if f.err == nil {
			f.err = fmt.Errorf("%s: got %s; want %s", name, describe(v), want)
		}
		return nil
	}
	return v
}

func (f *fields) str(name string) string {
	s, _ := f.get(name, "a string", func(v any) bool { _, ok := v.(string); return ok }).(string)
	return s
}

func (f *fields) integer(name string) int64 {
	v := f.get(name, "an integer", func(v any) bool { _, ok := toInt(v); return ok })
	n, _ := toInt(v)
	return n
}

func (f *fields) number(name string) *float64 {
	v := f.get(name, "a number", func(v any) bool { _, ok := toFloat(v); return ok })
	if v == nil {
		return nil
	}
	x, _ := toFloat(v)
	return &x
}

func (f *fields) boolean(name string) bool {
	b, _ := f.get(name, "a boolean", func(v any) bool { _, ok := v.(bool); return ok }).(bool)
	return b
}

func (f *fields) object(name string) map[string]any {
	m, _ := f.get(name, "an object", func(v any) bool { _, ok := v.(map[string]any); return ok }).(map[string]any)
	return m
}

func (f *fields) array(name string) []any {
	a, _ := f.get(name, "an array", func(v any) bool { _, ok := v.([]any); return ok }).([]any)
	return a
}

func (c *config) timeout() time.Duration {
	if c.TimeoutMS <= 0 {
		return defaultTimeout
	}
	return time.Duration(c.TimeoutMS) * time.Millisecond
}

// options are the run's timeouts and the executable it reports; tests change them.
type options struct {
	dial, hello, write, ack, grace time.Duration
	exe                            string // the file hashed for the hello's exe_sha256
}

func defaultOptions() options {
	return options{dial: dialTimeout, hello: helloTimeout, write: writeTimeout, ack: ackTimeout, grace: deadlineGrace,
		exe: "/proc/self/exe"}
}

// Messages of the protocol (docs/protocol.md section 4).
type helloMsg struct {
	T            string `json:"t"`
	Run          string `json:"run"`
	Step         string `json:"step"`
	Proof        string `json:"proof"`
	ConfigSHA256 string `json:"config_sha256"`
	ExeSHA256    string `json:"exe_sha256"`
}

type logMsg struct {
	T      string         `json:"t"`
	TS     float64        `json:"ts"`
	Level  string         `json:"level"`
	Msg    string         `json:"msg"`
	Fields map[string]any `json:"fields"`
}

type resultMsg struct {
	T            string         `json:"t"`
	Step         string         `json:"step"`
	OK           bool           `json:"ok"`
	Error        *string        `json:"error"`
	Result       map[string]any `json:"result"`
	Changes      []Change       `json:"changes"`
	ConfigSHA256 string         `json:"config_sha256"`
	Sensors      map[string]any `json:"sensors,omitempty"`
}

// run is Main without the process around it: it reads the config from in, writes problems
// to stderr and returns the exit code.
func run(m Module, in io.Reader, stderr io.Writer, opt options) int {
	start := time.Now()
	decl, declErr := parseIdentity(m.Declaration)
	name := moduleName(decl)
	cfg, err := readConfig(in)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return ExitBadConfig
	}
	params, paramErr := prepare(m, decl, declErr, cfg)
	// The tamper sensors look before the module acts (docs/protocol.md, "sensors").
	sensorCfg := sensors.Default(sensors.ParamPaths(cfg.Params))
	sensed := sensors.Collect(sensorCfg)

	cb, err := dialMonitor(cfg, opt)
	if err != nil {
		fmt.Fprintf(stderr, "%s: callback: %v\n", name, err)
		if paramErr != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, paramErr)
			return ExitBadConfig
		}
		return ExitCallback
	}
	defer cb.Close()

	if paramErr != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, paramErr)
		msg := paramErr.Error()
		res := resultMsg{T: "result", Step: cfg.Step, OK: false, Error: &msg, Result: map[string]any{}, Changes: []Change{}, ConfigSHA256: cfg.digest,
			Sensors: withPrograms(sensed, sensorCfg)}
		if _, err := deliver(cb, res, opt); err != nil {
			fmt.Fprintf(stderr, "%s: callback: %v\n", name, err)
		}
		return ExitBadConfig
	}

	logs := startLogStream(cb)
	report := newReport(logs.push)
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(cfg.timeout()))
	defer cancel()
	defer endOnSignal(cancel)()
	runErr := runModule(ctx, m, params, report, opt.grace)
	logErr := logs.close()

	res := resultMsg{T: "result", Step: cfg.Step, OK: runErr == nil, Result: report.Result(), Changes: report.Changes(), ConfigSHA256: cfg.digest,
		Sensors: withPrograms(sensed, sensorCfg)}
	if res.Changes == nil {
		res.Changes = []Change{}
	}
	if runErr != nil {
		msg := runErr.Error()
		res.Error = &msg
	}
	if logErr != nil {
		fmt.Fprintf(stderr, "%s: callback: %v\n", name, logErr)
		return ExitCallback
	}
	sentOK, err := deliver(cb, res, opt)
	if err != nil {
		fmt.Fprintf(stderr, "%s: callback: %v\n", name, err)
		return ExitCallback
	}
	if !sentOK {
		return ExitFailed
	}
	return ExitOK
}

// withPrograms adds to the sensors' report the hashes of the programs that ran for the
// step, the tools the module looked up included (so it is called once the module is done),
// and a tracer or holders that came while it ran.
func withPrograms(sensed map[string]any, c sensors.Config) map[string]any {
	start := time.Now()
	c.Own = Spawned() // the fault processes it left running hold the executable by design
	sensors.Recheck(c, sensed)
	var tools []sensors.Tool
	for _, t := range sysexec.Resolved() {
		tools = append(tools, sensors.Tool{Label: t.Label, Path: t.Path})
	}
	sensed["programs"] = sensors.Programs(c, tools)
	if us, ok := sensed["elapsed_us"].(int64); ok {
		sensed["elapsed_us"] = us + time.Since(start).Microseconds()
	}
	return sensed
}

// prepare checks the config names this module and validates its parameters. decl and
// declErr are what parseIdentity said of m.Declaration.
func prepare(m Module, decl *declaration, declErr error, cfg *config) (Params, error) {
	if declErr == nil && cfg.Module != "" && cfg.Module != decl.Title {
		return Params{}, fmt.Errorf("config is for module %q, this is %q", cfg.Module, decl.Title)
	}
	if m.Run == nil {
		return Params{}, fmt.Errorf("module %q has no Run function", moduleName(decl))
	}
	if declErr != nil {
		return Params{}, fmt.Errorf("bad params: %w", declErr)
	}
	p, err := newParams(decl, cfg.Params)
	if err != nil {
		return Params{}, fmt.Errorf("bad params: %w", err)
	}
	return p, nil
}

// moduleName is the module's name for messages: its declaration's title, or "module"
// when the declaration is unusable.
func moduleName(decl *declaration) string {
	if decl == nil || decl.Title == "" {
		return "module"
	}
	return decl.Title
}

// dialMonitor connects to the monitor, agrees the session keys and sends the hello: the
// proof of the token, the config's digest and the executable's.
func dialMonitor(cfg *config, opt options) (*wire.Conn, error) {
	exe, err := exeDigest(opt.exe)
	if err != nil {
		return nil, err
	}
	nc, err := wire.Dial(cfg.Monitor, opt.dial)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", cfg.Monitor, err)
	}
	conn, err := wire.Client(nc, cfg.monitorKey, cfg.Compress, opt.hello)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("connect %s: %w", cfg.Monitor, err)
	}
	conn.WriteTimeout = opt.write
	hello := helloMsg{T: "hello", Run: cfg.Run, Step: cfg.Step, Proof: wire.Proof(cfg.Token, conn.Transcript(cfg.Run, cfg.Step)),
		ConfigSHA256: cfg.digest, ExeSHA256: exe}
	if err := conn.Send(hello); err != nil {
		conn.Close()
		return nil, fmt.Errorf("send hello: %w", err)
	}
	return conn, nil
}

// exeDigest is the hex SHA-256 of the file at path (/proc/self/exe: the bytes this process
// runs, even once unlinked), read by the kit itself rather than by a tool of the target.
func exeDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("hash own executable: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash own executable: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// deliver sends the result frame and waits for the monitor's ack. It returns the "ok" of
// the result actually sent.
func deliver(cb *wire.Conn, res resultMsg, opt options) (bool, error) {
	ok, err := sendResult(cb, res)
	if err != nil {
		return ok, err
	}
	ack, err := cb.Recv(time.Now().Add(opt.ack))
	if err != nil {
		return ok, fmt.Errorf("wait for ack: %w", err)
	}
	if ack["t"] != "ack" {
		return ok, fmt.Errorf("wait for ack: got message %v", ack["t"])
	}
	return ok, nil
}

// sendResult sends res; if it cannot be encoded (a value that is not JSON, or too large),
// it sends a failed result that still carries the changes when they fit. It returns the
// "ok" of the result sent.
func sendResult(cb *wire.Conn, res resultMsg) (bool, error) {
	err := cb.Send(res)
	if err == nil {
		return res.OK, nil
	}
	if !isEncodeErr(err) {
		return res.OK, fmt.Errorf("send result: %w", err)
	}
	msg := fmt.Sprintf("encode result: %v", err)
	res.OK, res.Error, res.Result = false, &msg, map[string]any{}
	if err = cb.Send(res); err != nil && isEncodeErr(err) {
		res.Changes = []Change{}
		err = cb.Send(res)
	}
	if err != nil {
		return false, fmt.Errorf("send result: %w", err)
	}
	return false, nil
}

func isEncodeErr(err error) bool {
	var ue *jsonx.UnsupportedError
	return errors.Is(err, wire.ErrTooLarge) || errors.As(err, &ue)
}

// endOnSignal makes SIGTERM and SIGINT end the module's context, so that a module stops
// what it started (the command probe's process group, a stress loop) when the monitor
// stops the step, instead of dying and leaving it behind; a second signal ends the
// process at once. The returned func undoes it.
func endOnSignal(cancel context.CancelFunc) func() {
	sigs := make(chan os.Signal, 1)
	done := make(chan struct{})
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go cancelOnSignal(sigs, done, cancel)
	return func() {
		signal.Stop(sigs)
		close(done)
	}
}

// cancelOnSignal is the goroutine behind endOnSignal.
func cancelOnSignal(sigs chan os.Signal, done chan struct{}, cancel context.CancelFunc) {
	select {
	case <-sigs:
		cancel()
		signal.Reset(syscall.SIGTERM, syscall.SIGINT)
	case <-done:
	}
}

// runModule runs m.Run under ctx; a panic becomes an error, and a module still running
// opt.grace after its deadline is reported as "deadline exceeded".
func runModule(ctx context.Context, m Module, p Params, r *Report, grace time.Duration) error {
	done := make(chan error, 1)
	go runModuleBody(ctx, m.Run, p, r, done)
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		select {
		case err = <-done:
		case <-time.After(grace):
			r.Log(LevelError, "module did not return by its deadline", nil)
			return errors.New("deadline exceeded")
		}
	}
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		r.Log(LevelError, err.Error(), nil)
		return errors.New("deadline exceeded")
	}
	return err
}

// runModuleBody is the goroutine running a module's Run, turning a panic into an error.
func runModuleBody(ctx context.Context, fn RunFunc, p Params, r *Report, done chan<- error) {
	defer func() {
		if v := recover(); v != nil {
			r.Log(LevelError, "panic", map[string]any{"stack": string(debug.Stack())})
			done <- fmt.Errorf("panic: %v", v)
		}
	}()
	done <- fn(ctx, p, r)
}

// Identity returns the module's name and kind as its declaration states them: "title"
// and "x-kind". That is the one place a module's identity is written; its folder under
// chaos_go/modules/ bears the same name (moduletest.CheckDeclaration checks both).
func Identity(declaration []byte) (name string, kind Kind, err error) {
	d, err := parseIdentity(declaration)
	if err != nil {
		return "", "", err
	}
	return d.Title, Kind(d.Kind), nil
}

// parseIdentity parses a module's declaration and checks that it names the module and its
// kind. The declaration is returned whenever it parsed, for its title in messages.
func parseIdentity(raw []byte) (*declaration, error) {
	d, err := parseDeclaration(raw)
	if err != nil {
		return nil, err
	}
	if err := errors.Join(d.identityErrs()...); err != nil {
		return d, fmt.Errorf("declaration: %w", err)
	}
	return d, nil
}

// identityErrs are the problems with the module's name and kind as d states them.
func (d *declaration) identityErrs() []error {
	var errs []error
	if d.Title == "" {
		errs = append(errs, errors.New(`title: missing; want the module's name`))
	}
	if k := Kind(d.Kind); k != Chaos && k != Probe && k != Internal {
		errs = append(errs, fmt.Errorf("x-kind: got %q; want %q, %q or %q", d.Kind, Chaos, Probe, Internal))
	}
	return errs
}

// CheckDeclaration checks a module's declaration against docs/module-authoring.md: it
// parses, its title (the module's name) is set, x-kind is chaos or probe, x-rank at least
// 1, it has one-line descriptions everywhere and "additionalProperties": false. Module
// tests call it through moduletest.CheckDeclaration, which also checks the folder name.
func CheckDeclaration(declaration []byte) error {
	d, err := parseDeclaration(declaration)
	if err != nil {
		return err
	}
	errs := d.identityErrs()
	if d.Rank < 1 {
		errs = append(errs, fmt.Errorf("x-rank: got %d; want at least 1", d.Rank))
	}
	if d.Description == "" || strings.Contains(d.Description, "\n") {
		errs = append(errs, fmt.Errorf("description: got %q; want one line", d.Description))
	}
	if d.AdditionalProperties == nil || *d.AdditionalProperties {
		errs = append(errs, errors.New(`additionalProperties: want false`))
	}
	for _, name := range sortedKeys(d.Properties) {
		if desc := d.Properties[name].Description; desc == "" || strings.Contains(desc, "\n") {
			errs = append(errs, fmt.Errorf("%s: description: got %q; want one line", name, desc))
		}
	}
	return errors.Join(errs...)
}
