// Command cron_entry adds a cron job to a system crontab or to a user's crontab.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"path/filepath"
	"strings"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	schedule, command, user := p.String("schedule"), p.String("command"), p.String("user")
	path, line := p.String("path"), schedule+" "+user+" "+command
	uid, err := kit.ResolveID(user, p.String("passwd_file"))
	if err != nil {
		return fmt.Errorf("user: %w", err)
	}
	want := kit.FileState{Exists: true, Mode: 0o644}
	if p.Bool("user_crontab") {
		// As crontab(1) keeps it: the user's, group crontab, 0600, no user field.
		path, line = filepath.Join(p.String("crontab_dir"), user), schedule+" "+command
		gid, err := kit.ResolveID("crontab", p.String("group_file"))
		if err != nil {
			return fmt.Errorf("group: %w", err)
		}
		want.Mode, want.UID, want.GID = 0o600, uid, gid
	} else if filepath.Dir(path) == "/etc/cron.d" && strings.ContainsAny(filepath.Base(path), ".~") {
		return fmt.Errorf("%s: cron ignores files in /etc/cron.d whose names have a dot or a ~", path)
	}
	before, err := kit.ReadFileState(path)
	if err != nil {
		return err
	}
	text := string(before.Content)
	if before.Exists {
		want.Mode, want.UID, want.GID = before.Mode, before.UID, before.GID
	}
	r.Set("path", path)
	r.Set("line", line)
	for _, l := range strings.Split(text, "\n") {
		if strings.Join(strings.Fields(l), " ") == line {
			r.Set("already", true)
			r.Logf("%s has this job already", path)
			return nil
		}
	}
	r.Set("already", false)
	if text != "" && !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	want.Content = []byte(text + line + "\n") // cron skips a last line without a newline
	if err := kit.WriteRecorded(r, path, before, want, false, nil); err != nil {
		return err
	}
	r.Logf("%s: added %q", path, line)
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
