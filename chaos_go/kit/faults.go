package kit

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"chaosrun/chaos_go/kit/procfs"
)

// A chaos step applied again -- a run resumed after its monitor died mid-step, a step
// retried -- finds its own fault in place and says so instead of failing on it or
// doubling it. These are the helpers for that.

// AlreadyInPlace marks the step's result "already_in_place" and logs why: the fault an
// earlier attempt of the same step made is there, and nothing was done again.
func (r *Report) AlreadyInPlace(format string, args ...any) {
	r.Set("already_in_place", true)
	r.Logf("already in place: "+format, args...)
}

// OwnFaultProcess finds a fault process an earlier attempt of this step left running: a
// live process named processName whose executable is this very binary (its SHA-256 is
// this process's own -- the marker restore uses too; a candidate's process of the same
// name runs another program), for which holds, when given, is true (it holds the step's
// port or file). ok is false when there is none.
func OwnFaultProcess(processName string, holds func(pid int) bool) (p procfs.Process, ok bool) {
	procs, err := procfs.List("/proc")
	if err != nil {
		return procfs.Process{}, false
	}
	own := ""
	self := os.Getpid()
	for _, candidate := range procs {
		if candidate.PID == self || candidate.Exited() || candidate.Comm != commOf(processName) {
			continue
		}
		if own == "" {
			if own, err = fileDigest("/proc/self/exe"); err != nil {
				return procfs.Process{}, false
			}
		}
		// readable through /proc although the file was unlinked
		if theirs, err := fileDigest("/proc/" + strconv.Itoa(candidate.PID) + "/exe"); err != nil || theirs != own {
			continue
		}
		if holds == nil || holds(candidate.PID) {
			return candidate, true
		}
	}
	return procfs.Process{}, false
}

func commOf(name string) string {
	if len(name) > procfs.CommMax {
		return name[:procfs.CommMax]
	}
	return name
}

// Started is a timed fault process: the one this call started, or an earlier attempt's
// still running (Again), with its start time in ticks and when it ends.
type Started struct {
	PID   int
	Start uint64
	Until time.Time
	Again bool
}

// StartOnce starts the fault process named name (Spawn with args) to run for duration,
// unless an earlier attempt of the step left one running (OwnFaultProcess): that one is
// reported as already in place, its end counted from its own start. what names it in
// messages ("load process").
func StartOnce(ctx context.Context, r *Report, what, name string, args map[string]any, duration, timeout time.Duration) (Started, error) {
	if own, ok := OwnFaultProcess(name, nil); ok {
		s := Started{PID: own.PID, Start: own.Start, Until: time.Now().Add(duration), Again: true}
		if at, known := procfs.StartedAt("/proc", own.Start); known {
			s.Until = at.Add(duration)
		}
		r.AlreadyInPlace("%s %d (%s) of an earlier attempt runs until %s", what, s.PID, name, s.Until.Format(time.RFC3339))
		return s, nil
	}
	s := Started{Until: time.Now().Add(duration)}
	var err error
	if s.PID, err = Spawn(ctx, name, args); err != nil {
		return s, fmt.Errorf("start %s: %w", what, err)
	}
	if s.Start, err = procfs.WaitNamed(ctx, "/proc", s.PID, name, timeout); err != nil {
		return s, fmt.Errorf("start %s: %w", what, err)
	}
	return s, nil
}
