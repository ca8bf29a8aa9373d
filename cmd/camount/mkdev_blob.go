package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/camount/camount/blockdev"
)

// casync mkdev also serves a plain BLOB (a file or block device holding
// the image itself, named so by --what=blob or by not being an index or
// archive) as a read-only block device. camount serves it over NBD
// (/dev/nbdN), else attaches a read-only loop device to the file.

// isPlainBlob reports whether mkdev's operand is a plain blob: --what=blob,
// or a local regular file or block device that is no index or archive.
func isPlainBlob(path string) bool {
	if k, ok := whatKind(path); ok {
		return k == kindUnknown && what.set
	}
	if kindOf(path) != kindUnknown {
		return false
	}
	st, err := os.Stat(path)
	return err == nil && (st.Mode().IsRegular() || st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0)
}

// plainBlobSource serves a file padded with zeros to whole 512-byte sectors.
type plainBlobSource struct {
	f          *os.File
	size, real int64
}

func (s *plainBlobSource) Size() int64 { return s.size }

func (s *plainBlobSource) ReadAtContext(_ context.Context, p []byte, off int64) (int, error) {
	n := 0
	if off < s.real {
		m := min(int64(len(p)), s.real-off)
		k, err := s.f.ReadAt(p[:m], off)
		n = k
		if err != nil && err != io.EOF {
			return n, err
		}
		if int64(k) < m {
			return n, fmt.Errorf("%s: short read at %d (the file shrank?)", s.f.Name(), off+int64(k))
		}
	}
	clear(p[n:])
	return len(p), nil
}

func runMkdevPlain(ctx context.Context, e *env, path, via, method string, conns int) error {
	if !hasCapSysAdmin() {
		return errNeedsRoot
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.IsDir() {
		return usagef("%s is a directory: mkdev serves block images (a .caibx, or a plain file with --what=blob)", path)
	}
	size := sizeOf(f, st)
	if size <= 0 {
		return fmt.Errorf("%s: an empty image makes no block device", path)
	}
	if via != "loop" {
		src := &plainBlobSource{f: f, real: size, size: (size + 511) &^ 511}
		err := mkdevNBD(ctx, context.WithoutCancel(ctx), e, path, src, method, conns)
		if err == nil || via == "nbd" || !errorsIsNoNBD(err) {
			return err
		}
		e.log.Info("mkdev: no NBD in this kernel; using a loop device", "reason", err)
	}
	if size%512 != 0 {
		e.log.Warn("mkdev: a loop device shows whole 512-byte sectors only; the image's last partial sector is not visible", "image", path, "size", size)
	}
	d, err := blockdev.AttachLoop(path, blockdev.LoopOptions{PartScan: true})
	if err != nil {
		return err
	}
	mkdevReady(e, d.Path(), path, "loop", size&^511)
	<-ctx.Done()
	sdNotify("STOPPING=1\n")
	warnInUse(e, d.Path())
	if err := d.Detach(2 * time.Second); err != nil {
		return fmt.Errorf("detaching %s: %w", d.Path(), err)
	}
	return nil
}

func errorsIsNoNBD(err error) bool { return errors.Is(err, blockdev.ErrNoKernelNBD) }
