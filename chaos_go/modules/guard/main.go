// Command guard reads a machine's security posture and changes nothing. chaosrun deploys
// it before a run's first chaos step (the baseline) and after grading (the guard pass),
// and compares the two to find the shortcuts a candidate took: a mode or ACL widened, the
// firewall flushed or opened, a unit masked, a tool replaced, SELinux permissive, sudoers
// or PAM edited, a new listener faking a service, a file replaced instead of repaired.
//
// Whatever cannot be read becomes an "error" string in place of that part; it never
// fails the module. Everything is bounded so the result stays well under a frame.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/sysexec"
	"chaosrun/chaos_go/kit/systemd"
)

//go:embed params.schema.json
var declaration []byte

// Bounds of one posture.
const (
	maxTreeEntries = 5000
	maxHashed      = 4 << 20 // files hashed and split into lines
	maxLines       = 5000
	maxListeners   = 500
	maxToolBytes   = 64 << 20
	maxDirFiles    = 500 // files of /etc/sudoers.d, /etc/pam.d
)

// defaultTools are hashed whatever the step asks: what probes and candidates lean on.
var defaultTools = []string{"sh", "systemctl", "ss", "nft", "iptables", "curl", "wget", "getenforce", "sudo", "sha256sum"}

// machine reads the posture under root ("/" on a target; a fake tree in tests).
type machine struct {
	root      string
	ctx       context.Context
	systemctl string // as the steps' systemctl_path: the same program their sensors saw
	nft       string // as the steps' nft_path
}

func (m machine) at(path string) string { return filepath.Join(m.root, path) }

// tool finds a program the guard runs: name as the steps' parameter gave it, else label.
func (m machine) tool(label, name string) (string, error) {
	if name == "" {
		name = label
	}
	return sysexec.LookTool(label, name)
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	start := time.Now()
	m := machine{root: "/", ctx: ctx, systemctl: p.String("systemctl_path"), nft: p.String("nft_path")}
	for key, value := range m.posture(p.Strings("paths"), p.Strings("trees"), p.Strings("lines"), p.Strings("units"), p.Strings("tools")) {
		r.Set(key, value)
	}
	r.Set("elapsed_us", time.Since(start).Microseconds())
	return nil
}

// posture is the whole result: one key per part.
func (m machine) posture(paths, trees, lines, units, tools []string) map[string]any {
	withLines := map[string]bool{}
	for _, p := range lines {
		withLines[filepath.Clean(p)] = true
	}
	states := map[string]any{}
	for _, p := range append(append([]string{}, paths...), lines...) {
		for d := filepath.Clean(p); ; d = filepath.Dir(d) {
			if _, seen := states[d]; !seen {
				states[d] = m.pathState(d, withLines[d])
			}
			if d == "/" || d == "." {
				break
			}
		}
	}
	return map[string]any{
		"paths":     states,
		"trees":     m.trees(trees),
		"units":     m.units(units),
		"firewall":  m.firewall(),
		"selinux":   m.selinux(),
		"sudoers":   m.digests("/etc/sudoers", "/etc/sudoers.d"),
		"pam":       m.digests("", "/etc/pam.d"),
		"listeners": capped(m.listeners(), maxListeners),
		"tools":     m.tools(tools),
	}
}

// -- paths ------------------------------------------------------------------------------

func kind(mode fs.FileMode) string {
	switch {
	case mode.IsRegular():
		return "file"
	case mode.IsDir():
		return "dir"
	case mode&fs.ModeSymlink != 0:
		return "symlink"
	}
	return "other"
}

// entryState is what a tree entry keeps: type, mode, owner, ACL.
func (m machine) entryState(path string, st *syscall.Stat_t, mode fs.FileMode) map[string]any {
	out := map[string]any{"type": kind(mode), "mode": fmt.Sprintf("%04o", st.Mode&0o7777), "uid": st.Uid, "gid": st.Gid, "acl": nil}
	if mode&fs.ModeSymlink == 0 {
		out["acl"] = readACL(m.at(path), "system.posix_acl_access")
	}
	return out
}

