package main

import (
	"os"
	"path/filepath"
	"testing"

	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func write(t *testing.T, path, text string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func machine(t *testing.T) map[string]any {
	dir := t.TempDir()
	write(t, dir+"/spool/candidate", "# m h dom mon dow command\nMAILTO=\"\"\n*/5 * * * * /usr/local/bin/backup.sh --quick\n@reboot sleep 1\n")
	write(t, dir+"/etc/crontab", "SHELL=/bin/sh\n17 * * * * root cd / && run-parts --report /etc/cron.hourly\n")
	write(t, dir+"/etc/cron.d/logrotate", "0 3 * * * root /usr/sbin/logrotate /etc/logrotate.conf\n")
	write(t, dir+"/etc/cron.d/backup.dpkg-old", "* * * * * root /usr/local/bin/backup.sh\n") // cron skips dotted names
	write(t, dir+"/etc/cron.d/short", "* * * root\n")                                        // too few fields: cron refuses it
	return map[string]any{
		"crontab_dir": dir + "/spool", "system_files": []any{dir + "/etc/crontab"}, "system_dirs": []any{dir + "/etc/cron.d"},
	}
}

func probe(t *testing.T, with map[string]any, match, user string) map[string]any {
	with["match"], with["user"] = match, user
	return moduletest.Probe(t, declaration, run, with)
}

func TestJobsAreFoundInUserAndSystemCrontabsWithTheirUser(t *testing.T) {
	m := machine(t)
	res := probe(t, m, `backup\.sh`, "")
	jobs := res["jobs"].([]map[string]any)
	if res["present"] != true || res["count"] != 1 || jobs[0]["user"] != "candidate" || jobs[0]["schedule"] != "*/5 * * * *" || jobs[0]["command"] != "/usr/local/bin/backup.sh --quick" || jobs[0]["line"] != 3 {
		t.Errorf("result %v", res)
	}
	res = probe(t, m, "logrotate", "root")
	if res["count"] != 1 || res["jobs"].([]map[string]any)[0]["schedule"] != "0 3 * * *" {
		t.Errorf("result %v", res)
	}
	if res := probe(t, m, "^sleep", ""); res["count"] != 1 || res["jobs"].([]map[string]any)[0]["schedule"] != "@reboot" {
		t.Errorf("@reboot: %v", res)
	}
}

func TestTheUserFilterAndAbsentJobs(t *testing.T) {
	m := machine(t)
	if res := probe(t, m, "backup", "root"); res["present"] != false {
		t.Errorf("the backup job is candidate's: %v", res)
	}
	if res := probe(t, m, "MAILTO|SHELL", ""); res["count"] != 0 {
		t.Errorf("variable lines are no jobs: %v", res)
	}
}
