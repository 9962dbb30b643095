// Command restore undoes a run's chaos on one machine, from the change records of its
// audit log: `chaosrun restore` deploys it like any module, with this machine's records.
//
// It works in four passes. First the run's fault processes stop: the ones the records
// name and any other process whose (deleted) executable is one of the run's binaries,
// the marker a candidate cannot fake by reusing a name. Then every other change is undone,
// newest first, each only when the machine still shows what the change left (its
// state_after): a path changed again since is reported, never forced. Then the `then`
// commands of what was undone (systemctl daemon-reload after a unit file), and the filesystems
// an fstab fault kept from mounting (a reboot since) are mounted again. Last, the units'
// states (stop, mask, disable, restart), newest first, once their unit files are back.
//
// A change already undone -- the machine is as it was before -- is "already", so running
// restore twice changes nothing the second time.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"strings"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// What became of one change.
const (
	restored     = "restored"     // undone now
	already      = "already"      // the machine was as before: nothing to do
	changedSince = "changed"      // changed again since the run: left alone
	failed       = "failed"       // the undo was tried and did not work
	irreversible = "irreversible" // nothing can undo it (a file deleted with no content kept)
	superseded   = "superseded"   // a record streamed before its step's work, which a later record of the step stands for
)

// change is one change record, with the step that made it.
type change struct {
	Step   string
	Index  int
	Action string
	Path   string
	Before any
	After  any
	Detail map[string]any
}

type outcome struct {
	Status  string
	Message string
}

func did(format string, args ...any) outcome {
	return outcome{restored, fmt.Sprintf(format, args...)}
}

func was(format string, args ...any) outcome {
	return outcome{already, fmt.Sprintf(format, args...)}
}

func since(format string, args ...any) outcome {
	return outcome{changedSince, fmt.Sprintf(format, args...)}
}

func broke(format string, args ...any) outcome {
	return outcome{failed, fmt.Sprintf(format, args...)}
}

func parse(entries []string) ([]change, error) {
	out := make([]change, 0, len(entries))
	for i, text := range entries {
		obj, err := kit.DecodeObject(text)
		if err != nil {
			return nil, fmt.Errorf("changes[%d]: %w", i, err)
		}
		rec, _ := obj["change"].(map[string]any)
		if rec == nil {
			return nil, fmt.Errorf("changes[%d]: no change record", i)
		}
		c := change{Step: str(obj["step"]), Index: int(num(obj["index"])), Action: str(rec["action"]),
			Path: str(rec["path"]), Before: rec["before"], After: rec["after"]}
		c.Detail, _ = rec["detail"].(map[string]any)
		if c.Detail == nil {
			c.Detail = map[string]any{}
		}
		out = append(out, c)
	}
	return out, nil
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	changes, err := parse(p.Strings("changes"))
	if err != nil {
		return err
	}
	results := make([]outcome, len(changes))
	done := make([]bool, len(changes))
	// 0. A record a step streamed before its work (in_progress) stands for that work only
	// when the step never said what it did: a later record of the step does.
	for i := range changes {
		if j := supersededBy(changes, i); j >= 0 {
			if top := str(changes[i].Detail["created_dir"]); top != "" && str(changes[j].Detail["created_dir"]) == "" {
				changes[j].Detail["created_dir"] = top // an earlier attempt made the folder
			}
			results[i], done[i] = outcome{superseded, "the step's later record stands for it"}, true
		}
	}
	// 0b. Binaries an interrupted deploy left.
	r.Set("leftovers_removed", removeLeftovers(p.Strings("leftovers"), r))
	// 1. Fault processes.
	stopped, byPID := stopFaultProcesses(ctx, p.Strings("binaries"), changes, r)
	for i, c := range changes {
		if c.Action == "spawn_process" {
			results[i], done[i] = processOutcome(c, byPID), true
		}
	}
	// 2. Everything but units' states, newest first; 3. their `then` commands.
	var then [][]string
	var remount []string
	for i := len(changes) - 1; i >= 0; i-- {
		c := changes[i]
		if done[i] || isUnitState(c.Action) {
			continue
		}
		results[i], done[i] = undo(ctx, c), true
		if results[i].Status == restored {
			then = appendNew(then, argvs(c.Detail["then"])...)
			if mp := str(c.Detail["mount"]); mp != "" {
				remount = append(remount, mp)
			}
		}
	}
	for _, argv := range then {
		if err := runArgv(ctx, argv); err != nil {
			r.Warnf("%s: %v", strings.Join(argv, " "), err)
		} else {
			r.Logf("ran %s", strings.Join(argv, " "))
		}
	}
	mountAgain(ctx, remount, r)
	// 4. Units' states, newest first.
	for i := len(changes) - 1; i >= 0; i-- {
		if !done[i] {
			results[i] = undoUnitState(ctx, changes[i])
		}
	}
	outcomes := make([]map[string]any, 0, len(changes))
	counts := map[string]int{}
	for i := len(changes) - 1; i >= 0; i-- {
		c, o := changes[i], results[i]
		counts[o.Status]++
		where := c.Path
		if where == "" {
			where = c.Step
		}
		r.Logf("%s %s: %s: %s", c.Action, where, o.Status, o.Message)
		outcomes = append(outcomes, map[string]any{"step": c.Step, "index": c.Index, "action": c.Action,
			"path": c.Path, "status": o.Status, "message": o.Message})
	}
	r.Set("outcomes", outcomes)
	r.Set("stopped", stopped)
	r.Set("restored", counts[restored])
	r.Set("already", counts[already])
	r.Set("not_restored", counts[changedSince]+counts[failed]+counts[irreversible])
	return nil
}

