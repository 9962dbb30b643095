// Command block_port adds a firewall rule that drops or rejects traffic to one port.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/sysexec"
)

//go:embed params.schema.json
var declaration []byte

// The nftables table block_port writes to: a name an administrator could have
// chosen, so that `nft list ruleset` does not point at a chaos tool.
const (
	nftFamily = "inet"
	nftTable  = "filter_local"
)

// blockSpec is one rule to install, independent of the backend.
type blockSpec struct {
	Port          int64
	Protocol      string // tcp | udp
	Direction     string // input | output
	Action        string // drop | reject
	KeepConnected bool   // TCP: match only connection-opening SYNs
}

func specFromParams(p kit.Params) blockSpec {
	return blockSpec{
		Port:          p.Int("port"),
		Protocol:      p.String("protocol"),
		Direction:     p.String("direction"),
		Action:        p.String("action"),
		KeepConnected: p.Bool("keep_established"),
	}
}

// nftRule is the rule's body in nft syntax, e.g. "tcp dport 80 drop".
func (s blockSpec) nftRule() string {
	verdict := "drop"
	if s.Action == "reject" {
		verdict = "reject"
		if s.Protocol == "tcp" {
			verdict = "reject with tcp reset"
		}
	}
	rule := fmt.Sprintf("%s dport %d %s", s.Protocol, s.Port, verdict)
	if s.KeepConnected && s.Protocol == "tcp" {
		// A stateless match on the opening SYN: "ct state new" would also match
		// the first packet conntrack sees of a connection opened before
		// conntrack was loaded, and so cut the monitor's own SSH session.
		rule = "tcp flags & (fin|syn|rst|ack) == syn " + rule
	}
	return rule
}

// nftScript is the nft script that installs the rule, adding the table and the
// base chain first when they are missing. The numeric priority keeps it valid
// for nft releases older than the named priorities (0 == "filter").
func (s blockSpec) nftScript(haveTable, haveChain bool) string {
	var b strings.Builder
	if !haveTable {
		fmt.Fprintf(&b, "add table %s %s\n", nftFamily, nftTable)
	}
	if !haveChain {
		fmt.Fprintf(&b, "add chain %s %s %s { type filter hook %s priority 0; policy accept; }\n",
			nftFamily, nftTable, s.Direction, s.Direction)
	}
	fmt.Fprintf(&b, "add rule %s %s %s %s\n", nftFamily, nftTable, s.Direction, s.nftRule())
	return b.String()
}

// iptablesArgs is the iptables (or ip6tables) argument list for op, which is
// "-I" to insert the rule at the top of its chain, "-D" to delete it again or
// "-C" to check for it.
func (s blockSpec) iptablesArgs(op string) []string {
	args := []string{"-w", op, strings.ToUpper(s.Direction), "-p", s.Protocol, "-m", s.Protocol}
	if s.KeepConnected && s.Protocol == "tcp" {
		args = append(args, "--syn")
	}
	args = append(args, "--dport", strconv.FormatInt(s.Port, 10), "-j")
	switch {
	case s.Action == "drop":
		args = append(args, "DROP")
	case s.Protocol == "tcp":
		args = append(args, "REJECT", "--reject-with", "tcp-reset")
	default:
		args = append(args, "REJECT")
	}
	return args
}

var nftHandle = regexp.MustCompile(`(?m)^add rule .* # handle (\d+)\s*$`)

