// Command lock_user locks a user's password, expires the account or the password, or
// gives it a nologin shell, editing passwd/shadow atomically and keeping their mode and owner.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"strings"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

const nologinShell = "/usr/sbin/nologin"

// edit says which file and field an action changes, and how.
type edit struct {
	file   string
	field  string
	index  int // 0-based field index in the colon-separated line
	minLen int // fields the line must have
	apply  func(old string) string
}

func editFor(p kit.Params) edit {
	switch p.String("action") {
	case "lock":
		return edit{file: p.String("shadow_file"), field: "password", index: 1, minLen: 2, apply: func(old string) string {
			if strings.HasPrefix(old, "!") {
				return old
			}
			return "!" + old
		}}
	case "expire":
		return edit{file: p.String("shadow_file"), field: "expire", index: 7, minLen: 9, apply: func(string) string { return "1" }}
	case "must_change":
		return edit{file: p.String("shadow_file"), field: "last_change", index: 2, minLen: 3, apply: func(string) string { return "0" }}
	default:
		return edit{file: p.String("passwd_file"), field: "shell", index: 6, minLen: 7, apply: func(string) string { return nologinShell }}
	}
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	user, e := p.String("user"), editFor(p)
	content, err := os.ReadFile(e.file)
	if err != nil {
		return fmt.Errorf("read %s: %w", e.file, err)
	}
	lines := strings.Split(string(content), "\n")
	found := false
	var before, after string
	for i, l := range lines {
		fields := strings.Split(l, ":")
		if fields[0] != user {
			continue
		}
		if len(fields) < e.minLen {
			return fmt.Errorf("%s: the line of %s has %d fields; want at least %d", e.file, user, len(fields), e.minLen)
		}
		found = true
		before = fields[e.index]
		after = e.apply(before)
		fields[e.index] = after
		lines[i] = strings.Join(fields, ":")
		break
	}
	if !found {
		return fmt.Errorf("user %s not found in %s", user, e.file)
	}
	changed := before != after
	if changed {
		if err := kit.WriteFileAtomic(e.file, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
			return err
		}
		// The hash never leaves the testenv: a rollback of lock only strips the "!".
		r.Changed(kit.Change{Action: "edit_account", Path: e.file, Before: shown(e.field, before), After: shown(e.field, after),
			Detail: map[string]any{"user": user, "field": e.field, "index": e.index}})
	}
	r.Set("file", e.file)
	r.Set("field", e.field)
	r.Set("before", shown(e.field, before))
	r.Set("after", shown(e.field, after))
	r.Set("changed", changed)
	r.Logf("%s %s: %s %q -> %q", p.String("action"), user, e.field, shown(e.field, before), shown(e.field, after))
	return nil
}

// shown hides a password hash, keeping the lock markers and the "no password" forms.
func shown(field, value string) string {
	if field != "password" {
		return value
	}
	locks := value[:len(value)-len(strings.TrimLeft(value, "!"))]
	switch rest := value[len(locks):]; rest {
	case "", "*", "x":
		return value
	default:
		return locks + "<hash>"
	}
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
