package vfs

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// MountOptions configure Mount. The zero value mounts for the calling user
// only, with camount's defaults.
type MountOptions struct {
	// FsName is shown as the mount's source in /proc/mounts and df (for
	// example the index path). Default "camount".
	FsName string
	// AllowOther lets other users access the mount (fuse allow_other).
	// Permission bits are enforced by the kernel (default_permissions).
	AllowOther bool
	// MaxRead is the largest read request, in bytes. Default
	// DefaultMaxRead (256 KiB). go-fuse takes a reply buffer of this
	// size for every read the kernel sends before the file system sees
	// it, and the kernel sends one per reading thread (plus
	// MaxBackground readahead): 64 O_DIRECT readers held 64 MiB of
	// buffers at 1 MiB.
	MaxRead int
	// Readahead is the kernel's readahead for the mount, in bytes (set
	// through sysfs, so only as root; otherwise the kernel's 128 KiB).
	// It may exceed MaxRead: the kernel splits it into MaxRead requests
	// sent at once. Default 1 MiB.
	Readahead int
	// MaxBackground is the number of asynchronous (readahead) requests the
	// kernel may have in flight. Default 64.
	MaxBackground int
	// MaxInflight bounds the FUSE requests taken from the kernel at once
	// (being served, or being read); the kernel queues the rest. Each
	// holds an input buffer of MaxRead bytes and a read reply of up to
	// MaxRead, so this bounds that memory to about 2 × MaxInflight ×
	// MaxRead whatever the number of readers (64 O_DIRECT readers of
	// 4 MiB otherwise put 256 requests in flight). Default 16.
	MaxInflight int
	// Timeout is how long the kernel may cache entries and attributes
	// (the image never changes). Default 24 hours.
	Timeout time.Duration
	// Debug logs every FUSE request to Log.
	Debug bool
	// Log receives diagnostics; nil discards them.
	Log *slog.Logger
}

// DefaultMaxRead is MountOptions.MaxRead's default. Smaller requests cost
// more round trips: hot O_DIRECT reads of 1 MiB took ~0.05 s more CPU per
// GiB at 256 KiB than at 1 MiB (about 1.5% of a cold read of the corpus
// image, which decodes chunks), 0.12 s at 128 KiB.
const DefaultMaxRead = 256 << 10

// Mount mounts root (from NewBlob or NewTree) read-only at dir and starts
// serving it. It returns once the kernel has the mount. The caller ends it
// with Unmount (or waits for an external fusermount -u with Wait).
func Mount(dir string, root fs.InodeEmbedder, o MountOptions) (*fuse.Server, error) {
	if o.FsName == "" {
		o.FsName = "camount"
	}
	if o.MaxRead <= 0 {
		o.MaxRead = DefaultMaxRead
	}
	if o.Readahead <= 0 {
		o.Readahead = 1 << 20
	}
	if o.MaxBackground <= 0 {
		o.MaxBackground = 64
	}
	if o.Timeout <= 0 {
		o.Timeout = 24 * time.Hour
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = 16
	}
	lg := logger(o.Log)
	timeout := o.Timeout
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther: o.AllowOther,
			// ro: the kernel refuses writes with EROFS and statvfs reports
			// ST_RDONLY; default_permissions: the kernel checks the stored
			// mode and owner, and with EnableAcl also the stored POSIX
			// ACLs (read through the system.posix_acl_* xattrs), so
			// --allow-other grants and denies as the source did.
			Options:       []string{"ro", "default_permissions"},
			EnableAcl:     true,
			MaxBackground: o.MaxBackground,
			// go-fuse counts an input buffer (MaxWrite plus headers)
			// and a request struct per request taken from the kernel.
			MaxInflightRequestBytes: o.MaxInflight * (o.MaxRead + 64<<10),
			MaxWrite:                o.MaxRead,
			MaxReadAhead:            o.Readahead,
			FsName:                  strings.ReplaceAll(o.FsName, ",", "_"),
			Name:                    "camount",
			Debug:                   o.Debug,
			// The image never changes: the kernel may cache symlink
			// targets and need not invalidate file data on attribute
			// changes, which never come.
			EnableSymlinkCaching:     true,
			ExplicitDataCacheControl: true,
			// Splicing only helps replies backed by a file descriptor;
			// ours are bytes in memory, for which go-fuse would first
			// write the reply header into a pipe, find it cannot splice
			// and throw the pipe away: a wasted round of syscalls per
			// read.
			DisableSplice: true,
			Logger:        log.New(slogWriter{lg}, "", 0),
		},
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		NullPermissions: true, // mode 0 stays 0: report what the archive says
		RootStableAttr:  &fs.StableAttr{Ino: 1, Mode: syscall.S_IFDIR},
		Logger:          log.New(slogWriter{lg}, "", 0),
	}
	var raw fuse.RawFileSystem = fs.NewNodeFS(root, opts)
	if _, ok := root.(*TreeNode); ok {
		raw = &noOpendir{RawFileSystem: raw}
	}
	srv, err := fuse.NewServer(raw, dir, &opts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("mounting on %s: %w", dir, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		return nil, fmt.Errorf("mounting on %s: %w", dir, err)
	}
	setReadahead(dir, o.Readahead, lg)
	return srv, nil
}

