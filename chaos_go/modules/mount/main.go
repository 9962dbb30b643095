// Command mount reports what is mounted at a path and what fstab says of it.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/mounts"
	"chaosrun/chaos_go/kit/sysexec"
)

//go:embed params.schema.json
var declaration []byte

// verifyFindings picks the errors and the warnings from `findmnt --verify` output: a line
// per target, then its findings indented, "[E]" for an error, "[W]" a warning ("[ ]"
// notes are left out).
func verifyFindings(out string) (errs, warnings []string) {
	errs, warnings = []string{}, []string{}
	target := ""
	for _, line := range strings.Split(out, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
		case !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "\t"):
			target = trimmed
		case strings.HasPrefix(trimmed, "[E]"):
			errs = append(errs, target+": "+strings.TrimSpace(trimmed[3:]))
		case strings.HasPrefix(trimmed, "[W]"):
			warnings = append(warnings, target+": "+strings.TrimSpace(trimmed[3:]))
		}
	}
	return errs, warnings
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	path, fstab := filepath.Clean(p.String("path")), p.String("fstab")
	for k, v := range map[string]any{"mounted": false, "source": "", "fstype": "", "options": []string{}, "read_only": false,
		"in_fstab": false, "fstab_source": "", "fstab_fstype": "", "fstab_options": "", "fstab_ok": false, "fstab_errors": []string{}, "fstab_warnings": []string{}} {
		r.Set(k, v)
	}
	var reasons []string
	ms, err := mounts.Read(p.String("mountinfo"))
	if err != nil {
		reasons = append(reasons, fmt.Sprintf("read the mount table: %v", err))
	} else if m, ok := mounts.At(ms, path); ok {
		r.Set("mounted", true)
		r.Set("source", m.Source)
		r.Set("fstype", m.FSType)
		r.Set("options", m.Options())
		r.Set("read_only", m.ReadOnly())
	}
	entries, err := mounts.ReadFstab(fstab)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		reasons = append(reasons, fstab+" does not exist")
	case err != nil:
		reasons = append(reasons, fmt.Sprintf("read %s: %v", fstab, err))
	}
	for _, e := range entries {
		if filepath.Clean(e.MountPoint) == path {
			r.Set("in_fstab", true)
			r.Set("fstab_source", e.Source)
			r.Set("fstab_fstype", e.FSType)
			r.Set("fstab_options", e.Options)
		}
	}
	if p.Bool("verify") && err == nil {
		if findmnt, err := sysexec.LookTool("findmnt", p.String("findmnt_path")); err != nil {
			reasons = append(reasons, err.Error())
		} else {
			// It exits non-zero when it finds an error; its report is on stdout either way.
			stdout, stderr, runErr := sysexec.Run(ctx, []string{findmnt, "--verify", "--tab-file", fstab}, "")
			errs, warnings := verifyFindings(stdout)
			if runErr != nil && len(errs) == 0 {
				errs = append(errs, "findmnt --verify: "+sysexec.OneLine(stderr+" "+runErr.Error()))
			}
			r.Set("fstab_ok", runErr == nil && len(errs) == 0)
			r.Set("fstab_errors", errs)
			r.Set("fstab_warnings", warnings)
		}
	}
	r.Set("reason", strings.Join(reasons, "; "))
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
