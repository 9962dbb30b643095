// Command account reads a user account's state from passwd, shadow and group.
package main

import (
	"bufio"
	"context"
	_ "embed"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// now is today's date in days since 1970-01-01 (UTC), as shadow counts; a test moves it.
var now = func() int64 { return time.Now().Unix() / 86400 }

// lines returns the colon-separated fields of every line of file whose first field is name.
func lines(file, name string) ([][]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if name == "" || fields[0] == name {
			out = append(out, fields)
		}
	}
	return out, sc.Err()
}

// days parses a shadow day count; -1 for an empty field.
func days(field string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(field), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	user := p.String("user")
	r.Set("exists", false)
	r.Set("uid", -1)
	r.Set("gid", -1)
	r.Set("home", "")
	r.Set("shell", "")
	r.Set("groups", []string{})
	r.Set("locked", false)
	r.Set("has_password", false)
	r.Set("expired", false)
	r.Set("expires", "")
	r.Set("must_change", false)
	r.Set("password_expired", false)
	r.Set("password_age_days", -1)
	r.Set("password_max_days", -1)
	r.Set("reason", "")

	pw, err := lines(p.String("passwd_file"), user)
	if err != nil {
		return fmt.Errorf("read %s: %w", p.String("passwd_file"), err)
	}
	if len(pw) == 0 || len(pw[0]) < 7 {
		r.Set("reason", fmt.Sprintf("no user %q in %s", user, p.String("passwd_file")))
		return nil
	}
	entry := pw[0]
	uid, _ := strconv.Atoi(entry[2])
	gid, _ := strconv.Atoi(entry[3])
	r.Set("exists", true)
	r.Set("uid", uid)
	r.Set("gid", gid)
	r.Set("home", entry[5])
	r.Set("shell", entry[6])
	r.Set("groups", groups(p.String("group_file"), user, entry[3]))

	sh, err := lines(p.String("shadow_file"), user)
	switch {
	case err != nil:
		r.Set("reason", fmt.Sprintf("cannot read %s: %v", p.String("shadow_file"), err))
		return nil
	case len(sh) == 0 || len(sh[0]) < 8:
		r.Set("reason", fmt.Sprintf("no shadow line for %q in %s", user, p.String("shadow_file")))
		return nil
	}
	s, today := sh[0], now()
	hash := strings.TrimLeft(s[1], "!")
	r.Set("locked", strings.HasPrefix(s[1], "!"))
	r.Set("has_password", hash != "" && !strings.HasPrefix(hash, "*"))
	if expire := days(s[7]); expire >= 0 {
		r.Set("expires", time.Unix(expire*86400, 0).UTC().Format("2006-01-02"))
		r.Set("expired", today >= expire) // shadow's isexpired(): login refused from that day
	}
	last, max := days(s[2]), days(s[4])
	r.Set("password_max_days", max)
	mustChange := last == 0
	r.Set("must_change", mustChange)
	if last > 0 {
		r.Set("password_age_days", today-last)
	}
	r.Set("password_expired", mustChange || (last > 0 && max >= 0 && today >= last+max))
	return nil
}

// groups is the primary group's name (or its number when the group file lacks it) and
// every group that lists user as a member.
func groups(file, user, primary string) []string {
	all, err := lines(file, "")
	out := []string{primary}
	if err != nil {
		return out
	}
	for _, g := range all {
		if len(g) < 4 {
			continue
		}
		if g[2] == primary {
			out[0] = g[0]
			continue
		}
		for _, m := range strings.Split(g[3], ",") {
			if m == user {
				out = append(out, g[0])
				break
			}
		}
	}
	return out
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
