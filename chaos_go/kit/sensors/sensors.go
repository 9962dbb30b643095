// Package sensors collects the tamper signals every module reports in its result, before
// its action (docs/protocol.md, "sensors"): who traces the binary or holds its stdin pipe
// or executable, the shell and loader hooks in its environment and on disk, what sshd
// forces on the session, mounts over the places a result depends on, and the hashes of
// the programs the exec wrapper and the module run. Each is a few /proc reads and file
// stats, no tool runs. A sensor that cannot read its source reports "error: ..." in its
// place: sensors never fail the module.
//
// Every path is taken from a Config, so tests point the sensors at a fake /proc/self,
// /proc and /etc in temp dirs.
//
// Cost: Collect walks /proc once and Recheck once more (two walks per step), each walk
// answering both holder questions (stdin pipe, executable) for every process at once; the
// rest is a few dozen file reads. Every byte of code here is in every module binary, which
// has a size budget (docs/module-authoring.md): hence the go:noinline helpers.
package sensors

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	mnt "chaosrun/chaos_go/kit/mounts"
)

// Bounds: sensors stay cheap whatever the target holds.
const (
	MaxProcs     = 5000     // processes scanned for holders
	maxFDs       = 4096     // descriptors looked at per process
	maxHashBytes = 16 << 20 // files larger than this are not hashed
	maxValue     = 200      // bytes kept of an environment value or a config line
	maxLines     = 64       // sshd lines and mounts reported
	maxIncludes  = 64       // sshd_config files read through Include
	maxDepth     = 4        // nested Include levels
	procMagic    = 0x9fa0   // PROC_SUPER_MAGIC, statfs(2)
)

