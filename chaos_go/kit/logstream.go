package kit

import (
	"fmt"
	"sync"
	"time"

	"chaosrun/chaos_go/kit/internal/wire"
)

// logStream sends log lines to the monitor from its own goroutine, in the order they were
// logged, so a slow network never blocks the module.
type logStream struct {
	conn *wire.Conn

	mu      sync.Mutex
	pending []LogEntry
	closed  bool
	dropped int
	err     error // the first send error; later lines are discarded

	wake chan struct{}
	done chan struct{}
}

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
	if s.dropped > 0 {
		s.pending = append(s.pending, LogEntry{Time: time.Now(), Level: LevelWarn,
			Msg: fmt.Sprintf("%d log lines dropped (the callback was too slow)", s.dropped)})
	}
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
		s.mu.Unlock()
		for _, e := range batch {
			if s.err == nil {
				s.err = s.conn.Send(logFrame(e))
				if s.err != nil && isEncodeErr(s.err) {
					s.err = s.conn.Send(logMsg{T: "log", TS: unixSeconds(e.Time), Level: e.Level,
						Msg: truncate(e.Msg, maxLogMsg), Fields: map[string]any{"fields_error": s.err.Error()}})
				}
			}
		}
		if closed && len(batch) == 0 {
			return
		}
		if len(batch) == 0 {
			<-s.wake
		}
	}
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
