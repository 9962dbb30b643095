// Command firewall judges whether the nftables ruleset, live and at boot, lets a new
// connection to a port in.
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/sysexec"
	"chaosrun/chaos_go/kit/systemd"
)

//go:embed params.schema.json
var declaration []byte

// packet is the connection judged: a new one, from another machine, to port.
type packet struct {
	proto string
	port  float64
}

// tri is a match's answer: no, yes, or cannot tell from a port.
type tri int

const (
	no tri = iota
	yes
	maybe
)

type chain struct {
	family, table, name, hook, policy string
	prio                              float64
	rules                             []rule
}

type rule struct {
	handle float64
	expr   []map[string]any
}

type ruleset struct {
	chains map[string]*chain // "family table name"
	bases  []*chain
}

func chainKey(family, table, name string) string { return family + " " + table + " " + name }

// parseRuleset reads `nft -j list ruleset`.
func parseRuleset(data []byte) (*ruleset, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("nft -j: %w", err)
	}
	rs := &ruleset{chains: map[string]*chain{}}
	for _, obj := range doc.Nftables {
		if raw, ok := obj["chain"]; ok {
			var c struct {
				Family, Table, Name, Hook, Policy string
				Prio                              any
			}
			if err := json.Unmarshal(raw, &c); err != nil {
				return nil, err
			}
			prio, _ := c.Prio.(float64) // a named priority ("filter") is 0 in the filter table
			ch := &chain{family: c.Family, table: c.Table, name: c.Name, hook: c.Hook, policy: c.Policy, prio: prio}
			rs.chains[chainKey(c.Family, c.Table, c.Name)] = ch
		}
		if raw, ok := obj["rule"]; ok {
			var r struct {
				Family, Table, Chain string
				Handle               float64
				Expr                 []map[string]any
			}
			if err := json.Unmarshal(raw, &r); err != nil {
				return nil, err
			}
			if ch := rs.chains[chainKey(r.Family, r.Table, r.Chain)]; ch != nil {
				ch.rules = append(ch.rules, rule{handle: r.Handle, expr: r.Expr})
			}
		}
	}
	for _, ch := range rs.chains {
		if ch.hook == "input" && (ch.family == "inet" || ch.family == "ip" || ch.family == "ip6") {
			rs.bases = append(rs.bases, ch)
		}
	}
	sort.Slice(rs.bases, func(i, j int) bool {
		if rs.bases[i].prio != rs.bases[j].prio {
			return rs.bases[i].prio < rs.bases[j].prio
		}
		return chainKey(rs.bases[i].family, rs.bases[i].table, rs.bases[i].name) < chainKey(rs.bases[j].family, rs.bases[j].table, rs.bases[j].name)
	})
	return rs, nil
}

// inRight says whether v is, or is in, an nft right-hand side: a value, a set, a range,
// a prefix. A named set ("@name") or anything else cannot be told.
func inRight(v any, right any) tri {
	switch r := right.(type) {
	case float64, string:
		if s, ok := r.(string); ok && strings.HasPrefix(s, "@") {
			return maybe
		}
		return map[bool]tri{true: yes, false: no}[r == v]
	case []any:
		out := no
		for _, item := range r {
			switch inRight(v, item) {
			case yes:
				return yes
			case maybe:
				out = maybe
			}
		}
		return out
	case map[string]any:
		if set, ok := r["set"]; ok {
			return inRight(v, set)
		}
		if rng, ok := r["range"].([]any); ok && len(rng) == 2 {
			lo, ok1 := rng[0].(float64)
			hi, ok2 := rng[1].(float64)
			n, ok3 := v.(float64)
			if ok1 && ok2 && ok3 {
				return map[bool]tri{true: yes, false: no}[lo <= n && n <= hi]
			}
		}
	}
	return maybe
}