// EnvNames are the environment variables reported: each changes what a shell or the
// dynamic loader does before or around the binary. SSH_ORIGINAL_COMMAND is set by sshd
// only when a ForceCommand ran in place of the command chaosrun sent.
var EnvNames = []string{"BASH_ENV", "ENV", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PROMPT_COMMAND", "SHELLOPTS", "PS4", "PATH", "SSH_ORIGINAL_COMMAND"}

// sshdKeywords are the sshd_config keywords reported (lower case, as sshd compares them).
var sshdKeywords = map[string]bool{"forcecommand": true, "setenv": true, "acceptenv": true, "permituserenvironment": true}

// startupFiles are the login startup files looked for in the user's home; systemFiles
// are the system-wide ones.
var (
	startupFiles = []string{".bashrc", ".bash_profile", ".profile", ".bash_login", ".zshenv", ".ssh/rc"}
	systemFiles  = []string{"/etc/ssh/sshrc", "/etc/bash.bashrc", "/etc/profile"}
	watchedDirs  = []string{"/proc", "/usr/bin", "/usr/sbin", "/bin", "/sbin", "/etc/ssh"}
)

// Config says where the sensors look. Default is the machine's own.
type Config struct {
	Proc     string                      // the /proc scanned for holders; its statfs is proc_fs
	Self     string                      // this process's /proc/PID: status, fd/0, exe, mountinfo
	Root     string                      // prefixed to /etc/..., the home's files and /bin/sh ("" on the machine)
	PID      int                         // this process, skipped in the scan; also names /proc/PID in mounts
	PPID     int                         // its parent (the exec wrapper's sshd or shell), skipped too
	Own      []int                       // the fault processes this binary spawned (kit.Spawn), skipped too
	UID      int                         // whose login is reported
	Getenv   func(string) (string, bool) // the binary's own environment
	Paths    []string                    // absolute paths the step's parameters name
	MaxProcs int                         // 0: MaxProcs
}

// Default is the Config of this process on this machine, watching paths too.
func Default(paths []string) Config {
	return Config{Proc: "/proc", Self: "/proc/self", PID: os.Getpid(), PPID: os.Getppid(), UID: os.Getuid(),
		Getenv: os.LookupEnv, Paths: paths}
}

// ParamPaths returns the absolute paths among a step's parameters: every string value
// (or string in an array) that starts with "/".
func ParamPaths(params map[string]any) []string {
	var out []string
	for _, v := range params {
		vs, ok := v.([]any)
		if !ok {
			vs = []any{v}
		}
		for _, e := range vs {
			if s, ok := e.(string); ok && strings.HasPrefix(s, "/") && len(s) < 4096 {
				out = append(out, filepath.Clean(s))
			}
		}
	}
	return out
}

// Collect runs every sensor but programs (which the kit adds once the module has looked
// up its tools, see Programs) and returns the report's "sensors" object.
func Collect(c Config) map[string]any {
	start := time.Now()
	stdin, exe := holders(c)
	out := map[string]any{
		"pid":           c.PID,
		"tracer_pid":    orError(tracerPID(c)),
		"stdin_holders": stdin,
		"exe_holders":   exe,
		"env":           environment(c),
		"ld_so_preload": orError(ldSoPreload(c)),
		"sshd":          orError(sshd(c)),
		"login":         orError(login(c)),
		"mounts":        orError(mounts(c)),
		"proc_fs":       orError(procFS(c)),
	}
	// proc_masked: the mounts at or under a /proc/PID directory, which hide a process
	// from whatever reads /proc or fake its name (a bind mount over /proc/PID/comm).
	if m, ok := out["mounts"].([]string); ok {
		masked := []string{}
		for _, line := range m {
			if len(line) > 6 && line[:6] == "/proc/" && '0' <= line[6] && line[6] <= '9' {
				masked = append(masked, line)
			}
		}
		out["proc_masked"] = masked
	}
	out["elapsed_us"] = time.Since(start).Microseconds()
	return out
}

// orError is v, or "error: ..." when err is set. Not inlined: one copy instead of six.
//
//go:noinline
func orError(v any, err error) any {
	if err != nil {
		return "error: " + err.Error()
	}
	return v
}

func cut(s string) string {
	if len(s) > maxValue {
		return s[:maxValue]
	}
	return s
}

// tracerPID is the TracerPid line of /proc/self/status: non-zero while a process ptraces us.
func tracerPID(c Config) (int, error) {
	data, err := os.ReadFile(filepath.Join(c.Self, "status"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "TracerPid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, errors.New("no TracerPid in " + c.Self + "/status")
}

// holders scans the processes of c.Proc (bounded) for the ones, other than us and our
// parent, that have our stdin pipe open (the same pipe:[inode] as our fd 0) or our
// executable (as their executable, or an open descriptor to it: the unlinked binary
// reads "PATH (deleted)").
func holders(c Config) (stdin, exe any) {
	stdinLink, err := os.Readlink(filepath.Join(c.Self, "fd", "0"))
	if err != nil {
		stdin = "error: " + err.Error()
	} else if !strings.HasPrefix(stdinLink, "pipe:") && !strings.HasPrefix(stdinLink, "socket:") {
		stdinLink = "" // a terminal or /dev/null is shared by design
	}
	exeLink, errLink := os.Readlink(filepath.Join(c.Self, "exe"))
	exeInfo, errStat := os.Stat(filepath.Join(c.Self, "exe"))
	if errLink != nil && errStat != nil {
		exe = "error: " + errLink.Error()
	}
	dir, err := os.Open(c.Proc)
	if err != nil {
		return "error: " + err.Error(), "error: " + err.Error()
	}
	names, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return "error: " + err.Error(), "error: " + err.Error()
	}
	limit := c.MaxProcs
	if limit <= 0 {
		limit = MaxProcs
	}
	stdinPIDs, exePIDs := []int{}, []int{}
	scanned := 0
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid == c.PID || pid == c.PPID || own(c.Own, pid) {
			continue // a fault process of ours runs our executable by design
		}
		if scanned++; scanned > limit {
			break
		}
		pdir := filepath.Join(c.Proc, name)
		holdsExe := false
		if exeInfo != nil {
			if st, err := os.Stat(filepath.Join(pdir, "exe")); err == nil && os.SameFile(st, exeInfo) {
				holdsExe = true
			}
		}
		holdsIn := false
		for _, link := range fdLinks(filepath.Join(pdir, "fd")) {
			if stdinLink != "" && link == stdinLink {
				holdsIn = true
			}
			if errLink == nil && link == exeLink {
				holdsExe = true
			}
		}
		if holdsIn {
			stdinPIDs = append(stdinPIDs, pid)
		}
		if holdsExe {
			exePIDs = append(exePIDs, pid)
		}
	}
	sort.Ints(stdinPIDs)
	sort.Ints(exePIDs)
	if stdin == nil {
		stdin = stdinPIDs
	}
	if exe == nil {
		exe = exePIDs
	}
	return stdin, exe
}

// own reports whether pid is one of pids (slices.Contains, without linking the package).
func own(pids []int, pid int) bool {
	for _, p := range pids {
		if p == pid {
			return true
		}
	}
	return false
}

// fdLinks reads the targets of a process's open descriptors (at most maxFDs).
func fdLinks(fdDir string) []string {
	d, err := os.Open(fdDir)
	if err != nil {
		return nil
	}
	names, _ := d.Readdirnames(maxFDs)
	d.Close()
	links := make([]string, 0, len(names))
	for _, n := range names {
		if l, err := os.Readlink(filepath.Join(fdDir, n)); err == nil {
			links = append(links, l)
		}
	}
	return links
}

// environment reports which of EnvNames are set, their values cut.
func environment(c Config) map[string]string {
	out := map[string]string{}
	if c.Getenv == nil {
		return out
	}
	for _, name := range EnvNames {
		if v, ok := c.Getenv(name); ok {
			out[name] = cut(v)
		}
	}
	return out
}

// hashFile is the hex SHA-256 and size of a file of at most maxHashBytes.
// It opens without blocking, so a FIFO put in a file's place hashes as empty instead of
// holding the module.
func hashFile(path string) (string, int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, maxHashBytes+1))
	if err != nil {
		return "", n, err
	}
	if n > maxHashBytes {
		return "", n, errors.New(path + " is over 16 MiB: not hashed")
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// hashOrError is a file's hex SHA-256, or "error: ...".
func hashOrError(path string) string {
	sum, _, err := hashFile(path)
	if err != nil {
		return "error: " + err.Error()
	}
	return sum
}

// ldSoPreload is the hash and size of /etc/ld.so.preload, or nil when there is none.
func ldSoPreload(c Config) (any, error) {
	sum, size, err := hashFile(c.Root + "/etc/ld.so.preload")
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"sha256": sum, "size": size}, nil
}

