// Command deleted_open_file starts a background process that writes a file, deletes it and
// keeps it open, so df and du disagree until the process is killed.
package main

import (
	"context"
	crand "crypto/rand"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/procfs"
)

//go:embed params.schema.json
var declaration []byte

const mib = 1 << 20

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	path, name := p.String("path"), p.String("process_name")
	if own, ok := kit.OwnFaultProcess(name, func(pid int) bool { return procfs.Holds("/proc", pid, path+" (deleted)") }); ok {
		r.AlreadyInPlace("process %d (%s) of an earlier attempt holds deleted %s", own.PID, name, path)
		r.Changed(kit.Change{Action: "spawn_process", Detail: map[string]any{"pid": own.PID, "process_name": name, "deleted_path": path}})
		r.Set("pid", own.PID)
		size, err := waitHeld(ctx, own.PID, path)
		if err != nil {
			return err
		}
		r.Set("size_mb", size/mib)
		return nil
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s exists; refusing to delete it", path)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || !fi.IsDir() {
		return fmt.Errorf("parent of %s: not a directory (%v)", path, err)
	}
	pid, err := kit.Spawn(ctx, name, map[string]any{
		"path": path, "size_mb": p.Int("size_mb"), "hold_seconds": p.Int("hold_seconds"),
	})
	if err != nil {
		return err
	}
	r.Changed(kit.Change{Action: "spawn_process", Detail: map[string]any{"pid": pid, "process_name": name, "deleted_path": path}})
	r.Set("pid", pid)
	size, err := waitHeld(ctx, pid, path)
	if err != nil {
		return err
	}
	r.Set("size_mb", size/mib)
	r.Logf("pid %d (%s) holds deleted %s, %d MiB", pid, name, path, size/mib)
	return nil
}

// waitHeld waits until process pid holds path open as a deleted file, and returns its size.
func waitHeld(ctx context.Context, pid int, path string) (int64, error) {
	fd, err := procfs.WaitHolding(ctx, "/proc", pid, path+" (deleted)", 0)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(fd)
	if err != nil {
		return 0, fmt.Errorf("stat %s: %w", fd, err)
	}
	return fi.Size(), nil
}

// background is the detached process: create, fill, unlink, then keep the descriptor open.
func background(ctx context.Context, args map[string]any) error {
	path, _ := args["path"].(string)
	sizeMB, _ := args["size_mb"].(float64)
	holdSeconds, _ := args["hold_seconds"].(float64)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer f.Close()
	if err := write(ctx, f, int64(sizeMB)*mib); err != nil {
		os.Remove(path)
		return err
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	if holdSeconds <= 0 {
		<-ctx.Done()
		return nil
	}
	select {
	case <-ctx.Done():
	case <-time.After(time.Duration(holdSeconds) * time.Second):
	}
	return nil
}

// write appends size bytes of incompressible data, stopping quietly when the disk is full.
func write(ctx context.Context, f *os.File, size int64) error {
	var seed [32]byte
	_, _ = crand.Read(seed[:])
	rng := rand.NewChaCha8(seed)
	buf := make([]byte, mib)
	for written := int64(0); written < size; written += mib {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for i := 0; i+8 <= len(buf); i += 8 {
			binary.LittleEndian.PutUint64(buf[i:], rng.Uint64())
		}
		n := min(int64(len(buf)), size-written)
		if _, err := f.Write(buf[:n]); errors.Is(err, syscall.ENOSPC) {
			return nil
		} else if err != nil {
			return fmt.Errorf("write %s: %w", f.Name(), err)
		}
	}
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run, Background: background}) }
