// Command block_port adds a firewall rule that drops or rejects traffic to one port.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/sysexec"
	"chaosrun/chaos_go/kit/systemd"
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
func installIptables(ctx context.Context, iptables string, s blockSpec, r *kit.Report) (added []string, err error) {
	tools := []string{iptables}
	if ip6, err := sysexec.LookTool("ip6tables", "ip6tables"); err == nil {
		tools = append(tools, ip6)
	}
	for i, tool := range tools {
		_, checkErr := runTool(ctx, "", tool, s.iptablesArgs("-C")...)
		if _, err := runTool(ctx, "", tool, s.iptablesArgs("-I")...); err != nil {
			if i == 0 {
				return nil, fmt.Errorf("insert iptables rule: %w", err)
			}
			r.Warnf("ip6tables rule not added: %v", err)
			continue
		}
		name := filepath.Base(tool)
		added = append(added, name)
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
	return added, nil
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	s := specFromParams(p)
	backend := p.String("backend")
	persist := p.Bool("persist")
	r.Set("persist_files", []string{})
	if backend == "auto" || backend == "nft" {
		nft, nftErr := sysexec.LookTool("nft", "nft")
		if backend == "auto" && persist && nftErr == nil {
			backend = bootBackend(ctx, p)
		}
		if nftErr == nil && backend != "iptables" {
			return runNft(ctx, p, nft, s, r)
		}
		if backend == "nft" {
			return nftErr
		}
	}
	iptables, err := sysexec.LookTool("iptables", "iptables")
	if err != nil {
		if backend == "auto" {
			return errors.New("no firewall tool found: neither nft nor iptables is installed")
		}
		return err
	}
	return runIptables(ctx, p, iptables, s, r)
}

// runNft installs the rule with nft and, with persist, in the boot configuration.
func runNft(ctx context.Context, p kit.Params, nft string, s blockSpec, r *kit.Report) error {
	var boot *bootPlan
	if p.Bool("persist") {
		var err error
		if boot, err = planNftBoot(ctx, p, s); err != nil {
			return err
		}
		boot.checks = [][]string{{nft, "-c", "-f", boot.conf}}
	}
	if err := installNft(ctx, nft, s, r); err != nil || boot == nil {
		return err
	}
	return boot.apply(ctx, r)
}

// runIptables installs the rule with iptables (and ip6tables) and, with persist, in the
// files iptables-persistent loads at boot.
func runIptables(ctx context.Context, p kit.Params, iptables string, s blockSpec, r *kit.Report) error {
	var boot *bootPlan
	var files map[string]*kit.LineEdit
	if p.Bool("persist") {
		var err error
		if boot, files, err = planIptablesBoot(ctx, p, s); err != nil {
			return err
		}
	}
	added, err := installIptables(ctx, iptables, s, r)
	if err != nil || boot == nil {
		return err
	}
	for _, tool := range added {
		e := files[tool]
		boot.edits = append(boot.edits, e)
		if restore, err := sysexec.LookTool(tool+"-restore", tool+"-restore"); err == nil {
			boot.checks = append(boot.checks, []string{restore, "--test", e.Path})
		} else {
			r.Warnf("persist: %s not checked: %v", e.Path, err)
		}
	}
	return boot.apply(ctx, r)
}

// Persistence (persist: true). On Debian, nftables.service runs `nft -f
// /etc/nftables.conf` at boot, and netfilter-persistent.service (iptables-persistent)
// runs iptables-restore on /etc/iptables/rules.v4 and ip6tables-restore on rules.v6.
const (
	nftUnit      = "nftables.service"
	iptablesUnit = "netfilter-persistent.service"
	// nftDropIn, under etc_dir, holds the persisted tables; nftables.conf includes it.
	nftDropIn = "nftables.d/local.nft"
)

// bootBackend is the backend `auto` means with persist: the one whose boot loader is
// enabled (nft when both or neither are).
func bootBackend(ctx context.Context, p kit.Params) string {
	systemctl, err := sysexec.LookTool("systemctl", p.String("systemctl_path"))
	if err != nil {
		return "auto"
	}
	if state, _ := systemd.State(ctx, systemctl, "is-enabled", nftUnit); state == "enabled" {
		return "nft"
	}
	if _, err := sysexec.LookTool("iptables", "iptables"); err != nil {
		return "auto"
	}
	if state, _ := systemd.State(ctx, systemctl, "is-enabled", iptablesUnit); state == "enabled" {
		return "iptables"
	}
	return "auto"
}

// bootPlan is what persist changes besides the live rule: lines added to boot files,
// checked by commands (nft -c, iptables-restore --test), and a unit to enable.
type bootPlan struct {
	unit, systemctl string
	enabled         string // `systemctl is-enabled` before
	conf            string // nft: the file nftables.service loads
	edits           []*kit.LineEdit
	checks          [][]string
}

// bootUnit finds systemctl and checks that unit loads the rules at boot or can be
// enabled to; install says what to install when the unit is missing.
func bootUnit(ctx context.Context, p kit.Params, unit, install string) (systemctl, enabled string, err error) {
	systemctl, err = sysexec.LookTool("systemctl", p.String("systemctl_path"))
	if err != nil {
		return "", "", fmt.Errorf("persist: %v (it enables %s, which loads the rules at boot)", err, unit)
	}
	state, reason := systemd.State(ctx, systemctl, "is-enabled", unit)
	switch state {
	case "enabled", "disabled", "enabled-runtime":
		return systemctl, state, nil
	case "masked", "masked-runtime":
		return "", "", fmt.Errorf("persist: %s is masked, so it cannot load the rule at boot; unmask it, or set persist: false", unit)
	}
	if reason != "" {
		reason = " (" + reason + ")"
	}
	return "", "", fmt.Errorf("persist: nothing would load the rule at boot: systemctl is-enabled %s says %q%s; %s, or set persist: false",
		unit, state, reason, install)
}

// etcPath maps a path under /etc to the same path under etcDir.
func etcPath(etcDir, path string) string {
	if rest, ok := strings.CutPrefix(path, "/etc/"); ok {
		return filepath.Join(etcDir, rest)
	}
	return path
}

// nftConf is the file nftables.service loads: the -f argument of its ExecStart when
// systemctl shows one, else nftables.conf.
func nftConf(ctx context.Context, systemctl, etcDir string) string {
	out, _, err := sysexec.Run(ctx, []string{systemctl, "show", "-p", "ExecStart", "--value", nftUnit}, "")
	if i := strings.Index(out, "argv[]="); err == nil && i >= 0 {
		argv := out[i+len("argv[]="):]
		if j := strings.Index(argv, " ;"); j >= 0 {
			argv = argv[:j]
		}
		fields := strings.Fields(argv)
		for k, f := range fields {
			path := ""
			switch {
			case (f == "-f" || f == "--file") && k+1 < len(fields):
				path = fields[k+1]
			case strings.HasPrefix(f, "--file="):
				path = strings.TrimPrefix(f, "--file=")
			}
			if filepath.IsAbs(path) {
				return etcPath(etcDir, path)
			}
		}
	}
	return filepath.Join(etcDir, "nftables.conf")
}

var nftInclude = regexp.MustCompile(`^\s*include\s+"([^"]+)"`)

// nftIncludes reports whether the nft script text includes file (by name or glob).
func nftIncludes(text, file, etcDir string) bool {
	for _, line := range strings.Split(text, "\n") {
		m := nftInclude.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		pattern := m[1]
		if !filepath.IsAbs(pattern) {
			pattern = filepath.Join(etcDir, pattern) // nft's default include path is /etc
		} else {
			pattern = etcPath(etcDir, pattern)
		}
		if ok, _ := filepath.Match(pattern, file); ok || pattern == file {
			return true
		}
	}
	return false
}

// nftBlock is the rule as a table in nft's file syntax, to be loaded at boot.
func (s blockSpec) nftBlock() []string {
	return []string{
		fmt.Sprintf("table %s %s {", nftFamily, nftTable),
		fmt.Sprintf("\tchain %s {", s.Direction),
		fmt.Sprintf("\t\ttype filter hook %s priority 0; policy accept;", s.Direction),
		"\t\t" + s.nftRule(),
		"\t}",
		"}",
	}
}

// planNftBoot plans the table appended to etc_dir/nftables.d/local.nft and, unless it is
// included already, an include line appended to the file nftables.service loads.
func planNftBoot(ctx context.Context, p kit.Params, s blockSpec) (*bootPlan, error) {
	etc := p.String("etc_dir")
	systemctl, enabled, err := bootUnit(ctx, p, nftUnit, "install the nftables package")
	if err != nil {
		return nil, err
	}
	b := &bootPlan{unit: nftUnit, systemctl: systemctl, enabled: enabled, conf: nftConf(ctx, systemctl, etc)}
	dropIn := filepath.Join(etc, nftDropIn)
	block := s.nftBlock()
	if old, err := os.ReadFile(dropIn); err == nil && strings.TrimSpace(string(old)) != "" {
		block = append([]string{""}, block...)
	}
	e, err := kit.PlanLines(dropIn, -1, block, 0o644)
	if err != nil {
		return nil, fmt.Errorf("persist: %w", err)
	}
	b.edits = append(b.edits, e)
	conf, err := os.ReadFile(b.conf)
	include := `include "` + dropIn + `"`
	var lines []string
	switch {
	case errors.Is(err, fs.ErrNotExist):
		lines = []string{"#!/usr/sbin/nft -f", "", "flush ruleset", "", include}
	case err != nil:
		return nil, fmt.Errorf("persist: read %s: %w", b.conf, err)
	case !nftIncludes(string(conf), dropIn, etc):
		lines = []string{include}
	}
	if lines != nil {
		e, err := kit.PlanLines(b.conf, -1, lines, 0o755)
		if err != nil {
			return nil, fmt.Errorf("persist: %w", err)
		}
		b.edits = append(b.edits, e)
	}
	return b, nil
}

// planIptablesBoot plans the rule inserted into rules.v4 (for iptables) and rules.v6 (for
// ip6tables) under etc_dir/iptables, first in the *filter table.
func planIptablesBoot(ctx context.Context, p kit.Params, s blockSpec) (*bootPlan, map[string]*kit.LineEdit, error) {
	systemctl, enabled, err := bootUnit(ctx, p, iptablesUnit, "install iptables-persistent")
	if err != nil {
		return nil, nil, err
	}
	dir := filepath.Join(p.String("etc_dir"), "iptables")
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, nil, fmt.Errorf("persist: nothing would load the rule at boot: %s does not exist "+
			"(netfilter-persistent loads rules.v4 and rules.v6 from it through iptables-persistent); install iptables-persistent, or set persist: false", dir)
	}
	rule := strings.Join(s.iptablesArgs("-A")[1:], " ")
	files := map[string]*kit.LineEdit{}
	for tool, name := range map[string]string{"iptables": "rules.v4", "ip6tables": "rules.v6"} {
		e, err := planRulesFile(filepath.Join(dir, name), rule)
		if err != nil {
			return nil, nil, fmt.Errorf("persist: %w", err)
		}
		files[tool] = e
	}
	return &bootPlan{unit: iptablesUnit, systemctl: systemctl, enabled: enabled}, files, nil
}