// sshd reports the ForceCommand, SetEnv, AcceptEnv and PermitUserEnvironment lines of
// /etc/ssh/sshd_config and of the files its Include lines name (globbed, bounded), and
// the SHA-256 of those lines.
func sshd(c Config) (map[string]any, error) {
	s := sshdScan{root: c.Root, lines: []string{}, seen: map[string]bool{}}
	if err := s.file("/etc/ssh/sshd_config", 0); err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(strings.Join(s.lines, "\n")))
	out := map[string]any{"lines": s.lines, "sha256": hex.EncodeToString(sum[:]), "files": s.files}
	if len(s.errs) > 0 {
		out["errors"] = s.errs
	}
	return out, nil
}

type sshdScan struct {
	root  string
	lines []string
	files int
	errs  []string
	seen  map[string]bool
}

func (s *sshdScan) file(path string, depth int) error {
	if s.seen[path] || s.files >= maxIncludes {
		return nil
	}
	s.seen[path] = true
	s.files++
	data, err := os.ReadFile(s.root + path)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		end := strings.IndexAny(line, " \t=")
		if end < 0 {
			end = len(line)
		}
		switch key := asciiLower(line[:end]); {
		case sshdKeywords[key] && len(s.lines) < maxLines:
			s.lines = append(s.lines, cut(line))
		case key == "include" && depth < maxDepth:
			s.include(splitSpace(line[end:]), depth)
		}
	}
	return nil
}

// asciiLower lower-cases ASCII letters, as sshd compares its keywords.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// splitSpace splits on runs of spaces and tabs.
func splitSpace(s string) []string {
	var out []string
	start := -1
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ' ' || s[i] == '\t' {
			if start >= 0 {
				out = append(out, s[start:i])
				start = -1
			}
		} else if start < 0 {
			start = i
		}
	}
	return out
}

func (s *sshdScan) include(patterns []string, depth int) {
	for _, pattern := range patterns {
		if !strings.HasPrefix(pattern, "/") {
			pattern = "/etc/ssh/" + pattern // sshd's rule for a relative Include
		}
		matches, err := filepath.Glob(s.root + pattern)
		if err != nil {
			s.errs = append(s.errs, cut(err.Error()))
			continue
		}
		for _, m := range matches {
			if err := s.file(strings.TrimPrefix(m, s.root), depth+1); err != nil && len(s.errs) < maxLines {
				s.errs = append(s.errs, cut(err.Error()))
			}
		}
	}
}

