// Command fill_disk writes a file of real (not sparse) blocks so that its filesystem runs out of space.
package main

import (
	"context"
	crand "crypto/rand"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

const mib = 1 << 20

// header opens every file fill_disk writes: the mark by which a later attempt of the same
// step knows the file as its own (the rest is random data, which nothing could recognise).
const header = "chaosrun fill_disk\n"

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	path, sizeMB, leaveMB := p.String("path"), p.Int("size_mb"), p.Int("leave_free_mb")
	f, had, err := open(path)
	if err != nil {
		return err
	}
	// Streamed before the first block: a run killed while this step writes still knows
	// the file is its own (restore removes it whatever its size).
	r.Changed(kit.Change{Action: "create_file", Path: path, Detail: map[string]any{"in_progress": true, "written_by": "fill_disk"}})
	written := had
	full := false
	defer func() {
		r.Changed(kit.Change{Action: "create_file", Path: path, After: written / mib,
			Detail: map[string]any{"written_bytes": written}})
	}()
	var more int64
	more, full, err = fill(ctx, f, sizeMB*mib-had, leaveMB*mib, had == 0)
	written += more
	if err == nil {
		// Flush to disk so df shows the space as used right away.
		if serr := f.Sync(); serr != nil && !errors.Is(serr, syscall.ENOSPC) {
			err = fmt.Errorf("sync %s: %w", path, serr)
		}
	}
	if cerr := f.Close(); cerr != nil && err == nil && !errors.Is(cerr, syscall.ENOSPC) {
		err = fmt.Errorf("close %s: %w", path, cerr)
	}
	r.Set("written_mb", written/mib)
	r.Set("written_bytes", written)
	r.Set("disk_full", full)
	r.Set("already_in_place", had > 0 && more == 0 && err == nil)
	if free, ferr := availableBytes(filepath.Dir(path)); ferr == nil {
		r.Set("free_mb", free/mib)
	}
	switch {
	case had > 0 && more == 0 && err == nil:
		r.AlreadyInPlace("%s of an earlier attempt holds %d MiB", path, had/mib)
	case had > 0:
		r.Logf("%s of an earlier attempt held %d MiB; topped up to %d MiB", path, had/mib, written/mib)
	case full:
		r.Logf("%s: filesystem full after %d MiB", path, written/mib)
	default:
		r.Logf("%s: wrote %d MiB", path, written/mib)
	}
	return err
}

// open creates path, or opens it for appending when it is a file an earlier attempt of
// this step wrote (it starts with header); had is the size it has then.
func open(path string) (f *os.File, had int64, err error) {
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err == nil || !errors.Is(err, fs.ErrExist) {
		if err != nil {
			return nil, 0, fmt.Errorf("create %s: %w", path, err)
		}
		return f, 0, nil
	}
	f, err = os.OpenFile(path, os.O_RDWR|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("create %s: it exists, and: %w", path, err)
	}
	mark := make([]byte, len(header))
	fi, serr := f.Stat()
	if _, rerr := f.ReadAt(mark, 0); rerr != nil || serr != nil || !fi.Mode().IsRegular() || string(mark) != header {
		f.Close()
		return nil, 0, fmt.Errorf("create %s: file exists (and is not one fill_disk wrote)", path)
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("seek %s: %w", path, err)
	}
	return f, fi.Size(), nil
}

// fill writes up to size bytes of pseudo-random data (incompressible, so a compressing or
// deduplicating filesystem stores it all) in 1 MiB blocks, stopping at ENOSPC or when
// fewer than leave bytes would remain available. A new file (first) starts with header.
func fill(ctx context.Context, f *os.File, size, leave int64, first bool) (written int64, full bool, err error) {
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return 0, false, fmt.Errorf("seed: %w", err)
	}
	rng := rand.NewChaCha8(seed)
	buf := make([]byte, mib)
	for written < size {
		if err := ctx.Err(); err != nil {
			return written, false, err
		}
		n := int64(len(buf))
		if size-written < n {
			n = size - written
		}
		if leave > 0 {
			free, err := availableBytes(filepath.Dir(f.Name()))
			if err != nil {
				return written, false, err
			}
			if free-n < leave {
				if free-leave <= 0 {
					return written, false, nil
				}
				n = free - leave
			}
		}
		for i := 0; i+8 <= len(buf); i += 8 {
			binary.LittleEndian.PutUint64(buf[i:], rng.Uint64())
		}
		if first {
			copy(buf, header)
			first = false
		}
		m, err := f.Write(buf[:n])
		written += int64(m)
		if errors.Is(err, syscall.ENOSPC) {
			return written, true, nil
		}
		if err != nil {
			return written, false, fmt.Errorf("write %s: %w", f.Name(), err)
		}
	}
	return written, false, nil
}

// availableBytes is the space available to unprivileged users on dir's filesystem (df's "Avail").
func availableBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
