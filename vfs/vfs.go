// Package vfs serves casync images as read-only FUSE file systems with
// go-fuse: a catar archive as its file tree (Tree), and a blob as one file
// (Blob).
//
// Contracts:
//   - Bytes come from a Source, which vfs never owns: any number of reads run
//     concurrently, each straight at the payload offset it needs. There is no
//     per-handle lock and no seek position.
//   - Metadata comes from goodbye-table lookups in the archive (catar.Archive):
//     mounting reads only the root, and resolving a path reads only the
//     records on its way. A directory's listing is read once, on its first
//     readdir, and then also answers lookups in it.
//   - The image never changes, so entry and attribute timeouts are long and
//     the kernel page cache is kept across opens.
//   - Every error reaching the kernel goes through Errno: a cancelled read
//     (interrupted by a signal) is EINTR, a missing or corrupt chunk or a
//     malformed archive is EIO, and such failures are logged with the error,
//     which names the chunk and store.
//   - Every attempt to write is refused with EROFS.
//   - Metadata is exact where the archive records it: mode, owner, mtime in
//     ns, size, symlink target, device number, xattrs, file capabilities
//     (security.capability), SELinux label, ACLs (system.posix_acl_*) and
//     chattr flags (FS_IOC_GETFLAGS). The archive records no link counts:
//     files have 1 link, directories 1 ("unknown", as on btrfs). st_blocks
//     counts 4 KiB blocks of the size. Inode numbers are ENTRY offsets + 1.
//
// Speed, for a source that implements the optional Prefetcher: listing a
// directory first asks for the records of all its children at once, the
// directories below a listed directory are listed in the background ahead
// of the reader, in archive (depth-first) order and at most 64 MiB of
// archive ahead (at prefetch priority if the source is a BackgroundReader),
// and reads of file contents that walk the archive in order (tar, cp -r)
// prefetch the archive ahead of them. A tree
// over a source without HintedSource answers OPEN with ENOSYS, so the kernel
// stops sending OPEN and RELEASE.
//
// vfs does not import fetch or cache: *fetch.Blob satisfies Source.
package vfs

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"syscall"

	"github.com/camount/camount/catar"
)

// Source is the random-access byte stream behind a mount: the blob of a
// .caibx, or the catar stream of a .caidx. It must be safe for concurrent
// use. Like io.ReaderAt it may return io.EOF with a short count at the end.
type Source interface {
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
	Size() int64
}

// HintedSource is an optional interface of a Source that wants to know
// which open file a read belongs to, for example to detect sequential
// reads per file and read ahead. vfs gives every open a handle number,
// unique for the life of the mount, calls ReadAtHint instead of
// ReadAtContext for the reads of that open, and CloseHint when the kernel
// releases it. A tree mount over a source without hints answers OPEN with
// ENOSYS, which saves the kernel's OPEN and RELEASE round trips per file.
type HintedSource interface {
	Source
	ReadAtHint(ctx context.Context, p []byte, off int64, handle uint64) (int, error)
	CloseHint(handle uint64)
}

// Prefetcher is an optional interface of a Source: PrefetchRange asks for
// the bytes [off, off+n) to be fetched in the background, without waiting
// and without delaying reads. A tree mount calls it, when it lists a
// directory, for the records the listing is about to read, and it lists
// the subdirectories of a listed directory in the background, so that a
// walk (find, tar, du) finds its metadata already fetched.
type Prefetcher interface {
	PrefetchRange(off, n int64)
}

// UrgentPrefetcher is an optional interface of a Prefetcher:
// PrefetchUrgent asks for [off, off+n) at the priority of a waiting
// reader, raising fetches already queued or running for it. A tree mount
// calls it when the reader comes to a directory a crawler is still
// listing, for the records that listing reads.
type UrgentPrefetcher interface {
	PrefetchUrgent(off, n int64)
}

// Errno maps an error to the errno the kernel gets. It is the only place
// vfs turns errors into errnos.
func Errno(err error) syscall.Errno {
	var errno syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return syscall.EINTR
	case errors.As(err, &errno):
		return errno
	case errors.Is(err, fs.ErrNotExist):
		return syscall.ENOENT
	}
	return syscall.EIO // missing or corrupt chunk, malformed archive, store failure
}

// readAt reads len(p) bytes at off of src, through the hint when the source
// takes one.
func readAt(ctx context.Context, src Source, p []byte, off int64, handle uint64) (int, error) {
	if h, ok := src.(HintedSource); ok && handle != 0 {
		return h.ReadAtHint(ctx, p, off, handle)
	}
	return src.ReadAtContext(ctx, p, off)
}

// readFull reads up to len(p) bytes at off, stopping early only at the end
// of the source. It returns the count and any error other than io.EOF.
func readFull(ctx context.Context, src Source, p []byte, off int64, handle uint64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := readAt(ctx, src, p[n:], off+int64(n), handle)
		n += m
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, nil
		}
	}
	return n, nil
}

// ReaderAt adapts a Source to io.ReaderAt (for catar.Open), reading with
// ctx.
func ReaderAt(ctx context.Context, src Source) io.ReaderAt { return readerAt{ctx, src} }

type readerAt struct {
	ctx context.Context
	src Source
}

func (r readerAt) ReadAt(p []byte, off int64) (int, error) { return r.src.ReadAtContext(r.ctx, p, off) }

// discard is a logger that drops everything (for a nil *slog.Logger).
var discard = slog.New(slog.DiscardHandler)

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return discard
	}
	return l
}

// ensure catar stays the only format dependency.
var _ = catar.ErrFormat