// login reports the login shell and home of c.UID (from /etc/passwd) and which startup
// files exist there and system-wide, with their SHA-256.
func login(c Config) (map[string]any, error) {
	data, err := os.ReadFile(c.Root + "/etc/passwd")
	if err != nil {
		return nil, err
	}
	var user, home, shell string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 7 && f[2] == strconv.Itoa(c.UID) {
			user, home, shell = f[0], f[5], f[6]
			break
		}
	}
	if user == "" {
		return nil, errors.New("uid " + strconv.Itoa(c.UID) + " is not in /etc/passwd")
	}
	files := map[string]string{}
	paths := append([]string{}, systemFiles...)
	if strings.HasPrefix(home, "/") {
		for _, name := range startupFiles {
			paths = append(paths, filepath.Join(home, name))
		}
	}
	for _, p := range paths {
		if _, err := os.Lstat(c.Root + p); err == nil {
			files[p] = hashOrError(c.Root + p)
		}
	}
	return map[string]any{"user": user, "uid": c.UID, "home": cut(home), "shell": cut(shell), "files": files}, nil
}

// mounts reports, from our mountinfo, each mount at or under /proc, /proc/PID, the bin
// directories, /etc/ssh or a path of the parameters, as "mountpoint fstype source"
// (mountinfo's escaping kept, so the three split on spaces).
func mounts(c Config) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(c.Self, "mountinfo"))
	if err != nil {
		return nil, err
	}
	return MountsOver(string(data), watched(c)), nil
}

func watched(c Config) []string {
	w := append([]string{}, watchedDirs...)
	for _, p := range c.Paths {
		if p != "/" {
			w = append(w, p)
		}
	}
	return w
}

// MountsOver picks from mountinfo text (proc(5)) the mounts at or under one of dirs.
func MountsOver(mountinfo string, dirs []string) []string {
	out := []string{}
	for _, m := range mnt.Parse(mountinfo) {
		for _, d := range dirs {
			if m.MountPoint == d || strings.HasPrefix(m.MountPoint, strings.TrimSuffix(d, "/")+"/") {
				if len(out) < maxLines {
					out = append(out, cut(mnt.Escape(m.MountPoint)+" "+m.FSType+" "+mnt.Escape(m.Source)))
				}
				break
			}
		}
	}
	return out
}

// procFS says whether c.Proc is a procfs (statfs magic 0x9fa0), not a directory made to
// look like one.
func procFS(c Config) (bool, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(c.Proc, &st); err != nil {
		return false, err
	}
	return st.Type == procMagic, nil
}

// Tool is a program a module resolved (sysexec.LookTool): its label and path.
type Tool struct{ Label, Path string }

// Programs hashes the programs that ran or will run for this step: /bin/sh (the exec
// wrapper), b2sum and sha256sum as the wrapper finds them on PATH (they check the upload),
// and the tools the module resolved. Keys are labels; values {"path", "sha256"}.
func Programs(c Config, tools []Tool) map[string]any {
	out := map[string]any{}
	put := func(label, path, sum string) { out[label] = map[string]string{"path": path, "sha256": sum} }
	put("sh", "/bin/sh", hashOrError(c.Root+"/bin/sh"))
	var pathEnv string
	if c.Getenv != nil {
		pathEnv, _ = c.Getenv("PATH")
	}
	for _, name := range []string{"b2sum", "sha256sum"} {
		if p := onPath(pathEnv, name); p != "" {
			put(name, p, hashOrError(p))
		}
	}
	for _, t := range tools {
		put(t.Label, t.Path, hashOrError(t.Path))
	}
	return out
}

// onPath is what a shell's "command -v name" finds in pathEnv, or "".
func onPath(pathEnv, name string) string {
	for _, dir := range filepath.SplitList(pathEnv) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// Recheck looks again, at report time, for a tracer or holders that came while the module
// ran, and adds them to s (a report of Collect).
func Recheck(c Config, s map[string]any) {
	if pid, err := tracerPID(c); err == nil && pid != 0 {
		s["tracer_pid"] = pid
	}
	stdin, exe := holders(c)
	s["stdin_holders"] = union(s["stdin_holders"], stdin)
	s["exe_holders"] = union(s["exe_holders"], exe)
}

// union merges two holder lists; an error string gives way to a list. Not inlined: one
// copy instead of two.
//
//go:noinline
func union(a, b any) any {
	la, okA := a.([]int)
	lb, okB := b.([]int)
	if !okA || !okB {
		if okB {
			return lb
		}
		return a
	}
	for _, pid := range lb {
		if !containsInt(la, pid) {
			la = append(la, pid)
		}
	}
	return la
}

func containsInt(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