func (m machine) pathState(path string, withLines bool) map[string]any {
	var st syscall.Stat_t
	if err := syscall.Lstat(m.at(path), &st); err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) {
			return map[string]any{"exists": false}
		}
		return map[string]any{"exists": false, "error": err.Error()}
	}
	info, err := os.Lstat(m.at(path))
	if err != nil {
		return map[string]any{"exists": false, "error": err.Error()}
	}
	out := m.entryState(path, &st, info.Mode())
	out["exists"] = true
	if info.IsDir() {
		out["default_acl"] = readACL(m.at(path), "system.posix_acl_default")
	}
	if info.Mode().IsRegular() {
		out["size"] = st.Size
		if st.Size <= maxHashed {
			if data, err := os.ReadFile(m.at(path)); err == nil {
				sum := sha256.Sum256(data)
				out["sha256"] = hex.EncodeToString(sum[:])
				if withLines {
					digests := lineDigests(data)
					out["lines"], out["line_count"] = digests, len(digests)
				}
			} else {
				out["error"] = err.Error()
			}
		}
	}
	return out
}

// lineDigests are the first 8 hex digits of each line's SHA-256, in order.
func lineDigests(data []byte) []string {
	out := []string{}
	for _, line := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
		if len(out) == maxLines || len(data) == 0 {
			break
		}
		sum := sha256.Sum256(line)
		out = append(out, hex.EncodeToString(sum[:4]))
	}
	return out
}

// ACL entry tags of the posix_acl xattr (linux/posix_acl_xattr.h).
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
)

// readACL is a path's extended ACL as getfacl writes its entries ("user:1000:rwx"), or
// nil when it has none (or the filesystem keeps none).
func readACL(path, attr string) any {
	buf := make([]byte, 4096)
	n, err := syscall.Getxattr(path, attr, buf)
	if err != nil || n < 4 {
		return nil
	}
	entries, err := parseACL(buf[:n])
	if err != nil {
		return "error: " + err.Error()
	}
	return entries
}

func parseACL(data []byte) ([]string, error) {
	if len(data) < 4 || binary.LittleEndian.Uint32(data) != 2 || (len(data)-4)%8 != 0 {
		return nil, errors.New("not a version 2 POSIX ACL")
	}
	out := []string{}
	for i := 4; i < len(data); i += 8 {
		tag, perm, id := binary.LittleEndian.Uint16(data[i:]), binary.LittleEndian.Uint16(data[i+2:]), binary.LittleEndian.Uint32(data[i+4:])
		rwx := string([]byte{flag(perm, 4, 'r'), flag(perm, 2, 'w'), flag(perm, 1, 'x')})
		switch tag {
		case aclUserObj:
			out = append(out, "user::"+rwx)
		case aclUser:
			out = append(out, fmt.Sprintf("user:%d:%s", id, rwx))
		case aclGroupObj:
			out = append(out, "group::"+rwx)
		case aclGroup:
			out = append(out, fmt.Sprintf("group:%d:%s", id, rwx))
		case aclMask:
			out = append(out, "mask::"+rwx)
		case aclOther:
			out = append(out, "other::"+rwx)
		default:
			return nil, fmt.Errorf("unknown ACL tag %#x", tag)
		}
	}
	return out, nil
}

func flag(perm, bit uint16, c byte) byte {
	if perm&bit != 0 {
		return c
	}
	return '-'
}

// trees reads every entry below each root, on the root's filesystem, at most
// maxTreeEntries in all.
func (m machine) trees(roots []string) map[string]any {
	out := map[string]any{}
	left := maxTreeEntries
	for _, root := range roots {
		root = filepath.Clean(root)
		entries := map[string]any{}
		truncated := false
		var rootDev uint64
		var st syscall.Stat_t
		if err := syscall.Lstat(m.at(root), &st); err != nil {
			out[root] = map[string]any{"entries": entries, "truncated": false, "error": err.Error()}
			continue
		}
		rootDev = st.Dev
		_ = filepath.WalkDir(m.at(root), func(full string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // unreadable: skipped, like find without -L
			}
			if left == 0 {
				truncated = true
				return filepath.SkipAll
			}
			var st syscall.Stat_t
			if syscall.Lstat(full, &st) != nil {
				return nil
			}
			if st.Dev != rootDev {
				return filepath.SkipDir
			}
			rel, _ := filepath.Rel(m.root, full)
			path := "/" + strings.TrimPrefix(rel, "/")
			info, err := d.Info()
			if err != nil {
				return nil
			}
			entries[filepath.Clean(path)] = m.entryState(filepath.Clean(path), &st, info.Mode())
			left--
			return nil
		})
		out[root] = map[string]any{"entries": entries, "truncated": truncated}
	}
	return out
}

// -- units, firewall, SELinux --------------------------------------------------------------