// setReadahead raises the kernel's readahead for the mount to n bytes:
// FUSE can only lower the default 128 KiB at init, but root can raise it
// in sysfs. Best effort.
func setReadahead(dir string, n int, lg *slog.Logger) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return
	}
	major, minor := (st.Dev>>8)&0xfff|(st.Dev>>32)&^0xfff, st.Dev&0xff|(st.Dev>>12)&^0xff
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", major, minor)
	if err := os.WriteFile(p, []byte(strconv.Itoa(n>>10)), 0); err != nil {
		lg.Debug("cannot raise readahead", "file", p, "err", err)
	}
}

// slogWriter turns go-fuse's log.Logger lines into debug records.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug("fuse", "msg", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// statfs fills a read-only statfs: the image size in 4 KiB blocks, nothing
// free.
func statfs(out *fuse.StatfsOut, size int64, files uint64) {
	*out = fuse.StatfsOut{}
	out.Bsize = 4096
	out.Frsize = 4096
	out.Blocks = uint64(size+4095) / 4096
	out.Files = files
	out.NameLen = 255
}

// timeAttr sets all three times of a to ns nanoseconds since the epoch
// (two's complement for times before 1970).
func timeAttr(a *fuse.Attr, ns int64) {
	sec, nsec := ns/1e9, ns%1e9
	if nsec < 0 {
		sec--
		nsec += 1e9
	}
	a.Mtime, a.Mtimensec = uint64(sec), uint32(nsec)
	a.Atime, a.Atimensec = a.Mtime, a.Mtimensec
	a.Ctime, a.Ctimensec = a.Mtime, a.Mtimensec
}

// blocks512 is st_blocks for n bytes stored in 4 KiB blocks (no overflow
// for any size an archive can claim).
func blocks512(n int64) uint64 { return (uint64(max(n, 0)) + 4095) / 4096 * 8 }

// fileHandle is one open of a regular file: its handle number for
// HintedSource.
type fileHandle struct {
	id  uint64
	src Source
}

var _ = (fs.FileReleaser)((*fileHandle)(nil))

func (h *fileHandle) Release(ctx context.Context) syscall.Errno {
	if hs, ok := h.src.(HintedSource); ok {
		hs.CloseHint(h.id)
	}
	return 0
}

func handleID(f fs.FileHandle) uint64 {
	if h, ok := f.(*fileHandle); ok {
		return h.id
	}
	return 0
}

// openFlags checks an open for read-only use.
func openFlags(flags uint32) syscall.Errno {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&(syscall.O_TRUNC|syscall.O_CREAT) != 0 {
		return syscall.EROFS
	}
	return 0
}

// MaxConcurrentReads bounds the FUSE reads of a process that fetch and copy
// chunks at the same time; further reads wait (interruptibly) for a slot.
// With reads of up to 256 KiB (MountOptions.MaxRead) the chunks they hold
// stay within a few tens of MiB however many readers there are.
const MaxConcurrentReads = 16

var readSlots = make(chan struct{}, MaxConcurrentReads)

// readPayload serves a FUSE read of [off, off+len(dest)) of a file whose
// bytes are src[base, base+size).
func readPayload(ctx context.Context, lg *slog.Logger, src Source, path string, base, size int64, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	if rem := size - off; int64(len(dest)) > rem {
		dest = dest[:rem]
	}
	// Bound the reads that fetch at once: each holds the verified chunks
	// it copies from until it is done, so memory would otherwise grow
	// with the number of readers.
	select {
	case readSlots <- struct{}{}:
	case <-ctx.Done():
		return nil, syscall.EINTR
	}
	n, err := readFull(ctx, src, dest, base+off, handleID(f))
	<-readSlots
	if err != nil {
		errno := Errno(err)
		if errno == syscall.EINTR {
			lg.Debug("read interrupted", "file", path, "offset", off, "len", len(dest))
		} else {
			lg.Error("read failed", "file", path, "offset", off, "len", len(dest), "err", err)
		}
		return nil, errno
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// xattrReply answers getxattr/listxattr size probes and copies.
func xattrReply(val []byte, dest []byte) (uint32, syscall.Errno) {
	if len(dest) == 0 {
		return uint32(len(val)), 0
	}
	if len(dest) < len(val) {
		return uint32(len(val)), syscall.ERANGE
	}
	return uint32(copy(dest, val)), 0
}
