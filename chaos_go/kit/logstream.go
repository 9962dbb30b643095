package kit

import (
	"fmt"
	"sync"
	"time"

	"chaosrun/chaos_go/kit/internal/jsonx"
	"chaosrun/chaos_go/kit/internal/wire"
)

// logStream sends log lines and change records to the monitor from its own goroutine, in
// the order they were made, so a slow network never blocks the module. It keeps within the
// monitor's limits on one connection's logs (wire.MaxLogMessages, wire.MaxLogBytes): lines
// beyond them are dropped and counted in one last line, for which room is kept. Changes
// have limits of their own (wire.MaxChangeMessages, wire.MaxChangeBytes) and are never
// dropped from the queue: one beyond the limits is only in the result.
type logStream struct {
	conn *wire.Conn

	mu      sync.Mutex
	pending []LogEntry
	closed  bool
	dropped int   // lines dropped because the queue was full
	err     error // the first send error; later lines are discarded

	// Touched by the sending goroutine only.
	sentLines   int
	sentBytes   int
	overBudget  int // lines dropped to stay within the monitor's limits
	sentChanges int
	changeBytes int

	wake chan struct{}
	done chan struct{}
}

// Room kept in the monitor's log limits for the last line saying how many were dropped.
const (
	noticeLines = 1
	noticeBytes = 4 << 10
)

func startLogStream(conn *wire.Conn) *logStream {
	s := &logStream{conn: conn, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go sendLogs(s)
	return s
}

// push queues one line; after close, or beyond maxPendingLog queued lines, it is dropped.
func (s *logStream) push(e LogEntry) {
	s.mu.Lock()
	switch {
	case s.closed:
	case e.change != nil:
		s.pending = append(s.pending, e)
	case len(s.pending) >= maxPendingLog:
		s.dropped++
	default:
		s.pending = append(s.pending, e)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// close stops accepting lines, waits until the queued ones are sent and returns the first
// send error.
func (s *logStream) close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	<-s.done
	return s.err
}

// sendLogs is the goroutine that drains the queue into log frames.
func sendLogs(s *logStream) {
	defer close(s.done)
	for {
		s.mu.Lock()
		batch := s.pending
		s.pending = nil
		closed := s.closed
		dropped := s.dropped
		s.mu.Unlock()
		for _, e := range batch {
			s.send(e, false)
		}
		if closed && len(batch) == 0 {
			if n := dropped + s.overBudget; n > 0 {
				s.send(LogEntry{Time: time.Now(), Level: LevelWarn, Msg: fmt.Sprintf(
					"%d log lines dropped (%d: the callback was too slow; %d: over the monitor's limits of %d lines and %d bytes)",
					n, dropped, s.overBudget, wire.MaxLogMessages, wire.MaxLogBytes)}, true)
			}
			return
		}
		if len(batch) == 0 {
			<-s.wake
		}
	}
}

// send sends one line unless an earlier send failed or the line would pass the monitor's
// limits (notice: the last line, which may use the room kept for it).
func (s *logStream) send(e LogEntry, notice bool) {
	if s.err != nil {
		return
	}
	if e.change != nil {
		s.sendChange(*e.change)
		return
	}
	body, err := jsonx.Marshal(logFrame(e))
	if err == nil && len(body) >= wire.MaxFrame {
		err = wire.ErrTooLarge
	}
	if err != nil {
		body, err = jsonx.Marshal(logMsg{T: "log", TS: unixSeconds(e.Time), Level: e.Level,
			Msg: truncate(e.Msg, maxLogMsg), Fields: map[string]any{"fields_error": err.Error()}})
		if err != nil {
			s.err = fmt.Errorf("encode log: %w", err)
			return
		}
	}
	lines, bytes := wire.MaxLogMessages, wire.MaxLogBytes
	if !notice {
		lines, bytes = lines-noticeLines, bytes-noticeBytes
	}
	if s.sentLines+1 > lines || s.sentBytes+len(body) > bytes {
		s.overBudget++
		return
	}
	if s.err = s.conn.SendJSON(body); s.err == nil {
		s.sentLines++
		s.sentBytes += len(body)
	}
}

// sendChange sends one change record as a change message, unless it would pass the
// monitor's limits on changes (the result still carries it).
func (s *logStream) sendChange(c Change) {
	body, err := jsonx.Marshal(changeMsg{T: "change", Change: c})
	if err != nil || s.sentChanges+1 > wire.MaxChangeMessages || s.changeBytes+len(body) > wire.MaxChangeBytes {
		return
	}
	if s.err = s.conn.SendJSON(body); s.err == nil {
		s.sentChanges++
		s.changeBytes += len(body)
	}
}

type changeMsg struct {
	T      string `json:"t"`
	Change Change `json:"change"`
}

func logFrame(e LogEntry) logMsg {
	fields := e.Fields
	if fields == nil {
		fields = map[string]any{}
	}
	return logMsg{T: "log", TS: unixSeconds(e.Time), Level: e.Level, Msg: truncate(e.Msg, maxLogMsg), Fields: fields}
}

func unixSeconds(t time.Time) float64 {
	return float64(t.UnixMicro()) / 1e6
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "...(truncated)"
}