// installNft adds the rule with nft and reports its handle.
func installNft(ctx context.Context, nft string, s blockSpec, r *kit.Report) error {
	_, tableErr := runTool(ctx, "", nft, "list", "table", nftFamily, nftTable)
	haveTable := tableErr == nil
	haveChain := false
	if haveTable {
		_, chainErr := runTool(ctx, "", nft, "list", "chain", nftFamily, nftTable, s.Direction)
		haveChain = chainErr == nil
	}
	script := s.nftScript(haveTable, haveChain)
	out, err := runTool(ctx, script, nft, "--echo", "--handle", "-f", "-")
	if err != nil {
		return fmt.Errorf("add nft rule %q: %w", s.nftRule(), err)
	}
	m := nftHandle.FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("add nft rule %q: no handle in nft's echo %q", s.nftRule(), out)
	}
	handle, _ := strconv.ParseInt(m[1], 10, 64)
	where := fmt.Sprintf("%s %s %s", nftFamily, nftTable, s.Direction)
	r.Logf("nft: added %q to %s, handle %d", s.nftRule(), where, handle)
	r.Set("backend", "nft")
	r.Set("rule", s.nftRule())
	r.Set("handle", handle)
	r.Changed(kit.Change{
		Action: "nft_add_rule",
		Path:   where,
		Before: map[string]any{"table_existed": haveTable, "chain_existed": haveChain},
		After:  map[string]any{"handle": handle, "rule": s.nftRule()},
		Detail: map[string]any{
			"backend": "nft", "family": nftFamily, "table": nftTable, "chain": s.Direction, "handle": handle,
			"undo": []string{"nft", "delete", "rule", nftFamily, nftTable, s.Direction, "handle", strconv.FormatInt(handle, 10)},
		},
	})
	return nil
}

// installIptables inserts the rule with iptables, and with ip6tables too when
// that is installed (a failure there is a warning: IPv6 may be off).
func installIptables(ctx context.Context, iptables string, s blockSpec, r *kit.Report) error {
	tools := []string{iptables}
	if ip6, err := sysexec.LookTool("ip6tables", "ip6tables"); err == nil {
		tools = append(tools, ip6)
	}
	for i, tool := range tools {
		_, checkErr := runTool(ctx, "", tool, s.iptablesArgs("-C")...)
		if _, err := runTool(ctx, "", tool, s.iptablesArgs("-I")...); err != nil {
			if i == 0 {
				return fmt.Errorf("insert iptables rule: %w", err)
			}
			r.Warnf("ip6tables rule not added: %v", err)
			continue
		}
		name := filepath.Base(tool)
		rule := strings.Join(s.iptablesArgs("-I")[1:], " ")
		r.Logf("%s: inserted %q", name, rule)
		r.Changed(kit.Change{
			Action: "iptables_insert_rule",
			Path:   strings.ToUpper(s.Direction),
			Before: map[string]any{"rule_present": checkErr == nil},
			After:  map[string]any{"rule": rule},
			Detail: map[string]any{
				"backend": "iptables", "tool": name, "chain": strings.ToUpper(s.Direction),
				"undo": append([]string{name}, s.iptablesArgs("-D")...),
			},
		})
	}
	r.Set("backend", "iptables")
	r.Set("rule", strings.Join(s.iptablesArgs("-I")[1:], " "))
	r.Set("handle", 0)
	return nil
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	s := specFromParams(p)
	backend := p.String("backend")
	if backend == "auto" || backend == "nft" {
		nft, err := sysexec.LookTool("nft", "nft")
		if err == nil {
			return installNft(ctx, nft, s, r)
		}
		if backend == "nft" {
			return err
		}
	}
	iptables, err := sysexec.LookTool("iptables", "iptables")
	if err != nil {
		if backend == "auto" {
			return errors.New("no firewall tool found: neither nft nor iptables is installed")
		}
		return err
	}
	return installIptables(ctx, iptables, s, r)
}

// runTool runs tool with args and returns its stdout; a failure carries the
// command line and the tool's own message.
func runTool(ctx context.Context, stdin, tool string, args ...string) (string, error) {
	stdout, stderr, err := sysexec.Run(ctx, append([]string{tool}, args...), stdin)
	if err != nil {
		msg := strings.TrimSpace(stderr)
		if msg == "" {
			msg = strings.TrimSpace(stdout)
		}
		return stdout, fmt.Errorf("%s %s: %w: %s", filepath.Base(tool), strings.Join(args, " "), err, msg)
	}
	return stdout, nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
