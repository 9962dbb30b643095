// Command netem adds latency, jitter and packet loss to an interface with tc's netem qdisc.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/sysexec"
)

//go:embed params.schema.json
var declaration []byte

// shaping is the netem settings of one step.
type shaping struct {
	DelayMs, JitterMs int64
	LossPercent       float64
}

// netemArgv is the tc command that installs s on dev, replacing whatever root
// qdisc is there.
func netemArgv(tc, dev string, s shaping) ([]string, error) {
	if s.DelayMs == 0 && s.LossPercent == 0 {
		return nil, errors.New("nothing to do: set delay_ms or loss_percent")
	}
	if s.JitterMs > 0 && s.DelayMs == 0 {
		return nil, errors.New("jitter_ms needs delay_ms")
	}
	argv := []string{tc, "qdisc", "replace", "dev", dev, "root", "netem"}
	if s.DelayMs > 0 {
		argv = append(argv, "delay", fmt.Sprintf("%dms", s.DelayMs))
		if s.JitterMs > 0 {
			argv = append(argv, fmt.Sprintf("%dms", s.JitterMs))
		}
	}
	if s.LossPercent > 0 {
		argv = append(argv, "loss", strconv.FormatFloat(s.LossPercent, 'f', -1, 64)+"%")
	}
	return argv, nil
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	dev := p.String("interface")
	s := shaping{DelayMs: p.Int("delay_ms"), JitterMs: p.Int("jitter_ms"), LossPercent: p.Float("loss_percent")}
	tc, err := sysexec.LookTool("tc", p.String("tc_path"))
	if err != nil {
		return err
	}
	argv, err := netemArgv(tc, dev, s)
	if err != nil {
		return err
	}
	before, _, _ := sysexec.Run(ctx, []string{tc, "qdisc", "show", "dev", dev, "root"}, "")
	command := "tc " + strings.Join(argv[1:], " ")
	if _, stderr, err := sysexec.Run(ctx, argv, ""); err != nil {
		msg := strings.TrimSpace(stderr)
		if strings.Contains(msg, "kind is unknown") {
			msg += " (this kernel has no netem queueing discipline: sch_netem is missing)"
		}
		return fmt.Errorf("%s: %w: %s", command, err, msg)
	}
	after, _, _ := sysexec.Run(ctx, []string{tc, "qdisc", "show", "dev", dev, "root"}, "")
	r.Logf("%s", command)
	r.Set("command", command)
	r.Set("qdisc", strings.TrimSpace(after))
	r.Changed(kit.Change{
		Action: "tc_qdisc_replace",
		Path:   dev,
		Before: strings.TrimSpace(before),
		After:  strings.TrimSpace(after),
		Detail: map[string]any{"argv": argv, "undo": [][]string{{"tc", "qdisc", "del", "dev", dev, "root"}}},
	})
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
