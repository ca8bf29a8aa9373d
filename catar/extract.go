package catar

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"unsafe"
)

// ExtractOptions configures Extract. The zero value restores everything the
// archive holds that the process is allowed to restore.
type ExtractOptions struct {
	// Features selects what to restore (WITH_* bits, as casync extract's
	// --with/--without); 0 means everything the archive holds. Entries of
	// types outside it (symlinks, devices, fifos, sockets) are skipped.
	Features uint64
	// Log receives warnings about metadata that could not be restored
	// (for example ownership as a normal user); nil discards them.
	Log *slog.Logger
}

// Extract reads an archive from d and recreates it under dir, which is
// created if missing. Ownership, device nodes, trusted.* xattrs, file
// capabilities and chattr flags need privileges: without them they are
// skipped with a warning. Directories are created in archive order; files
// are created and written by a few workers; directory metadata is applied
// last, deepest first.
func Extract(ctx context.Context, d *Decoder, dir string, o ExtractOptions) error {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mask := o.Features & WithMask
	if mask == 0 {
		mask = WithMask
	}
	x := &extractor{log: log, root: os.Geteuid() == 0, ids: map[string]uint32{}, mask: mask}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	type job struct {
		e    *Entry
		path string
		data []byte
	}
	jobs := make(chan job, 256)
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	setErr := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
	}
	failed := func() bool {
		errMu.Lock()
		defer errMu.Unlock()
		return firstErr != nil
	}
	for i := 0; i < extractWorkers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if failed() {
					continue
				}
				fd, skipped, err := x.create(j.path, j.e, j.data, nil)
				if err == nil && !skipped {
					err = x.meta(j.path, j.e, fd)
				}
				if fd >= 0 {
					syscall.Close(fd)
				}
				if err != nil {
					setErr(err)
				}
			}
		}()
	}
	type pending struct {
		e    *Entry
		path string
	}
	var dirs []pending
	loopErr := func() error {
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			if failed() {
				return nil
			}
			e, err := d.Next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if skipType(e, x.mask) {
				continue
			}
			path := filepath.Join(dir, filepath.FromSlash(e.Path))
			switch {
			case e.IsDir():
				if _, _, err := x.create(path, e, nil, nil); err != nil {
					return err
				}
				dirs = append(dirs, pending{e, path})
			case e.IsRegular() && e.Size > inlineExtractSize:
				// Large files stream straight from the archive.
				fd, _, err := x.create(path, e, nil, d)
				if err != nil {
					return err
				}
				err = x.meta(path, e, fd)
				syscall.Close(fd)
				if err != nil {
					return err
				}
			case e.IsRegular():
				data := make([]byte, e.Size)
				if _, err := io.ReadFull(d, data); err != nil {
					return err
				}
				jobs <- job{e, path, data}
			default:
				jobs <- job{e, path, nil}
			}
		}
	}()
	close(jobs)
	wg.Wait()
	if loopErr != nil {
		return loopErr
	}
	if firstErr != nil {
		return firstErr
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := x.meta(dirs[i].path, dirs[i].e, -1); err != nil {
			return err
		}
	}
	return nil
}

const (
	extractWorkers    = 4
	inlineExtractSize = 1 << 20
)

type extractor struct {
	log  *slog.Logger
	root bool
	mask uint64 // WITH_* features to restore
	mu   sync.Mutex
	ids  map[string]uint32
}

// skipType reports entries whose type the features leave out.
func skipType(e *Entry, mask uint64) bool {
	switch e.Type() {
	case ModeLink:
		return mask&WithSymlinks == 0
	case ModeBlock, ModeChar:
		return mask&WithDeviceNodes == 0
	case ModeFIFO:
		return mask&WithFIFOs == 0
	case ModeSock:
		return mask&WithSockets == 0
	}
	return false
}