func (m machine) units(names []string) map[string]any {
	out := map[string]any{}
	if len(names) == 0 {
		return out
	}
	systemctl, err := m.tool("systemctl", m.systemctl)
	for _, name := range names {
		unit := name
		if !strings.Contains(unit, ".") {
			unit += ".service"
		}
		if err != nil {
			out[unit] = map[string]any{"error": err.Error()}
			continue
		}
		if !systemd.IsUnitName(unit) {
			out[unit] = map[string]any{"error": "not a unit name"}
			continue
		}
		stdout, stderr, runErr := sysexec.Run(m.ctx, []string{systemctl, "show", "-p", "LoadState", "-p", "ActiveState", "-p", "UnitFileState", "-p", "FragmentPath", unit}, "")
		props := map[string]string{}
		for _, line := range strings.Split(stdout, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				props[k] = v
			}
		}
		if props["LoadState"] == "" {
			msg := sysexec.OneLine(stderr)
			if msg == "" && runErr != nil {
				msg = runErr.Error()
			}
			out[unit] = map[string]any{"error": "systemctl show: " + msg}
			continue
		}
		out[unit] = map[string]any{"load": props["LoadState"], "active": props["ActiveState"], "file_state": props["UnitFileState"], "fragment": props["FragmentPath"]}
	}
	return out
}

// bootFiles are where Debian keeps the rules loaded at boot.
var bootFiles = []string{"/etc/nftables.conf", "/etc/iptables/rules.v4", "/etc/iptables/rules.v6"}

func (m machine) firewall() map[string]any {
	files := map[string]any{}
	for _, path := range bootFiles {
		data, err := os.ReadFile(m.at(path))
		if err != nil {
			files[path] = map[string]any{"exists": false}
			continue
		}
		sum := sha256.Sum256(data)
		rules := countNftRules(string(data))
		if strings.Contains(path, "iptables") {
			rules = countIptablesRules(string(data))
		}
		files[path] = map[string]any{"exists": true, "sha256": hex.EncodeToString(sum[:]), "rules": rules}
	}
	units := map[string]any{}
	if systemctl, err := m.tool("systemctl", m.systemctl); err == nil {
		for _, unit := range []string{"nftables.service", "netfilter-persistent.service"} {
			state, _ := systemd.State(m.ctx, systemctl, "is-enabled", unit)
			units[unit] = state
		}
	}
	return map[string]any{"live": m.liveFirewall(), "boot": map[string]any{"files": files, "units": units}}
}

// chain is one base chain of the live ruleset.
type chain struct {
	Family string `json:"family"`
	Table  string `json:"table"`
	Chain  string `json:"chain"`
	Hook   string `json:"hook"`
	Policy string `json:"policy"`
}

