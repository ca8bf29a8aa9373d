package catar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"unsafe"
)

// ExtractOptions configures Extract. The zero value restores everything the
// archive holds that the process is allowed to restore.
type ExtractOptions struct {
	// Log receives warnings about metadata that could not be restored
	// (for example ownership as a normal user); nil discards them.
	Log *slog.Logger
}

// Extract reads an archive from d and recreates it under dir, which is
// created if missing. Ownership, device nodes, trusted.* xattrs, file
// capabilities and chattr flags need privileges: without them they are
// skipped with a warning.
func Extract(ctx context.Context, d *Decoder, dir string, o ExtractOptions) error {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	x := &extractor{log: log, root: os.Geteuid() == 0, ids: map[string]uint32{}}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	type pending struct {
		e    *Entry
		path string
	}
	var stack []pending
	finish := func(n int) error {
		for len(stack) > n {
			p := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if err := x.meta(p.path, p.e); err != nil {
				return err
			}
		}
		return nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, err := d.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		depth := 0
		if e.Path != "" {
			depth = 1
			for i := 0; i < len(e.Path); i++ {
				if e.Path[i] == '/' {
					depth++
				}
			}
		}
		if err := finish(depth); err != nil {
			return err
		}
		path := filepath.Join(dir, filepath.FromSlash(e.Path))
		if err := x.create(path, e, d); err != nil {
			return err
		}
		if e.IsDir() {
			stack = append(stack, pending{e, path})
		} else if err := x.meta(path, e); err != nil {
			return err
		}
	}
	return finish(0)
}

type extractor struct {
	log  *slog.Logger
	root bool
	ids  map[string]uint32
}

func (x *extractor) create(path string, e *Entry, d *Decoder) error {
	if e.Path != "" {
		if fi, err := os.Lstat(path); err == nil {
			if !(fi.IsDir() && e.IsDir()) {
				if err := os.RemoveAll(path); err != nil {
					return err
				}
			}
		}
	}
	switch e.Type() {
	case ModeDir:
		if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	case ModeReg:
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		_, err = d.WriteTo(sparseWriter{f})
		if err == nil {
			err = f.Truncate(e.Size)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	case ModeLink:
		if err := os.Symlink(e.Target, path); err != nil {
			return err
		}
	case ModeFIFO:
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			return &os.PathError{Op: "mkfifo", Path: path, Err: err}
		}
	case ModeSock, ModeBlock, ModeChar:
		if err := syscall.Mknod(path, e.Type()|0o600, int(e.Rdev())); err != nil {
			if !x.root && e.Type() != ModeSock {
				x.log.Warn("cannot create device node without privileges", "path", path)
				return nil
			}
			return &os.PathError{Op: "mknod", Path: path, Err: err}
		}
	}
	return nil
}

// sparseWriter leaves holes for blocks of zeros.
type sparseWriter struct{ f *os.File }

