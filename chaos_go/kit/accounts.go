package kit

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ResolveID turns a numeric id or a name (looked up in a passwd- or group-format file,
// whose third field is the id) into an id.
func ResolveID(nameOrID, file string) (int, error) {
	if n, err := strconv.ParseUint(nameOrID, 10, 32); err == nil {
		return int(n), nil
	}
	f, err := os.Open(file)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", file, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 3 && fields[0] == nameOrID {
			n, err := strconv.ParseUint(fields[2], 10, 32)
			if err != nil {
				return 0, fmt.Errorf("%s: %s has a bad id %q", file, nameOrID, fields[2])
			}
			return int(n), nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read %s: %w", file, err)
	}
	return 0, fmt.Errorf("%q not found in %s", nameOrID, file)
}
