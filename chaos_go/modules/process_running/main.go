// Command process_running counts the live processes with a name.
package main

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// hasName reads procDir/PID and says whether the process is alive (not a
// zombie) and carries name as its comm, its argv[0] or argv[0]'s basename
// ("nginx: master process /usr/sbin/nginx" has basename "nginx").
func hasName(procDir string, pid int, name string) bool {
	dir := filepath.Join(procDir, strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return false
	}
	open, end := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
	if open < 0 || end < open {
		return false
	}
	if state := strings.Fields(string(stat[end+1:])); len(state) == 0 || state[0] == "Z" || state[0] == "X" {
		return false
	}
	if string(stat[open+1:end]) == name {
		return true
	}
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil || len(cmdline) == 0 {
		return false
	}
	argv0, _, _ := strings.Cut(string(cmdline), "\x00")
	return argv0 == name || filepath.Base(argv0) == name
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	name, procDir := p.String("name"), p.String("proc_dir")
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return fmt.Errorf("list processes: %w", err)
	}
	pids := []int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if hasName(procDir, pid, name) {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	r.Set("running", len(pids) > 0)
	r.Set("count", len(pids))
	r.Set("pids", pids)
	return nil
}

func main() {
	kit.Main(kit.Module{Name: "process_running", Kind: kit.Probe, Declaration: declaration, Run: run})
}
