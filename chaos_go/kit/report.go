package kit

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

// Change records what a chaos module altered, with enough before-state to undo it.
type Change struct {
	Action string         `json:"action"`
	Path   string         `json:"path,omitempty"`
	Before any            `json:"before,omitempty"`
	After  any            `json:"after,omitempty"`
	Detail map[string]any `json:"detail,omitempty"`
}

// Log levels of the protocol's log message.
const (
	LevelInfo  = "info"
	LevelWarn  = "warn"
	LevelError = "error"
)

// LogEntry is one log line of a module.
type LogEntry struct {
	Time   time.Time
	Level  string
	Msg    string
	Fields map[string]any

	change *Change // set: not a log line but a change record to stream
}

// maxKeptLogs bounds the log lines a Report keeps in memory (all are streamed).
const maxKeptLogs = 10000

// Report is what a module tells the monitor: log lines (streamed as they happen), result
// fields and changes (sent in the result frame). It is safe for concurrent use.
type Report struct {
	mu      sync.Mutex
	result  map[string]any
	changes []Change
	logs    []LogEntry
	sink    func(LogEntry) // streams a log line; nil for a test report
}

// NewTestReport returns an in-memory Report for module tests.
func NewTestReport() *Report { return newReport(nil) }

func newReport(sink func(LogEntry)) *Report {
	return &Report{result: map[string]any{}, sink: sink}
}

// Logf logs an info line, streamed to the monitor immediately.
func (r *Report) Logf(format string, args ...any) {
	r.Log(LevelInfo, fmt.Sprintf(format, args...), nil)
}

// Warnf logs a warn line.
func (r *Report) Warnf(format string, args ...any) {
	r.Log(LevelWarn, fmt.Sprintf(format, args...), nil)
}

// Log logs a line at level (info, warn or error) with optional structured fields.
func (r *Report) Log(level, msg string, fields map[string]any) {
	e := LogEntry{Time: time.Now(), Level: level, Msg: msg, Fields: fields}
	r.mu.Lock()
	if len(r.logs) < maxKeptLogs {
		r.logs = append(r.logs, e)
	}
	sink := r.sink
	r.mu.Unlock()
	if sink != nil {
		sink(e)
	}
}

// Set sets a result field. The value must encode as JSON.
func (r *Report) Set(key string, value any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.result[key] = value
}

// Changed records one alteration made by a chaos module, right after making it: the
// record is streamed to the monitor at once (a change message, written to the audit log
// before the step's result), so a run that dies before the result still knows what to
// undo. A change of an absolute Path gets the path's state right after it (Detail
// "state_after", PathState), which restore compares with before it undoes anything: a
// path changed again since is left alone.
func (r *Report) Changed(c Change) {
	if strings.HasPrefix(c.Path, "/") && c.Detail["state_after"] == nil {
		detail := map[string]any{"state_after": PathState(c.Path)}
		for k, v := range c.Detail {
			detail[k] = v
		}
		c.Detail = detail
	}
	r.mu.Lock()
	r.changes = append(r.changes, c)
	sink := r.sink
	r.mu.Unlock()
	if sink != nil {
		sink(LogEntry{Time: time.Now(), change: &c})
	}
}

// Result returns a copy of the result fields.
func (r *Report) Result() map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]any, len(r.result))
	for k, v := range r.result {
		out[k] = v
	}
	return out
}

// Changes returns a copy of the recorded changes.
func (r *Report) Changes() []Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Change{}, r.changes...)
}

// Logs returns the messages logged so far (any level), oldest first.
func (r *Report) Logs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.logs))
	for i, e := range r.logs {
		out[i] = e.Msg
	}
	return out
}

// Entries returns the log entries so far, with their levels and fields.
func (r *Report) Entries() []LogEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]LogEntry{}, r.logs...)
}