// supersededBy is the index of the later record that stands for changes[i], a record
// streamed before its step's work, or -1: the step's next record of the same action and
// path that is not one too (that attempt, or one resuming it, ended and said what it did).
func supersededBy(changes []change, i int) int {
	c := changes[i]
	if c.Detail["in_progress"] != true {
		return -1
	}
	for j := i + 1; j < len(changes); j++ {
		d := changes[j]
		if d.Step == c.Step && d.Action == c.Action && d.Path == c.Path && d.Detail["in_progress"] != true {
			return j
		}
	}
	return -1
}

// undo dispatches one change (not a unit's state, not a process) to what undoes it.
func undo(ctx context.Context, c change) outcome {
	switch c.Action {
	case "chmod":
		return undoChmod(c)
	case "chown":
		return undoChown(c)
	case "chattr":
		return undoChattr(c)
	case "write_file":
		return undoWrite(c)
	case "edit_file", "replace_file":
		return undoEdit(ctx, c)
	case "create_file":
		return undoCreate(c)
	case "create_files":
		return undoCreateFiles(c)
	case "delete_file":
		return undoDelete(c)
	case "move_file":
		return undoMove(c)
	case "edit_account":
		return undoAccount(c)
	case "sysctl_set":
		return undoSysctl(ctx, c)
	case "nft_add_rule", "iptables_insert_rule":
		return undoRule(ctx, c)
	case "tc_qdisc_replace":
		return undoQdisc(ctx, c)
	case "remount":
		return undoRemount(ctx, c)
	case "signal_process":
		return undoSignal(c)
	case "run_command", "set_xattr", "selinux_boolean":
		if undoArgv := argvs(c.Detail["undo"]); len(undoArgv) > 0 {
			return runUndo(ctx, undoArgv)
		}
		return outcome{irreversible, "the step gave no undo command"}
	}
	if undoArgv := argvs(c.Detail["undo"]); len(undoArgv) > 0 {
		return runUndo(ctx, undoArgv)
	}
	return outcome{irreversible, fmt.Sprintf("restore does not know how to undo %q", c.Action)}
}

func runUndo(ctx context.Context, undo [][]string) outcome {
	for _, argv := range undo {
		if err := runArgv(ctx, argv); err != nil {
			return broke("%s: %v", strings.Join(argv, " "), err)
		}
	}
	shown := make([]string, len(undo))
	for i, argv := range undo {
		shown[i] = strings.Join(argv, " ")
	}
	return did("ran %s", strings.Join(shown, "; "))
}

// argvs reads a record's command list: [[argv...]...], or one [argv...].
func argvs(v any) [][]string {
	list, _ := v.([]any)
	if len(list) == 0 {
		return nil
	}
	if _, single := list[0].(string); single {
		return [][]string{strs(list)}
	}
	var out [][]string
	for _, item := range list {
		if l, ok := item.([]any); ok && len(l) > 0 {
			out = append(out, strs(l))
		}
	}
	return out
}

func appendNew(list [][]string, more ...[]string) [][]string {
	for _, argv := range more {
		key := strings.Join(argv, "\x00")
		dup := false
		for _, have := range list {
			dup = dup || strings.Join(have, "\x00") == key
		}
		if !dup {
			list = append(list, argv)
		}
	}
	return list
}

func strs(list []any) []string {
	out := make([]string, 0, len(list))
	for _, v := range list {
		out = append(out, fmt.Sprint(v))
	}
	return out
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}

func obj(v any) map[string]any {
	m, _ := v.(map[string]any)
	if m == nil {
		return map[string]any{}
	}
	return m
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
