package vfs

import (
	"context"
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// BlobOptions describe the single file of a blob mount. Zero values are
// the defaults given per field.
type BlobOptions struct {
	// Name is the file's name (required; no slash).
	Name string
	// Perm is the file's permission bits. Default 0444.
	Perm uint32
	// UID and GID own the root directory and the file.
	UID, GID uint32
	// MTime is the time of the root and the file (for example the index
	// file's modification time). Default the Unix epoch.
	MTime time.Time
	// Log receives read failures; nil discards them.
	Log *slog.Logger
}

// BlobRoot is the root directory of a blob mount: one read-only file
// holding the bytes of a Source, so that fdisk, losetup -r and mount -o
// loop,ro can use it.
type BlobRoot struct {
	fs.Inode
	readOnly
	src     Source
	o       BlobOptions
	log     *slog.Logger
	file    *blobFile
	handles atomic.Uint64 // last handle number given out
}

// blobFile is the one file. Its inode number is 2.
type blobFile struct {
	fs.Inode
	readOnly
	r *BlobRoot
}

// NewBlob returns the root of a file system holding src as one file.
func NewBlob(src Source, o BlobOptions) *BlobRoot {
	if o.Perm == 0 {
		o.Perm = 0444
	}
	r := &BlobRoot{src: src, o: o, log: logger(o.Log)}
	r.file = &blobFile{r: r}
	return r
}

var (
	_ = (fs.NodeOnAdder)((*BlobRoot)(nil))
	_ = (fs.NodeGetattrer)((*BlobRoot)(nil))
	_ = (fs.NodeStatfser)((*BlobRoot)(nil))
	_ = (fs.NodeGetattrer)((*blobFile)(nil))
	_ = (fs.NodeOpener)((*blobFile)(nil))
	_ = (fs.NodeReader)((*blobFile)(nil))
	_ = (fs.NodeStatfser)((*blobFile)(nil))
	_ = (fs.NodeListxattrer)((*blobFile)(nil))
	_ = (fs.NodeGetxattrer)((*blobFile)(nil))
)

func (r *BlobRoot) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, r.file, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2})
	r.AddChild(r.o.Name, ch, false)
}

func (r *BlobRoot) attr(a *fuse.Attr, ino uint64, mode uint32, size int64, nlink uint32) {
	a.Ino = ino
	a.Mode = mode
	a.Size = uint64(size)
	a.Blocks = blocks512(size)
	a.Blksize = 4096
	a.Nlink = nlink
	a.Uid, a.Gid = r.o.UID, r.o.GID
	timeAttr(a, r.o.MTime.UnixNano())
}

func (r *BlobRoot) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r.attr(&out.Attr, 1, syscall.S_IFDIR|0555, 0, 2)
	return 0
}

func (r *BlobRoot) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	statfs(out, r.src.Size(), 2)
	return 0
}

func (f *blobFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.r.attr(&out.Attr, 2, syscall.S_IFREG|f.r.o.Perm, f.r.src.Size(), 1)
	return 0
}

func (f *blobFile) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return f.r.Statfs(ctx, out)
}

func (f *blobFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if errno := openFlags(flags); errno != 0 {
		return nil, 0, errno
	}
	return &fileHandle{id: f.r.handles.Add(1), src: f.r.src}, fuse.FOPEN_KEEP_CACHE, 0
}

func (f *blobFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return readPayload(ctx, f.r.log, f.r.src, f.r.o.Name, 0, f.r.src.Size(), fh, dest, off)
}

func (f *blobFile) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return 0, 0
}

func (f *blobFile) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENODATA
}
