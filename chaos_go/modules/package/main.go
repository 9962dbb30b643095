// Command package reads a Debian package's state from dpkg's status file.
package main

import (
	"bufio"
	"context"
	_ "embed"
	"fmt"
	"os"
	"strings"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// stanza is the fields of one package's paragraph in the status file; nil when absent.
func stanza(file, name string) (map[string]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	cur := map[string]string{}
	var found map[string]string
	flush := func() {
		if cur["Package"] == name && found == nil {
			found = cur
		}
		cur = map[string]string{}
	}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			// a continuation line of a multi-line field: nothing we read
		default:
			if k, v, ok := strings.Cut(line, ":"); ok {
				cur[k] = strings.TrimSpace(v)
			}
		}
	}
	flush()
	return found, sc.Err()
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	fields, err := stanza(p.String("status_file"), p.String("name"))
	if err != nil {
		return fmt.Errorf("read %s: %w", p.String("status_file"), err)
	}
	installed := fields["Status"] == "install ok installed"
	version := fields["Version"]
	r.Set("installed", installed)
	r.Set("status", fields["Status"])
	r.Set("version", version)
	r.Set("architecture", fields["Architecture"])
	min := p.String("min_version")
	r.Set("version_ok", installed && (min == "" || compareVersions(version, min) >= 0))
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