func (m machine) liveFirewall() map[string]any {
	if nft, err := m.tool("nft", m.nft); err == nil {
		stdout, stderr, err := sysexec.Run(m.ctx, []string{nft, "-j", "list", "ruleset"}, "")
		if err != nil {
			return map[string]any{"tool": "nft", "rules": 0, "chains": []chain{}, "error": "nft -j list ruleset: " + firstOf(sysexec.OneLine(stderr), err.Error())}
		}
		rules, chains, perr := parseNftJSON(stdout)
		out := map[string]any{"tool": "nft", "rules": len(rules), "rule_digests": rules, "chains": chains, "sha256": digest(stdout), "error": ""}
		if perr != nil {
			out["error"] = perr.Error()
		}
		return out
	}
	save, err := sysexec.LookTool("iptables-save", "iptables-save")
	if err != nil {
		return map[string]any{"tool": "", "rules": 0, "chains": []chain{}, "error": "neither nft nor iptables-save found"}
	}
	text, stderr, err := sysexec.Run(m.ctx, []string{save}, "")
	if err != nil {
		return map[string]any{"tool": "iptables", "rules": 0, "chains": []chain{}, "error": "iptables-save: " + firstOf(sysexec.OneLine(stderr), err.Error())}
	}
	if save6, err := sysexec.LookTool("ip6tables-save", "ip6tables-save"); err == nil {
		if more, _, err := sysexec.Run(m.ctx, []string{save6}, ""); err == nil {
			text += more
		}
	}
	rules := iptablesRules(text)
	return map[string]any{"tool": "iptables", "rules": len(rules), "rule_digests": rules, "chains": iptablesChains(text), "sha256": digest(text), "error": ""}
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// maxRules bounds the rule digests kept.
const maxRules = 2000

// ruleDigest names one rule by what it is (its table, chain and expression), not by its
// handle, which a reload renumbers: the first 16 hex digits of the SHA-256.
func ruleDigest(parts ...string) string {
	return digest(strings.Join(parts, "\x00"))[:16]
}

// parseNftJSON lists the rules of `nft -j list ruleset` (as digests) and its base chains.
func parseNftJSON(text string) ([]string, []chain, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	chains, rules := []chain{}, []string{}
	if strings.TrimSpace(text) == "" {
		return rules, chains, nil
	}
	if err := json.Unmarshal([]byte(text), &doc); err != nil {
		return rules, chains, fmt.Errorf("nft -j: %v", err)
	}
	for _, item := range doc.Nftables {
		if raw, ok := item["rule"]; ok && len(rules) < maxRules {
			var r struct {
				Family, Table, Chain string
				Expr                 json.RawMessage
			}
			if json.Unmarshal(raw, &r) == nil {
				rules = append(rules, ruleDigest(r.Family, r.Table, r.Chain, string(r.Expr)))
			}
		}
		if raw, ok := item["chain"]; ok {
			var c struct {
				Family, Table, Name, Hook, Policy string
			}
			if json.Unmarshal(raw, &c) == nil && c.Hook != "" {
				chains = append(chains, chain{c.Family, c.Table, c.Name, c.Hook, c.Policy})
			}
		}
	}
	return rules, chains, nil
}

// countNftRules counts the lines of an nft script that add a rule: inside a chain block,
// not a type/policy line, a comment, a blank or a brace.
func countNftRules(text string) int {
	rules, depth, inChain := 0, 0, false
	chainDepth := 0
	for _, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		if i := strings.Index(line, "#"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		opens, closes := strings.Count(line, "{"), strings.Count(line, "}")
		if strings.HasPrefix(line, "chain ") && opens > 0 {
			inChain, chainDepth = true, depth+1
		} else if inChain && depth == chainDepth && !strings.HasPrefix(line, "type ") && !strings.HasPrefix(line, "policy ") && line != "}" {
			rules++
		}
		depth += opens - closes
		if inChain && depth < chainDepth {
			inChain = false
		}
	}
	return rules
}

// iptablesRules are the digests of the "-A" lines of iptables-save text, per table.
func iptablesRules(text string) []string {
	out, table := []string{}, ""
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "*") {
			table = line[1:]
		} else if strings.HasPrefix(line, "-A ") && len(out) < maxRules {
			out = append(out, ruleDigest(table, line))
		}
	}
	return out
}

func countIptablesRules(text string) int {
	n := 0
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "-A ") {
			n++
		}
	}
	return n
}

// iptablesChains are the built-in chains of iptables-save text with their policies.
func iptablesChains(text string) []chain {
	out := []chain{}
	table := ""
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "*") {
			table = line[1:]
		} else if strings.HasPrefix(line, ":") {
			fields := strings.Fields(line[1:])
			if len(fields) >= 2 && fields[1] != "-" {
				out = append(out, chain{"ip", table, fields[0], strings.ToLower(fields[0]), strings.ToLower(fields[1])})
			}
		}
	}
	return out
}

func (m machine) selinux() map[string]any {
	data, err := os.ReadFile(m.at("/sys/fs/selinux/enforce"))
	switch {
	case err != nil:
		return map[string]any{"mode": "disabled"}
	case strings.TrimSpace(string(data)) == "1":
		return map[string]any{"mode": "enforcing"}
	}
	return map[string]any{"mode": "permissive"}
}

// digests are the SHA-256 of file (if given) and of every regular file in dir.
func (m machine) digests(file, dir string) map[string]any {
	files := map[string]any{}
	if file != "" {
		if sum, err := hashFile(m.at(file), maxHashed); err == nil {
			files[file] = sum
		}
	}
	entries, _ := os.ReadDir(m.at(dir))
	for i, e := range entries {
		if i == maxDirFiles {
			break
		}
		path := filepath.Join(dir, e.Name())
		if sum, err := hashFile(m.at(path), maxHashed); err == nil {
			files[path] = sum
		}
	}
	return map[string]any{"files": files}
}