func withOp(op string, t tri) tri {
	if t == maybe || op == "==" || op == "in" {
		return t
	}
	if op == "!=" {
		return map[tri]tri{yes: no, no: yes}[t]
	}
	return maybe
}

// matchOf answers one match expression for p, and names what it looks at when it cannot.
func matchOf(m map[string]any, p packet) (tri, string) {
	op, _ := m["op"].(string)
	left, _ := m["left"].(map[string]any)
	right := m["right"]
	if pl, ok := left["payload"].(map[string]any); ok {
		proto, _ := pl["protocol"].(string)
		field, _ := pl["field"].(string)
		switch {
		case field == "dport" && (proto == "th" || proto == p.proto):
			return withOp(op, inRight(p.port, right)), ""
		case field == "dport" || field == "sport":
			if proto != "th" && proto != p.proto && (proto == "tcp" || proto == "udp" || proto == "sctp" || proto == "dccp") {
				return no, "" // the header of another protocol: the packet is not one
			}
		case (proto == "ip" && field == "protocol") || (proto == "ip6" && field == "nexthdr"):
			return withOp(op, inRight(p.proto, right)), ""
		}
		return maybe, proto + " " + field
	}
	if meta, ok := left["meta"].(map[string]any); ok {
		switch key, _ := meta["key"].(string); key {
		case "l4proto":
			return withOp(op, inRight(p.proto, right)), ""
		case "iifname", "iif":
			if right == "lo" {
				return withOp(op, no), "" // it comes from another machine
			}
			return maybe, "meta " + key
		default:
			return maybe, "meta " + key
		}
	}
	if ct, ok := left["ct"].(map[string]any); ok && ct["key"] == "state" {
		return withOp(op, inRight("new", right)), ""
	}
	for k := range left {
		return maybe, k
	}
	return maybe, "?"
}

// outcome is how a chain ends for the packet: a verdict, or "" when it runs off its end
// (policy, or back to the calling chain).
type outcome struct {
	verdict, where string
}

type judge struct {
	rs        *ruleset
	p         packet
	uncertain []string
	depth     int
}

func ruleRef(c *chain, r rule) string {
	return fmt.Sprintf("%s %s %s handle %d", c.family, c.table, c.name, int64(r.handle))
}

// walk runs the packet through chain c; "return" ends c only.
func (j *judge) walk(c *chain) outcome {
	if j.depth++; j.depth > 64 {
		return outcome{}
	}
	defer func() { j.depth-- }()
	for _, r := range c.rules {
		m, unknown := yes, []string{}
		verdict, target := "", ""
		for _, e := range r.expr {
			switch {
			case e["match"] != nil:
				mm, _ := e["match"].(map[string]any)
				t, what := matchOf(mm, j.p)
				if t == no {
					m = no
				} else if t == maybe && m != no {
					m = maybe
					unknown = append(unknown, what)
				}
			case hasKey(e, "accept"):
				verdict = "accept"
			case hasKey(e, "drop"):
				verdict = "drop"
			case hasKey(e, "reject"):
				verdict = "reject"
			case hasKey(e, "return"):
				verdict = "return"
			case hasKey(e, "jump") || hasKey(e, "goto"):
				for _, k := range []string{"jump", "goto"} {
					if t, ok := e[k].(map[string]any); ok {
						verdict, target = k, fmt.Sprint(t["target"])
					}
				}
			case hasKey(e, "vmap") || hasKey(e, "queue"):
				verdict, m = "unknown", maybe
				unknown = append(unknown, "verdict map")
			}
			if m == no {
				break
			}
		}
		if m == no || verdict == "" {
			continue
		}
		if m == maybe {
			if verdict == "drop" || verdict == "reject" || verdict == "jump" || verdict == "goto" || verdict == "unknown" {
				j.uncertain = append(j.uncertain, ruleRef(c, r)+": "+strings.Join(unknown, ", "))
			}
			continue
		}
		switch verdict {
		case "accept", "drop", "reject":
			return outcome{verdict, ruleRef(c, r)}
		case "return":
			return outcome{}
		case "jump", "goto":
			if next := j.rs.chains[chainKey(c.family, c.table, target)]; next != nil {
				if o := j.walk(next); o.verdict != "" || verdict == "goto" {
					return o
				}
			}
		}
	}
	return outcome{}
}

