package fetch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/camount/camount/chunker"
)

// ChunkSuffix is the file suffix of compressed chunks in a .castr store.
const ChunkSuffix = ".cacnk"

// LocalStore is a .castr directory: <dir>/<first 4 hex>/<hex>.cacnk.
type LocalStore struct {
	Dir  string
	dirs sync.Map // fan-out directories known to exist
}

// NewLocalStore returns a store for dir; it does not touch the disk.
func NewLocalStore(dir string) *LocalStore { return &LocalStore{Dir: dir} }

func (s *LocalStore) String() string { return s.Dir }

// Path returns where a compressed chunk lives in the store.
func (s *LocalStore) Path(id chunker.ID) string {
	h := id.String()
	return filepath.Join(s.Dir, h[:4], h+ChunkSuffix)
}

// Get reads <id>.cacnk, or an uncompressed <id> file (casync reads both).
// A symlink to /dev/null is casync's "known missing" marker.
func (s *LocalStore) Get(ctx context.Context, id chunker.ID) ([]byte, error) {
	return s.get(ctx, id, false)
}

// getPooled is Get reading into a buffer of the stored-bytes pool: the
// caller hands it back with putStoredBuf once it no longer uses the bytes
// (the scheduler, after decoding them into a fresh chunk).
func (s *LocalStore) getPooled(ctx context.Context, id chunker.ID) ([]byte, error) {
	return s.get(ctx, id, true)
}

func (s *LocalStore) get(ctx context.Context, id chunker.ID, pooled bool) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := s.Path(id)
	b, err := readChunkFile(p, pooled)
	if errors.Is(err, fs.ErrNotExist) {
		b, err = readChunkFile(p[:len(p)-len(ChunkSuffix)], pooled)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", p, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Stored bytes are read into pooled buffers of power-of-two sizes from
// storedBufMin to storedBufMax: they live only until decoded, so reusing
// them spares an allocation (zeroed, then overwritten) and its garbage per
// chunk. Size classes keep the pooled memory near what is in use.
const (
	storedBufMinShift = 12 // 4 KiB
	storedBufClasses  = 10 // up to 2 MiB
)

var storedBufs [storedBufClasses]sync.Pool // *[]byte of cap 1<<(storedBufMinShift+class)

func storedBufClass(n int) int {
	k := 0
	for k < storedBufClasses && 1<<(storedBufMinShift+k) < n {
		k++
	}
	return k
}

// storedBuf returns a buffer of length n, pooled if n fits a class.
func storedBuf(n int) []byte {
	k := storedBufClass(n)
	if k >= storedBufClasses {
		return make([]byte, n)
	}
	if bp, _ := storedBufs[k].Get().(*[]byte); bp != nil {
		return (*bp)[:n]
	}
	return make([]byte, n, 1<<(storedBufMinShift+k))
}

// putStoredBuf returns a buffer from storedBuf to its pool. The caller must
// not use b afterwards.
func putStoredBuf(b []byte) {
	c := cap(b)
	k := storedBufClass(c)
	if k >= storedBufClasses || c != 1<<(storedBufMinShift+k) {
		return // not from the pool
	}
	b = b[:0]
	storedBufs[k].Put(&b)
}

func readChunkFile(p string, pooled bool) ([]byte, error) {
	// Plain syscalls: os.Open would try to register every chunk file with
	// the network poller, which costs more than the read on this hot path.
	fd, err := openRetry(p)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: p, Err: err}
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		if st.Mode&syscall.S_IFMT == syscall.S_IFCHR && st.Rdev == devNull {
			return nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist) // casync's "known missing" marker
		}
		return nil, &NotRegularError{Path: p, Mode: st.Mode}
	}
	if st.Size > MaxChunkSize {
		return nil, fmt.Errorf("%s: %d bytes is larger than any chunk", p, st.Size)
	}
	var b []byte
	if pooled {
		b = storedBuf(int(st.Size))
	} else {
		b = make([]byte, st.Size)
	}
	n := 0
	for n < len(b) {
		m, err := syscall.Pread(fd, b[n:], int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			if pooled {
				putStoredBuf(b)
			}
			return nil, &fs.PathError{Op: "read", Path: p, Err: err}
		}
		if m == 0 {
			break // the file shrank: DecodeChunk rejects the short bytes
		}
		n += m
	}
	return b[:n], nil
}

// devNull is the device number of /dev/null (1:3), casync's marker for a
// chunk known to be missing when a chunk file is a symlink to it.
const devNull = 1<<8 | 3

// NotRegularError is a store file that is not a regular file (a FIFO, a
// socket, a device): it is refused, never read, since reading could block
// for ever or return endless bytes.
type NotRegularError struct {
	Path string
	Mode uint32 // st_mode
}

func (e *NotRegularError) Error() string {
	kind := "special file"
	switch e.Mode & syscall.S_IFMT {
	case syscall.S_IFIFO:
		kind = "FIFO"
	case syscall.S_IFSOCK:
		kind = "socket"
	case syscall.S_IFCHR:
		kind = "character device"
	case syscall.S_IFBLK:
		kind = "block device"
	case syscall.S_IFDIR:
		kind = "directory"
	}
	return fmt.Sprintf("%s: a %s, not a regular chunk file; refusing to read it", e.Path, kind)
}

// openRetry opens a store file for reading without blocking: O_NONBLOCK
// makes the open of a FIFO return at once (the caller's fstat then refuses
// it) and changes nothing for regular files.
func openRetry(p string) (int, error) {
	for {
		fd, err := syscall.Open(p, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
		if err != syscall.EINTR {
			return fd, err
		}
	}
}

// Has reports whether the store holds a compressed chunk file for id.
func (s *LocalStore) Has(id chunker.ID) bool {
	_, err := os.Stat(s.Path(id))
	return err == nil
}

// Put stores compressed bytes atomically: written to a temporary file in the
// fan-out directory, then renamed into place, so concurrent writers and
// readers never see a torn file.
func (s *LocalStore) Put(id chunker.ID, stored []byte) error {
	p := s.Path(id)
	dir := filepath.Dir(p)
	if _, ok := s.dirs.Load(dir); !ok {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		s.dirs.Store(dir, true)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := p + "." + hex.EncodeToString(rnd[:]) + ".tmp"
	// Plain syscalls, as in readChunkFile: no poller registration per chunk.
	fd, err := syscall.Open(tmp, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, 0o444)
	if err != nil {
		return &fs.PathError{Op: "open", Path: tmp, Err: err}
	}
	for b := stored; len(b) > 0 && err == nil; {
		var n int
		n, err = syscall.Write(fd, b)
		if err == syscall.EINTR {
			err = nil
		}
		if n > 0 {
			b = b[n:]
		}
	}
	if cerr := syscall.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		err = &fs.PathError{Op: "write", Path: tmp, Err: err}
	}
	if err == nil {
		// Replacing an existing file is harmless: same ID, same content
		// (and a corrupt old file gets repaired).
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