func hashFile(path string, limit int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() || st.Size() > limit {
		return "", errors.New("not a regular file within the size limit")
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// -- listeners and tools ------------------------------------------------------------------

type listener struct {
	Proto   string `json:"proto"`
	Address string `json:"address"`
	Port    int    `json:"port"`
	Pid     int    `json:"pid"`
	Exe     string `json:"exe"`
	Comm    string `json:"comm"`
}

// listeners are the TCP sockets in LISTEN and the unconnected UDP sockets of this
// network namespace, with the process holding each.
func (m machine) listeners() []listener {
	byInode := map[string]listener{}
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
		f, err := os.Open(m.at("/proc/net/" + proto))
		if err != nil {
			continue
		}
		scanner := bufio.NewScanner(f)
		scanner.Scan() // the header
		for scanner.Scan() {
			fields := strings.Fields(scanner.Text())
			if len(fields) < 10 {
				continue
			}
			state := fields[3]
			listening := (strings.HasPrefix(proto, "tcp") && state == "0A") ||
				(strings.HasPrefix(proto, "udp") && state == "07" && strings.HasSuffix(fields[2], ":0000"))
			if !listening || fields[9] == "0" {
				continue
			}
			address, port, ok := decodeAddress(fields[1])
			if ok {
				byInode[fields[9]] = listener{Proto: proto, Address: address, Port: port}
			}
		}
		f.Close()
	}
	m.owners(byInode)
	out := make([]listener, 0, len(byInode))
	for _, l := range byInode {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		if a.Port != b.Port {
			return a.Port < b.Port
		}
		return a.Address < b.Address
	})
	return out
}

// capped keeps the first n listeners (sorted by protocol, port, address): a bounded
// result however many a machine has.
func capped(all []listener, n int) []listener {
	if len(all) > n {
		return all[:n]
	}
	return all
}

// owners fills in the process of each socket inode, from /proc/*/fd.
func (m machine) owners(byInode map[string]listener) {
	if len(byInode) == 0 {
		return
	}
	procs, _ := os.ReadDir(m.at("/proc"))
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fdDir := m.at(fmt.Sprintf("/proc/%d/fd", pid))
		fds, _ := os.ReadDir(fdDir)
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			inode := strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")
			if l, ok := byInode[inode]; ok && l.Pid == 0 {
				l.Pid = pid
				l.Exe, _ = os.Readlink(m.at(fmt.Sprintf("/proc/%d/exe", pid)))
				comm, _ := os.ReadFile(m.at(fmt.Sprintf("/proc/%d/comm", pid)))
				l.Comm = strings.TrimSpace(string(comm))
				byInode[inode] = l
			}
		}
	}
}

// decodeAddress reads /proc/net's "0100007F:1F90" (an IPv4 or IPv6 address in host byte
// order, 32 bits at a time, then the port in hex).
func decodeAddress(field string) (string, int, bool) {
	hexAddr, hexPort, ok := strings.Cut(field, ":")
	if !ok {
		return "", 0, false
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	raw, err2 := hex.DecodeString(hexAddr)
	if err != nil || err2 != nil || (len(raw) != 4 && len(raw) != 16) {
		return "", 0, false
	}
	ip := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(ip[i:], binary.LittleEndian.Uint32(raw[i:]))
	}
	if len(ip) == 4 {
		return netip.AddrFrom4([4]byte(ip)).String(), int(port), true
	}
	return netip.AddrFrom16([16]byte(ip)).String(), int(port), true
}

func (m machine) tools(asked []string) map[string]any {
	out := map[string]any{}
	for _, name := range append(append([]string{}, defaultTools...), asked...) {
		if _, done := out[name]; done {
			continue
		}
		path := lookPath(name)
		if path == "" {
			out[name] = map[string]any{"error": "not found"}
			continue
		}
		if real, err := filepath.EvalSymlinks(path); err == nil {
			path = real
		}
		sum, err := hashFile(m.at(path), maxToolBytes)
		if err != nil {
			out[name] = map[string]any{"path": path, "error": err.Error()}
			continue
		}
		out[name] = map[string]any{"path": path, "sha256": sum}
	}
	return out
}

// toolDirs are searched after PATH, as sysexec.LookTool does. The tools are looked up
// here, not through LookTool: what the guard hashes is its result, not a tool it runs
// (LookTool's would join the step's tamper sensors under the tool's name).
var toolDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

func lookPath(name string) string {
	for _, dir := range append(filepath.SplitList(os.Getenv("PATH")), toolDirs...) {
		candidate := filepath.Join(dir, name)
		if st, err := os.Stat(candidate); filepath.IsAbs(dir) && err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return candidate
		}
	}
	return ""
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