func hasKey(m map[string]any, k string) bool { _, ok := m[k]; return ok }

// judgeRuleset says what the ruleset does with p: its verdict, where it is decided, and
// the rules that may drop it depending on more than the port.
func judgeRuleset(rs *ruleset, p packet) (open bool, verdict, where string, uncertain []string) {
	j := &judge{rs: rs, p: p}
	verdict = "accept"
	for _, c := range rs.bases {
		o := j.walk(c)
		if o.verdict == "" {
			o = outcome{c.policy, fmt.Sprintf("%s %s %s policy", c.family, c.table, c.name)}
			if o.verdict == "" {
				o.verdict = "accept"
			}
		}
		where = o.where
		if o.verdict != "accept" {
			verdict = o.verdict
			break // a drop ends it; an accept hands it to the next base chain
		}
	}
	if j.uncertain == nil {
		j.uncertain = []string{}
	}
	return verdict == "accept", verdict, where, j.uncertain
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	pk := packet{proto: p.String("protocol"), port: float64(p.Int("port"))}
	for k, v := range map[string]any{"open": false, "verdict": "", "rule": "", "uncertain": []string{},
		"boot_enabled": false, "boot_open": false, "boot_verdict": "", "boot_rule": ""} {
		r.Set(k, v)
	}
	var reasons []string
	defer func() { r.Set("reason", strings.Join(reasons, "; ")) }()
	nft, err := sysexec.LookTool("nft", p.String("nft_path"))
	if err != nil {
		reasons = append(reasons, err.Error())
		return nil
	}
	if out, stderr, err := sysexec.Run(ctx, []string{nft, "-j", "list", "ruleset"}, ""); err != nil {
		reasons = append(reasons, "nft -j list ruleset: "+sysexec.OneLine(stderr+" "+err.Error()))
	} else if rs, err := parseRuleset([]byte(out)); err != nil {
		reasons = append(reasons, err.Error())
	} else {
		open, verdict, where, uncertain := judgeRuleset(rs, pk)
		r.Set("open", open)
		r.Set("verdict", verdict)
		r.Set("rule", where)
		r.Set("uncertain", uncertain)
	}
	if !p.Bool("boot") {
		return nil
	}
	enabled := false
	if systemctl, err := sysexec.LookTool("systemctl", p.String("systemctl_path")); err == nil {
		state, _ := systemd.State(ctx, systemctl, "is-enabled", "nftables.service")
		enabled = state == "enabled"
	}
	r.Set("boot_enabled", enabled)
	if !enabled {
		r.Set("boot_open", true)
		r.Set("boot_verdict", "accept")
		return nil
	}
	// The boot file, loaded where it changes nothing: a network namespace of its own.
	unshare, err := sysexec.LookTool("unshare", "unshare")
	if err != nil {
		reasons = append(reasons, err.Error())
		return nil
	}
	script := `"$0" -f "$1" && "$0" -j list ruleset`
	out, stderr, err := sysexec.Run(ctx, []string{unshare, "--net", "--", "/bin/sh", "-c", script, nft, p.String("boot_file")}, "")
	if err != nil {
		reasons = append(reasons, "load "+p.String("boot_file")+": "+sysexec.OneLine(stderr+" "+err.Error()))
		return nil
	}
	rs, err := parseRuleset([]byte(out))
	if err != nil {
		reasons = append(reasons, err.Error())
		return nil
	}
	open, verdict, where, _ := judgeRuleset(rs, pk)
	r.Set("boot_open", open)
	r.Set("boot_verdict", verdict)
	r.Set("boot_rule", where)
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