// create makes the node at path; a regular file's contents come from data,
// or from d when data is nil. A regular file is returned open (fd ≥ 0) so
// its metadata can be set through the descriptor. skipped reports a node
// that could not be created without privileges.
func (x *extractor) create(path string, e *Entry, data []byte, d *Decoder) (fd int, skipped bool, err error) {
	fd = -1
	for try := 0; ; try++ {
		err = x.mknode(path, e, &fd)
		if err == syscall.EEXIST && e.IsDir() {
			var st syscall.Stat_t
			if syscall.Lstat(path, &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
				err = nil
			}
		}
		if err != syscall.EEXIST || try > 0 || e.Path == "" {
			break
		}
		// Something else is in the way (extracting over an older tree).
		clearImmutable(path)
		if rerr := os.RemoveAll(path); rerr != nil {
			return -1, false, rerr
		}
	}
	if err != nil {
		if (err == syscall.EPERM || err == syscall.EACCES) && !x.root && (e.Type() == ModeBlock || e.Type() == ModeChar) {
			x.log.Warn("cannot create device node without privileges", "path", path)
			return -1, true, nil
		}
		return -1, false, &os.PathError{Op: "create", Path: path, Err: err}
	}
	if e.IsRegular() {
		w := &sparseWriter{fd: fd}
		if data != nil {
			_, err = w.Write(data)
		} else {
			_, err = d.WriteTo(w)
		}
		if err == nil && w.off != e.Size {
			err = fmt.Errorf("wrote %d of %d bytes", w.off, e.Size)
		}
		if err == nil && w.holeAtEnd {
			err = syscall.Ftruncate(fd, e.Size)
		}
		if err != nil {
			syscall.Close(fd)
			return -1, false, fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return fd, false, nil
}

func (x *extractor) mknode(path string, e *Entry, fd *int) error {
	switch e.Type() {
	case ModeDir:
		return syscall.Mkdir(path, 0o700)
	case ModeReg:
		f, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		*fd = f
		return nil
	case ModeLink:
		return syscall.Symlink(e.Target, path)
	case ModeFIFO:
		return syscall.Mkfifo(path, 0o600)
	case ModeSock, ModeBlock, ModeChar:
		return syscall.Mknod(path, e.Type()|0o600, int(e.Rdev()))
	}
	return nil
}

// sparseWriter writes to a file descriptor, leaving holes for aligned
// 4 KiB blocks of zeros.
type sparseWriter struct {
	fd        int
	off       int64
	holeAtEnd bool
}

func (s *sparseWriter) Write(p []byte) (int, error) {
	const blk = 4096
	n := 0
	for len(p) > 0 {
		// A run of data blocks, written at once.
		k := 0
		for k < len(p) {
			end := k + blk
			if end > len(p) {
				end = len(p)
			}
			if end-k == blk && allZero(p[k:end]) {
				break
			}
			k = end
		}
		for k > 0 {
			m, err := syscall.Pwrite(s.fd, p[:k], s.off)
			if err != nil {
				return n, err
			}
			s.off += int64(m)
			n += m
			p = p[m:]
			k -= m
			s.holeAtEnd = false
		}
		// A run of zero blocks, skipped.
		z := 0
		for z+blk <= len(p) && allZero(p[z:z+blk]) {
			z += blk
		}
		if z > 0 {
			s.off += int64(z)
			n += z
			p = p[z:]
			s.holeAtEnd = true
		}
	}
	return n, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

const fsIocSetflags = 0x40086602

// meta restores metadata in an order that keeps it: ownership before modes
// and capabilities (chown clears them), chattr and times last.
//
// fd, if ≥ 0, is the open regular file at path.
func (x *extractor) meta(path string, e *Entry, fd int) error {
	t := e.Type()
	hasUID := e.HasUID() && x.mask&withUIDs != 0
	names := x.mask&WithUserNames != 0 && (e.User != "" || e.Group != "")
	if hasUID || names {
		uid, gid := int(e.UID), int(e.GID)
		if !hasUID {
			uid, gid = -1, -1
			if e.User != "" {
				uid = x.lookup(e.User, false)
			}
			if e.Group != "" {
				gid = x.lookup(e.Group, true)
			}
		}
		var err error
		if fd >= 0 {
			err = syscall.Fchown(fd, uid, gid)
		} else {
			err = os.Lchown(path, uid, gid)
		}
		if err != nil {
			if x.root {
				return err
			}
			x.log.Debug("cannot restore ownership", "path", path, "err", err)
		}
	}
	if t != ModeLink {
		for _, xa := range e.Xattrs {
			if x.mask&WithXattrs == 0 {
				break
			}
			if err := syscall.Setxattr(path, xa.Name, xa.Value, 0); err != nil {
				if x.root {
					return &os.PathError{Op: "setxattr " + xa.Name, Path: path, Err: err}
				}
				x.log.Warn("cannot restore xattr", "path", path, "name", xa.Name, "err", err)
			}
		}
		if e.Features&x.mask&(WithPermissions|WithACL|WithReadOnly) != 0 {
			var err error
			if fd >= 0 {
				err = syscall.Fchmod(fd, e.Mode&ModePerm)
			} else {
				err = syscall.Chmod(path, e.Mode&ModePerm)
			}
			if err != nil {
				return &os.PathError{Op: "chmod", Path: path, Err: err}
			}
		}
		if e.ACL != nil && x.mask&WithACL != 0 {
			if err := x.acl(path, e); err != nil {
				return err
			}
		}
		if e.FCaps != nil && x.mask&WithFCaps != 0 {
			if err := syscall.Setxattr(path, "security.capability", e.FCaps, 0); err != nil {
				if x.root {
					return &os.PathError{Op: "setxattr security.capability", Path: path, Err: err}
				}
				x.log.Warn("cannot restore file capabilities", "path", path, "err", err)
			}
		}
	}
	if e.HasMTime() && x.mask&withTimes != 0 {
		ns := int64(e.MTime)
		ts := []syscall.Timespec{{Sec: ns / 1e9, Nsec: ns % 1e9}, {Sec: ns / 1e9, Nsec: ns % 1e9}}
		if ns < 0 && ns%1e9 != 0 {
			ts[0] = syscall.Timespec{Sec: ns/1e9 - 1, Nsec: ns%1e9 + 1e9}
			ts[1] = ts[0]
		}
		var err error
		if fd >= 0 {
			err = futimens(fd, ts)
		} else {
			err = utimensat(path, ts)
		}
		if err != nil {
			return &os.PathError{Op: "utimensat", Path: path, Err: err}
		}
	}
	if e.Flags&x.mask&WithChattr != 0 && (t == ModeReg || t == ModeDir) {
		if err := setChattr(path, fd, ChattrFromFlags(e.Flags&x.mask)); err != nil {
			if x.root {
				return err
			}
			x.log.Warn("cannot restore file attributes", "path", path, "err", err)
		}
	}
	return nil
}

func utimensat(path string, ts []syscall.Timespec) error {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return err
	}
	const atFdcwd = -100
	const atSymlinkNofollow = 0x100
	dirfd := atFdcwd
	_, _, errno := syscall.Syscall6(syscall.SYS_UTIMENSAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		uintptr(unsafe.Pointer(&ts[0])), atSymlinkNofollow, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// clearImmutable drops the immutable and append-only attributes of a file
// or directory in the way, so that it can be replaced.
func clearImmutable(path string) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer syscall.Close(fd)
	f := &rawFile{fd: fd, name: path}
	var v [8]byte
	if ioctlPtr(f, fsIocGetflags, unsafe.Pointer(&v[0])) != 0 {
		return
	}
	cur := le.Uint32(v[:])
	if cur&0x30 == 0 {
		return
	}
	le.PutUint32(v[:], cur&^0x30)
	ioctlPtr(f, fsIocSetflags, unsafe.Pointer(&v[0]))
}

func futimens(fd int, ts []syscall.Timespec) error {
	_, _, errno := syscall.Syscall6(syscall.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func setChattr(path string, fd int, flags uint64) error {
	if fd < 0 {
		var err error
		fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: path, Err: err}
		}
		defer syscall.Close(fd)
	}
	f := &rawFile{fd: fd, name: path}
	var v [8]byte
	if errno := ioctlPtr(f, fsIocGetflags, unsafe.Pointer(&v[0])); errno != 0 {
		return &os.PathError{Op: "FS_IOC_GETFLAGS", Path: path, Err: errno}
	}
	cur := uint64(le.Uint32(v[:]))
	all := ChattrFromFlags(WithChattr)
	nv := cur&^all | flags
	if nv == cur {
		return nil
	}
	le.PutUint32(v[:], uint32(nv))
	if errno := ioctlPtr(f, fsIocSetflags, unsafe.Pointer(&v[0])); errno != 0 {
		return &os.PathError{Op: "FS_IOC_SETFLAGS", Path: path, Err: errno}
	}
	return nil
}

func (x *extractor) lookup(name string, group bool) int {
	key := "u:" + name
	if group {
		key = "g:" + name
	}
	x.mu.Lock()
	id, ok := x.ids[key]
	x.mu.Unlock()
	if ok {
		return int(id)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	var s string
	if group {
		if g, err := user.LookupGroup(name); err == nil {
			s = g.Gid
		}
	} else if u, err := user.Lookup(name); err == nil {
		s = u.Uid
	}
	if s == "" {
		s = name // casync stores the decimal id when the name is unknown
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return -1
	}
	x.ids[key] = uint32(v)
	return int(v)
}

func (x *extractor) acl(path string, e *Entry) error {
	var o ACLXattrOptions
	if !e.HasUID() {
		o.ID = func(a ACLEntry, group bool) (uint32, bool) {
			v := x.lookup(a.Name, group)
			return uint32(v), v >= 0
		}
	}
	access, dflt := ACLXattrs(e, o)
	set := func(name string, v []byte) error {
		if v == nil {
			return nil
		}
		if err := syscall.Setxattr(path, name, v, 0); err != nil {
			if x.root {
				return &os.PathError{Op: "setxattr " + name, Path: path, Err: err}
			}
			x.log.Warn("cannot restore ACL", "path", path, "err", err)
		}
		return nil
	}
	if err := set("system.posix_acl_access", access); err != nil {
		return err
	}
	return set("system.posix_acl_default", dflt)
}
