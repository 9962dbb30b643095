// Command cron looks for cron jobs whose command matches a pattern.
package main

import (
	"bufio"
	"context"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

type job struct {
	file     string
	line     int
	user     string
	schedule string
	command  string
}

// parse reads the jobs of one crontab; owner is its user for a user crontab, "" for a
// system one (whose lines carry a user field after the schedule).
func parse(path, owner string) ([]job, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []job
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") || isAssignment(sc.Text()) {
			continue
		}
		schedLen := 5
		if strings.HasPrefix(fields[0], "@") {
			schedLen = 1
		}
		need := schedLen + 1
		if owner == "" {
			need++
		}
		if len(fields) < need {
			continue // cron would refuse the line
		}
		j := job{file: path, line: n, user: owner, schedule: strings.Join(fields[:schedLen], " ")}
		rest := fields[schedLen:]
		if owner == "" {
			j.user, rest = rest[0], rest[1:]
		}
		j.command = strings.Join(rest, " ")
		out = append(out, j)
	}
	return out, sc.Err()
}

// isAssignment is cron's test for an environment line: NAME = VALUE before any schedule.
func isAssignment(line string) bool {
	name, _, ok := strings.Cut(line, "=")
	name = strings.TrimSpace(name)
	return ok && name != "" && !strings.ContainsAny(name, " \t*@") && !strings.ContainsAny(name[:1], "0123456789")
}

// cronDName is whether cron reads a file of /etc/cron.d: names of letters, digits, _ and -.
var cronDName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	re, err := regexp.Compile(p.String("match"))
	if err != nil {
		return fmt.Errorf("match: %w", err)
	}
	var all []job
	var problems []string
	read := func(path, owner string) {
		jobs, err := parse(path, owner)
		if err != nil && !os.IsNotExist(err) {
			problems = append(problems, err.Error())
		}
		all = append(all, jobs...)
	}
	if entries, err := os.ReadDir(p.String("crontab_dir")); err == nil {
		for _, e := range entries {
			if !e.IsDir() {
				read(filepath.Join(p.String("crontab_dir"), e.Name()), e.Name())
			}
		}
	}
	for _, f := range p.Strings("system_files") {
		read(f, "")
	}
	for _, d := range p.Strings("system_dirs") {
		entries, _ := os.ReadDir(d)
		names := []string{}
		for _, e := range entries {
			if !e.IsDir() && cronDName.MatchString(e.Name()) {
				names = append(names, e.Name())
			}
		}
		sort.Strings(names)
		for _, n := range names {
			read(filepath.Join(d, n), "")
		}
	}
	for _, msg := range problems {
		r.Warnf("%s", msg)
	}
	user := p.String("user")
	jobs := []map[string]any{}
	for _, j := range all {
		if (user == "" || j.user == user) && re.MatchString(j.command) {
			jobs = append(jobs, map[string]any{"file": j.file, "line": j.line, "user": j.user, "schedule": j.schedule, "command": j.command})
		}
	}
	r.Set("present", len(jobs) > 0)
	r.Set("count", len(jobs))
	r.Set("jobs", jobs)
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