func (s sparseWriter) Write(p []byte) (int, error) {
	const blk = 4096
	n := 0
	for len(p) > 0 {
		k := len(p)
		if k > blk {
			k = blk
		}
		if k == blk && allZero(p[:k]) {
			if _, err := s.f.Seek(blk, io.SeekCurrent); err != nil {
				return n, err
			}
		} else if _, err := s.f.Write(p[:k]); err != nil {
			return n, err
		}
		n += k
		p = p[k:]
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
func (x *extractor) meta(path string, e *Entry) error {
	if _, err := os.Lstat(path); err != nil {
		return nil // e.g. a device node we could not create
	}
	t := e.Type()
	if e.HasUID() || e.User != "" || e.Group != "" {
		uid, gid := int(e.UID), int(e.GID)
		if !e.HasUID() {
			uid, gid = -1, -1
			if e.User != "" {
				uid = x.lookup(e.User, false)
			}
			if e.Group != "" {
				gid = x.lookup(e.Group, true)
			}
		}
		if err := os.Lchown(path, uid, gid); err != nil {
			if x.root {
				return err
			}
			x.log.Debug("cannot restore ownership", "path", path, "err", err)
		}
	}
	if t != ModeLink {
		for _, xa := range e.Xattrs {
			if err := syscall.Setxattr(path, xa.Name, xa.Value, 0); err != nil {
				if x.root {
					return &os.PathError{Op: "setxattr " + xa.Name, Path: path, Err: err}
				}
				x.log.Warn("cannot restore xattr", "path", path, "name", xa.Name, "err", err)
			}
		}
		if e.Features&(WithPermissions|WithACL|WithReadOnly) != 0 {
			if err := syscall.Chmod(path, e.Mode&ModePerm); err != nil {
				return &os.PathError{Op: "chmod", Path: path, Err: err}
			}
		}
		if e.ACL != nil {
			if err := x.acl(path, e); err != nil {
				return err
			}
		}
		if e.FCaps != nil {
			if err := syscall.Setxattr(path, "security.capability", e.FCaps, 0); err != nil {
				if x.root {
					return &os.PathError{Op: "setxattr security.capability", Path: path, Err: err}
				}
				x.log.Warn("cannot restore file capabilities", "path", path, "err", err)
			}
		}
	}
	if e.HasMTime() {
		ns := int64(e.MTime)
		ts := []syscall.Timespec{{Sec: ns / 1e9, Nsec: ns % 1e9}, {Sec: ns / 1e9, Nsec: ns % 1e9}}
		if ns < 0 && ns%1e9 != 0 {
			ts[0] = syscall.Timespec{Sec: ns/1e9 - 1, Nsec: ns%1e9 + 1e9}
			ts[1] = ts[0]
		}
		if err := utimensat(path, ts); err != nil {
			return &os.PathError{Op: "utimensat", Path: path, Err: err}
		}
	}
	if e.Flags&WithChattr != 0 && (t == ModeReg || t == ModeDir) {
		if err := setChattr(path, ChattrFromFlags(e.Flags)); err != nil {
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

func setChattr(path string, flags uint64) error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
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
	if id, ok := x.ids[key]; ok {
		return int(id)
	}
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
	id, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return -1
	}
	x.ids[key] = uint32(id)
	return int(id)
}

type aclXEntry struct {
	tag  uint16
	perm uint16
	id   uint32
}

func (x *extractor) aclEntries(l []ACLEntry, tag uint16, hasID, group bool) []aclXEntry {
	var out []aclXEntry
	for _, a := range l {
		id := uint32(a.ID)
		if !hasID {
			v := x.lookup(a.Name, group)
			if v < 0 {
				continue
			}
			id = uint32(v)
		}
		out = append(out, aclXEntry{tag, uint16(a.Perm), id})
	}
	return out
}

func encodeACL(es []aclXEntry) []byte {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].tag != es[j].tag {
			return es[i].tag < es[j].tag
		}
		return es[i].id < es[j].id
	})
	b := le.AppendUint32(nil, 2)
	for _, e := range es {
		b = le.AppendUint16(b, e.tag)
		b = le.AppendUint16(b, e.perm)
		b = le.AppendUint32(b, e.id)
	}
	return b
}

func (x *extractor) acl(path string, e *Entry) error {
	a := e.ACL
	hasID := e.HasUID()
	const undef = 0xffffffff
	set := func(name string, v []byte) error {
		if err := syscall.Setxattr(path, name, v, 0); err != nil {
			if x.root {
				return &os.PathError{Op: "setxattr " + name, Path: path, Err: err}
			}
			x.log.Warn("cannot restore ACL", "path", path, "err", err)
		}
		return nil
	}
	if a.HasGroupObj || len(a.User) > 0 || len(a.Group) > 0 {
		m := e.Mode
		es := []aclXEntry{{aclUserObj, uint16(m >> 6 & 7), undef}, {aclOther, uint16(m & 7), undef}}
		g := uint16(m >> 3 & 7)
		if a.HasGroupObj {
			es = append(es, aclXEntry{aclGroupObj, uint16(a.GroupObj), undef}, aclXEntry{aclMask, g, undef})
		} else {
			es = append(es, aclXEntry{aclGroupObj, g, undef})
		}
		es = append(es, x.aclEntries(a.User, aclUser, hasID, false)...)
		es = append(es, x.aclEntries(a.Group, aclGroup, hasID, true)...)
		if err := set("system.posix_acl_access", encodeACL(es)); err != nil {
			return err
		}
	}
	if d := a.Default; d != nil {
		es := []aclXEntry{{aclUserObj, uint16(d.UserObj), undef}, {aclGroupObj, uint16(d.GroupObj), undef}, {aclOther, uint16(d.Other), undef}}
		if d.Mask != NoMask {
			es = append(es, aclXEntry{aclMask, uint16(d.Mask), undef})
		}
		es = append(es, x.aclEntries(a.DefaultUser, aclUser, hasID, false)...)
		es = append(es, x.aclEntries(a.DefaultGroup, aclGroup, hasID, true)...)
		if err := set("system.posix_acl_default", encodeACL(es)); err != nil {
			return err
		}
	}
	return nil
}
