// Command disk_free measures free space and inodes of the filesystem holding a path.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"math"
	"syscall"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// usage is one statfs reading turned into df's numbers.
type usage struct {
	FreeMB, TotalMB         int64
	UsedPercent             float64
	FreeInodes, TotalInodes int64
}

// fromStatfs computes df's columns; the block unit is f_frsize when set.
func fromStatfs(st syscall.Statfs_t) usage {
	unit := uint64(st.Frsize)
	if unit == 0 {
		unit = uint64(st.Bsize)
	}
	used := st.Blocks - st.Bfree
	var pct float64
	if used+st.Bavail > 0 {
		pct = math.Round(float64(used)*10000/float64(used+st.Bavail)) / 100
	}
	return usage{
		FreeMB:      int64(st.Bavail * unit >> 20),
		TotalMB:     int64(st.Blocks * unit >> 20),
		UsedPercent: pct,
		FreeInodes:  int64(st.Ffree),
		TotalInodes: int64(st.Files),
	}
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	path := p.String("path")
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", path, err)
	}
	u := fromStatfs(st)
	r.Set("free_mb", u.FreeMB)
	r.Set("total_mb", u.TotalMB)
	r.Set("used_percent", u.UsedPercent)
	r.Set("free_inodes", u.FreeInodes)
	r.Set("total_inodes", u.TotalInodes)
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