// planRulesFile plans rule as the first rule of the *filter table of an iptables-save
// file (after its chain lines), or a *filter table of its own appended when it has none.
func planRulesFile(path, rule string) (*kit.LineEdit, error) {
	text, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	at := -1
	if len(text) > 0 {
		inFilter := false
		for i, line := range strings.Split(strings.TrimSuffix(string(text), "\n"), "\n") {
			t := strings.TrimSpace(line)
			if !inFilter {
				if t == "*filter" {
					inFilter, at = true, i+1
				}
				continue
			}
			if t == "COMMIT" || strings.HasPrefix(t, "*") {
				break
			}
			if strings.HasPrefix(t, ":") {
				at = i + 1
			}
		}
	}
	if at >= 0 {
		return kit.PlanLines(path, at, []string{rule}, 0o640)
	}
	table := []string{"*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", rule, "COMMIT"}
	return kit.PlanLines(path, -1, table, 0o640)
}

// apply writes the planned boot files, checks them, records them, and enables the unit.
// A check that fails puts the files back as they were: a boot configuration that no
// longer loads would drop every rule at the next boot.
func (b *bootPlan) apply(ctx context.Context, r *kit.Report) error {
	for i, e := range b.edits {
		if err := e.Apply(); err != nil {
			b.revert(r, b.edits[:i+1])
			return fmt.Errorf("persist: %w", err)
		}
	}
	for _, argv := range b.checks {
		if _, stderr, err := sysexec.Run(ctx, argv, ""); err != nil {
			b.revert(r, b.edits)
			return fmt.Errorf("persist: %s %s fails with the rule added (%v: %s); the boot files are put back, the live rule stays",
				filepath.Base(argv[0]), strings.Join(argv[1:], " "), err, sysexec.OneLine(stderr))
		}
	}
	files := []string{}
	for _, e := range b.edits {
		r.Changed(e.Change())
		files = append(files, e.Path)
		r.Logf("persist: %s: added %d line(s) at line %d", e.Path, len(e.Lines), e.First)
	}
	r.Set("persist_files", files)
	if b.enabled == "enabled" {
		r.Logf("persist: %s is enabled already", b.unit)
		return nil
	}
	argv := []string{b.systemctl, "enable", b.unit}
	if _, stderr, err := sysexec.Run(ctx, argv, ""); err != nil {
		return fmt.Errorf("persist: systemctl enable %s: %w: %s", b.unit, err, sysexec.OneLine(stderr))
	}
	now, _ := systemd.State(ctx, b.systemctl, "is-enabled", b.unit)
	undo := [][]string{{b.systemctl, "disable", b.unit}}
	if b.enabled == "enabled-runtime" {
		undo = append(undo, []string{b.systemctl, "enable", "--runtime", b.unit})
	}
	r.Changed(kit.Change{
		Action: "systemctl_enable",
		Path:   b.unit,
		Before: map[string]any{"enabled": b.enabled},
		After:  map[string]any{"enabled": now},
		Detail: map[string]any{"argv": argv, "undo": undo},
	})
	r.Logf("persist: systemctl enable %s: %s -> %s", b.unit, b.enabled, now)
	if now != "enabled" {
		return fmt.Errorf("persist: systemctl enable %s: is-enabled says %q afterwards; want enabled", b.unit, now)
	}
	return nil
}

// revert puts back the boot files of edits, newest first; what it cannot is a warning.
func (b *bootPlan) revert(r *kit.Report, edits []*kit.LineEdit) {
	for i := len(edits) - 1; i >= 0; i-- {
		if err := edits[i].Revert(); err != nil {
			r.Warnf("persist: could not put %s back: %v", edits[i].Path, err)
		}
	}
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
