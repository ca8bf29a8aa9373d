package catar

import (
	"bufio"
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
	"strings"
	"syscall"
	"unsafe"
)

// EncodeOptions configures Encode. The zero value encodes as casync make
// does by default.
type EncodeOptions struct {
	// Features are the archive feature flags (normalized, FORMAT.md §6);
	// 0 means DefaultFeatures.
	Features uint64
	// Log receives debug messages; nil discards them.
	Log *slog.Logger
	// UIDShift maps owners into the archive (casync's --uid-shift,
	// --uid-range); nil stores them as they are.
	UIDShift *UIDShift
	// Payload, if set, is called before a regular file's contents are
	// written, with the file's path, the stream offset of its first
	// payload byte and its size (empty files are not reported). Seeds use
	// it to map stream ranges back to files.
	Payload func(path string, off, size int64)
	// PayloadTo, if set, is offered each regular file's contents first,
	// with the open file descriptor (valid during the call only), the
	// path, the stream offset of the first byte and the size. It returns
	// false to have Encode copy them as usual; to take them, it calls
	// flush (which delivers to w what Encode wrote before them), puts
	// exactly size bytes into the stream itself (reading them, or skipping
	// what it knows) and returns true. The make cache uses it.
	PayloadTo func(fd int, path string, off, size int64, flush func() error) (bool, error)
}

// Encode writes the catar serialization of the directory dir to w, exactly
// as casync make would for the same feature flags, and returns the number of
// bytes written. One goroutine walks the tree, reads metadata and lays out
// the stream; another writes it and copies the files' contents.
func Encode(ctx context.Context, w io.Writer, dir string, o EncodeOptions) (int64, error) {
	f := o.Features
	if f == 0 {
		f = DefaultFeatures
	}
	if !IsNormalized(f) {
		return 0, fmt.Errorf("catar: feature flags 0x%x are not normalized", f)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	e := &encoder{
		ctx:   ctx,
		out:   make(chan []item, 8),
		f:     f,
		gran:  Granularity(f),
		users: map[uint32]string{},
		grps:  map[uint32]string{},
		log:   o.Log,
		shift: o.UIDShift,
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: dir, Err: err}
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return 0, fmt.Errorf("catar: %s is not a directory", dir)
	}
	d, err := openNode(dir, &st)
	if err != nil {
		return 0, err
	}
	go func() {
		err := e.node(dir, &st, d, nil, 0, noChattr)
		if err == nil {
			err = e.flush()
		}
		if err != nil {
			e.queue = append(e.queue, item{err: err})
		}
		e.sendBatch()
		close(e.out)
	}()
	bw := bufio.NewWriterSize(w, 1<<20)
	var n int64
	var werr error
	buf := make([]byte, 1<<20)
	for batch := range e.out {
		for _, it := range batch {
			if werr != nil {
				if it.f != nil {
					it.f.Close()
				}
				continue
			}
			if it.err != nil {
				werr = it.err
				continue
			}
			m, err := bw.Write(it.data)
			n += int64(m)
			if err == nil && it.f != nil {
				if o.Payload != nil {
					o.Payload(it.f.name, n, it.size)
				}
				handled := false
				if o.PayloadTo != nil {
					handled, err = o.PayloadTo(it.f.fd, it.f.name, n, it.size, bw.Flush)
					if handled && err == nil {
						n += it.size
					}
				}
				if !handled && err == nil {
					var c int64
					c, err = it.f.copyTo(bw, it.size, buf)
					n += c
				}
				it.f.Close()
			}
			if err != nil {
				werr = err
				cancel()
			}
		}
	}
	if werr == nil {
		werr = bw.Flush()
	}
	return n, werr
}

// rawFile is an open file descriptor without the runtime poller's
// bookkeeping (os.File costs two more syscalls per file).
type rawFile struct {
	fd   int
	name string
}

func (f *rawFile) Fd() uintptr  { return uintptr(f.fd) }
func (f *rawFile) Name() string { return f.name }
func (f *rawFile) Close() error { return syscall.Close(f.fd) }

// copyTo copies exactly size bytes of the file to w.
func (f *rawFile) copyTo(w io.Writer, size int64, buf []byte) (int64, error) {
	var done int64
	for done < size {
		b := buf
		if rem := size - done; int64(len(b)) > rem {
			b = b[:rem]
		}
		m, err := syscall.Pread(f.fd, b, done)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return done, fmt.Errorf("catar: reading %s: %w", f.name, err)
		}
		if m == 0 {
			return done, fmt.Errorf("catar: %s shrank while being archived (%d of %d bytes)", f.name, done, size)
		}
		if _, err := w.Write(b[:m]); err != nil {
			return done, err
		}
		done += int64(m)
	}
	return done, nil
}

// readDirNames returns the names in the directory, unsorted.
func (f *rawFile) readDirNames() ([]string, error) {
	buf := make([]byte, 32<<10)
	var names []string
	for {
		n, err := syscall.ReadDirent(f.fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = syscall.ParseDirent(buf[:n], -1, names)
	}
}

// item is a piece of the stream: bytes, then optionally size bytes of f.
type item struct {
	data []byte
	f    *rawFile
	size int64
	err  error
}

const pieceSize = 256 << 10 // bytes per item

// getBuf returns a buffer for the next piece of the stream; pieces are
// usually the few hundred bytes of metadata before a file's contents.
func getBuf() []byte { return make([]byte, 0, 1024) }

type encoder struct {
	ctx    context.Context
	out    chan []item
	queue  []item
	pend   []byte
	off    int64
	f      uint64
	gran   uint64
	users  map[uint32]string
	grps   map[uint32]string
	log    *slog.Logger
	buf    []byte
	shift  *UIDShift
	magics fsMagics // file-system type per device (FAT attributes, subvolumes)
}

// send queues an item for the writer; items travel in batches.
func (e *encoder) send(it item) bool {
	e.queue = append(e.queue, it)
	if len(e.queue) >= 256 {
		return e.sendBatch()
	}
	return true
}

func (e *encoder) sendBatch() bool {
	if len(e.queue) == 0 {
		return true
	}
	b := e.queue
	e.queue = make([]item, 0, 256)
	select {
	case e.out <- b:
		return true
	case <-e.ctx.Done():
		for _, it := range b {
			if it.f != nil {
				it.f.Close()
			}
		}
		return false
	}
}

// flush turns the pending bytes into an item.
func (e *encoder) flush() error {
	if len(e.pend) == 0 {
		return nil
	}
	p := e.pend
	e.pend = nil
	if !e.send(item{data: p}) {
		return e.ctx.Err()
	}
	return nil
}

// write appends b to the stream.
func (e *encoder) write(b []byte) error {
	if e.pend == nil {
		e.pend = getBuf()
	}
	e.pend = append(e.pend, b...)
	e.off += int64(len(b))
	if len(e.pend) >= pieceSize {
		return e.flush()
	}
	return nil
}

func appendHeader(b []byte, size, typ uint64) []byte {
	b = le.AppendUint64(b, size)
	return le.AppendUint64(b, typ)
}

func appendString(b []byte, typ uint64, s string) []byte {
	b = appendHeader(b, uint64(headerSize+len(s)+1), typ)
	b = append(b, s...)
	return append(b, 0)
}

const (
	noChattr          = ^uint64(0)
	atSymlinkNofollow = 0x100
)

// openAt opens a child of the directory dirfd like openNode.
func openAt(dirfd int, name, path string, st *syscall.Stat_t) (*rawFile, error) {
	t := st.Mode & syscall.S_IFMT
	if t != syscall.S_IFREG && t != syscall.S_IFDIR {
		return nil, nil
	}
	fd, err := syscall.Openat(dirfd, name, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NOFOLLOW|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &rawFile{fd: fd, name: path}, nil
}

// openNode opens regular files and directories (O_NOFOLLOW); other types
// return nil.
func openNode(path string, st *syscall.Stat_t) (*rawFile, error) {
	t := st.Mode & syscall.S_IFMT
	if t != syscall.S_IFREG && t != syscall.S_IFDIR {
		return nil, nil
	}
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NOFOLLOW|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &rawFile{fd: fd, name: path}, nil
}

const (
	fsIocGetflags   = 0x80086601
	fsIocFsgetxattr = 0x801c581f
)

func ioctlPtr(f interface{ Fd() uintptr }, req uintptr, p unsafe.Pointer) syscall.Errno {
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), req, uintptr(p))
	return errno
}

// chattr returns FS_IOC_GETFLAGS of an open file (0 where unsupported).
func chattr(f *rawFile) (uint64, error) {
	var v [8]byte
	if errno := ioctlPtr(f, fsIocGetflags, unsafe.Pointer(&v[0])); errno != 0 {
		if errno == syscall.ENOTTY || errno == syscall.EOPNOTSUPP || errno == syscall.EINVAL || errno == syscall.ENOSYS {
			return 0, nil
		}
		return 0, &os.PathError{Op: "FS_IOC_GETFLAGS", Path: f.Name(), Err: errno}
	}
	return uint64(le.Uint32(v[:])), nil
}

func projID(f *rawFile) uint64 {
	var v [28]byte
	if errno := ioctlPtr(f, fsIocFsgetxattr, unsafe.Pointer(&v[0])); errno != 0 {
		return 0
	}
	return uint64(le.Uint32(v[12:]))
}

// meta is what the encoder learns about one node before writing it.
type nodeMeta struct {
	chattr  uint64
	xattrs  []Xattr
	fcaps   []byte
	selinux string
	aclAcc  []byte
	aclDef  []byte
	projid  uint64
}

// xattrSource reads extended attributes through an open file when there is
// one (regular files and directories), else by path.
type xattrSource struct {
	path string
	f    *rawFile
}

func fxattrCall(trap uintptr, fd uintptr, name *byte, buf []byte) (int, error) {
	var p unsafe.Pointer
	if len(buf) > 0 {
		p = unsafe.Pointer(&buf[0])
	}
	var r uintptr
	var errno syscall.Errno
	if name == nil {
		r, _, errno = syscall.Syscall(trap, fd, uintptr(p), uintptr(len(buf)))
	} else {
		r, _, errno = syscall.Syscall6(trap, fd, uintptr(unsafe.Pointer(name)), uintptr(p), uintptr(len(buf)), 0, 0)
	}
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

func (x xattrSource) list() ([]string, error) {
	size := 256
	for {
		buf := make([]byte, size)
		var n int
		var err error
		if x.f != nil {
			n, err = fxattrCall(syscall.SYS_FLISTXATTR, x.f.Fd(), nil, buf)
		} else {
			n, err = syscall.Listxattr(x.path, buf)
		}
		if err == syscall.ERANGE {
			size *= 2
			continue
		}
		if err == syscall.EOPNOTSUPP || err == syscall.ENOTSUP {
			return nil, nil
		}
		if err != nil {
			return nil, &os.PathError{Op: "listxattr", Path: x.path, Err: err}
		}
		if n == 0 {
			return nil, nil
		}
		var names []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				names = append(names, s)
			}
		}
		return names, nil
	}
}

func (x xattrSource) get(name string) ([]byte, bool, error) {
	size := 256
	np, err := syscall.BytePtrFromString(name)
	if err != nil {
		return nil, false, err
	}
	for {
		buf := make([]byte, size)
		var n int
		if x.f != nil {
			n, err = fxattrCall(syscall.SYS_FGETXATTR, x.f.Fd(), np, buf)
		} else {
			n, err = syscall.Getxattr(x.path, name, buf)
		}
		if err == syscall.ERANGE {
			size *= 2
			if size > 1<<20 {
				return nil, false, &os.PathError{Op: "getxattr " + name, Path: x.path, Err: err}
			}
			continue
		}
		if err == syscall.ENODATA {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, &os.PathError{Op: "getxattr " + name, Path: x.path, Err: err}
		}
		return buf[:n], true, nil
	}
}

func (e *encoder) readMeta(path string, st *syscall.Stat_t, f *rawFile, known uint64) (*nodeMeta, error) {
	m := &nodeMeta{}
	t := st.Mode & syscall.S_IFMT
	if known != noChattr {
		m.chattr = known
	} else if f != nil && e.f&(WithChattr|ExcludeNodump) != 0 {
		c, err := chattr(f)
		if err != nil {
			return nil, err
		}
		m.chattr = c
	}
	if f != nil && e.f&WithQuotaProjID != 0 {
		m.projid = projID(f)
	}
	if t == syscall.S_IFLNK || e.f&(WithXattrs|WithFCaps|WithACL|WithSELinux) == 0 {
		return m, nil
	}
	x := xattrSource{path: path, f: f}
	names, err := x.list()
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return m, nil
	}
	sort.Strings(names)
	getXattr := func(_, name string) ([]byte, bool, error) { return x.get(name) }
	for _, n := range names {
		switch {
		case (strings.HasPrefix(n, "user.") || strings.HasPrefix(n, "trusted.")) && validXattrName(n):
			if e.f&(WithXattrs|WithFCaps) == 0 {
				continue
			}
			v, ok, err := getXattr(path, n)
			if err != nil {
				return nil, err
			}
			if ok {
				m.xattrs = append(m.xattrs, Xattr{Name: n, Value: v})
			}
		case n == "security.capability" && t == syscall.S_IFREG && e.f&(WithXattrs|WithFCaps) != 0:
			v, ok, err := getXattr(path, n)
			if err != nil {
				return nil, err
			}
			if ok {
				m.fcaps = v
			}
		case n == "security.selinux" && e.f&WithSELinux != 0:
			v, ok, err := getXattr(path, n)
			if err != nil {
				return nil, err
			}
			if ok {
				m.selinux = strings.TrimRight(string(v), "\x00")
			}
		case n == "system.posix_acl_access" && e.f&WithACL != 0:
			v, _, err := getXattr(path, n)
			if err != nil {
				return nil, err
			}
			m.aclAcc = v
		case n == "system.posix_acl_default" && e.f&WithACL != 0 && t == syscall.S_IFDIR:
			v, _, err := getXattr(path, n)
			if err != nil {
				return nil, err
			}
			m.aclDef = v
		}
	}
	return m, nil
}

// userName returns the name stored for uid, following casync: none for
// root, the NSS name, or (without numeric ids) the decimal id.
func (e *encoder) userName(uid uint32, group bool) string {
	if uid == 0 {
		return ""
	}
	cache := e.users
	if group {
		cache = e.grps
	}
	if s, ok := cache[uid]; ok {
		return s
	}
	var name string
	var err error
	if group {
		var g *user.Group
		g, err = user.LookupGroupId(strconv.FormatUint(uint64(uid), 10))
		if err == nil {
			name = g.Name
		}
	} else {
		var u *user.User
		u, err = user.LookupId(strconv.FormatUint(uint64(uid), 10))
		if err == nil {
			name = u.Username
		}
	}
	if err != nil && e.f&withUIDs == 0 {
		if sh, ok := e.shift.ToArchive(uid); ok {
			name = strconv.FormatUint(uint64(sh), 10)
		}
	}
	cache[uid] = name
	return name
}

type rawACL struct {
	userObj, groupObj, other, mask uint64
	users, groups                  []ACLEntry
}

func (e *encoder) parseACLXattr(path string, v []byte) (*rawACL, error) {
	if len(v) < 4 || le.Uint32(v) != aclXattrVersion || (len(v)-4)%8 != 0 {
		return nil, fmt.Errorf("%s: malformed POSIX ACL xattr", path)
	}
	a := &rawACL{userObj: NoMask, groupObj: NoMask, other: NoMask, mask: NoMask}
	for p := v[4:]; len(p) >= 8; p = p[8:] {
		tag := le.Uint16(p)
		perm := uint64(le.Uint16(p[2:]) & 7)
		id := le.Uint32(p[4:])
		switch tag {
		case aclUserObj:
			a.userObj = perm
		case aclGroupObj:
			a.groupObj = perm
		case aclOther:
			a.other = perm
		case aclMask:
			a.mask = perm
		case aclUser, aclGroup:
			if e.f&With16BitUIDs != 0 && id > 65535 {
				return nil, fmt.Errorf("%s: ACL id %d does not fit 16 bits: %w", path, id, syscall.EPROTONOSUPPORT)
			}
			ent := ACLEntry{Perm: perm}
			if e.f&withUIDs != 0 {
				sh, ok := e.shift.ToArchive(id)
				if !ok {
					return nil, fmt.Errorf("%s: ACL id %d outside --uid-shift/--uid-range: %w", path, id, syscall.EINVAL)
				}
				ent.ID = uint64(sh)
			}
			if e.f&WithUserNames != 0 {
				ent.Name = e.userName(id, tag == aclGroup)
			}
			if tag == aclUser {
				a.users = append(a.users, ent)
			} else {
				a.groups = append(a.groups, ent)
			}
		}
	}
	sortACL(a.users)
	sortACL(a.groups)
	return a, nil
}

func sortACL(l []ACLEntry) {
	sort.SliceStable(l, func(i, j int) bool { return compareACL(&l[i], &l[j]) < 0 })
}

func appendACLEntries(b []byte, typ uint64, l []ACLEntry) []byte {
	for _, a := range l {
		size := uint64(32)
		if a.Name != "" {
			size += uint64(len(a.Name) + 1)
		}
		b = appendHeader(b, size, typ)
		b = le.AppendUint64(b, a.ID)
		b = le.AppendUint64(b, a.Perm)
		if a.Name != "" {
			b = append(b, a.Name...)
			b = append(b, 0)
		}
	}
	return b
}

func (e *encoder) mode(st *syscall.Stat_t) uint64 {
	m := uint64(st.Mode)
	t := m & ModeType
	dir := t == ModeDir
	switch {
	case t == ModeLink:
		return ModeLink | 0777
	case e.f&(WithPermissions|WithACL) != 0:
		return m & (ModeType | ModePerm)
	case e.f&WithReadOnly != 0:
		if m&0222 != 0 {
			if dir {
				return t | 0777
			}
			return t | 0666
		}
		if dir {
			return t | 0555
		}
		return t | 0444
	}
	if dir {
		return t | 0777
	}
	return t | 0666
}

// node writes ENTRY, metadata and body of one node. f is the open file for
// regular files and directories; node closes it.
// chattr is the node's FS_IOC_GETFLAGS value if already read, else noChattr.
func (e *encoder) node(path string, st *syscall.Stat_t, f *rawFile, rules []*matchNode, depth int, chattr uint64) (err error) {
	handedOff := false
	if f != nil {
		defer func() {
			if !handedOff {
				f.Close()
			}
		}()
	}
	if err := e.ctx.Err(); err != nil {
		return err
	}
	if depth >= maxDepth {
		return fmt.Errorf("catar: %s: directory tree deeper than %d levels", path, maxDepth)
	}
	m, err := e.readMeta(path, st, f, chattr)
	if err != nil {
		return err
	}
	entryOff := e.off
	t := uint64(st.Mode) & ModeType
	var uid, gid uint64
	if e.f&withUIDs != 0 {
		su, okU := e.shift.ToArchive(st.Uid)
		sg, okG := e.shift.ToArchive(st.Gid)
		if !okU || !okG {
			return fmt.Errorf("catar: %s: uid/gid %d/%d outside --uid-shift/--uid-range: %w", path, st.Uid, st.Gid, syscall.EINVAL)
		}
		uid, gid = uint64(su), uint64(sg)
		if e.f&With16BitUIDs != 0 && (uid > 65535 || gid > 65535) {
			return fmt.Errorf("catar: %s: uid/gid %d/%d does not fit 16 bits: %w", path, uid, gid, syscall.EPROTONOSUPPORT)
		}
	}
	var mtime uint64
	if e.gran != 0 {
		mtime = uint64(st.Mtim.Sec)*1000000000 + uint64(st.Mtim.Nsec)
		mtime = mtime / e.gran * e.gran
	}
	var flags uint64
	if t == ModeReg || t == ModeDir {
		if e.f&WithChattr != 0 {
			flags |= FlagsFromChattr(m.chattr) & e.f
		}
		fsf, err := fsFlags(&e.magics, f, st, uint32(t), e.f)
		if err != nil {
			return err
		}
		flags |= fsf
	}
	b := e.buf[:0]
	b = appendHeader(b, entrySize, TypeEntry)
	b = le.AppendUint64(b, e.f)
	b = le.AppendUint64(b, e.mode(st))
	b = le.AppendUint64(b, flags)
	b = le.AppendUint64(b, uid)
	b = le.AppendUint64(b, gid)
	b = le.AppendUint64(b, mtime)
	if e.f&WithUserNames != 0 {
		if u := e.userName(st.Uid, false); u != "" {
			b = appendString(b, TypeUser, u)
		}
		if g := e.userName(st.Gid, true); g != "" {
			b = appendString(b, TypeGroup, g)
		}
	}
	if e.f&WithXattrs != 0 {
		for _, x := range m.xattrs {
			b = appendHeader(b, uint64(headerSize+len(x.Name)+1+len(x.Value)), TypeXattr)
			b = append(b, x.Name...)
			b = append(b, 0)
			b = append(b, x.Value...)
		}
	}
	if m.aclAcc != nil || m.aclDef != nil {
		var acc, def *rawACL
		if m.aclAcc != nil {
			if acc, err = e.parseACLXattr(path, m.aclAcc); err != nil {
				return err
			}
		}
		if m.aclDef != nil {
			if def, err = e.parseACLXattr(path, m.aclDef); err != nil {
				return err
			}
		}
		if acc != nil {
			b = appendACLEntries(b, TypeACLUser, acc.users)
			b = appendACLEntries(b, TypeACLGroup, acc.groups)
			if acc.groupObj != NoMask && acc.mask != NoMask {
				b = appendHeader(b, 24, TypeACLGroupObj)
				b = le.AppendUint64(b, acc.groupObj)
			}
		}
		if def != nil {
			if def.userObj != NoMask || def.groupObj != NoMask || def.other != NoMask || def.mask != NoMask {
				b = appendHeader(b, 48, TypeACLDefault)
				b = le.AppendUint64(b, def.userObj)
				b = le.AppendUint64(b, def.groupObj)
				b = le.AppendUint64(b, def.other)
				b = le.AppendUint64(b, def.mask)
			}
			b = appendACLEntries(b, TypeACLDefaultUser, def.users)
			b = appendACLEntries(b, TypeACLDefaultGroup, def.groups)
		}
	}
	if m.selinux != "" {
		b = appendString(b, TypeSELinux, m.selinux)
	}
	if m.fcaps != nil && e.f&WithFCaps != 0 {
		b = appendHeader(b, uint64(headerSize+len(m.fcaps)), TypeFCaps)
		b = append(b, m.fcaps...)
	}
	if m.projid != 0 && (t == ModeReg || t == ModeDir) {
		b = appendHeader(b, 24, TypeQuotaProjID)
		b = le.AppendUint64(b, m.projid)
	}
	switch t {
	case ModeReg:
		b = appendHeader(b, uint64(headerSize+st.Size), TypePayload)
	case ModeLink:
		target, err := os.Readlink(path)
		if err != nil {
			return err
		}
		b = appendString(b, TypeSymlink, target)
	case ModeBlock, ModeChar:
		b = appendHeader(b, 32, TypeDevice)
		rdev := uint64(st.Rdev)
		b = le.AppendUint64(b, ((rdev>>8)&0xfff)|((rdev>>32)&^0xfff))
		b = le.AppendUint64(b, (rdev&0xff)|((rdev>>12)&^0xff))
	}
	e.buf = b
	if err := e.write(b); err != nil {
		return err
	}
	switch t {
	case ModeReg:
		handedOff, err = e.payload(path, f, st.Size)
		return err
	case ModeDir:
		return e.dir(path, f, entryOff, rules, depth)
	}
	return nil
}

// payload hands f to the writer goroutine, which copies size bytes and
// closes it. The kernel is asked to read the file ahead now, so that many
// files are read from disk concurrently while the writer catches up.
func (e *encoder) payload(path string, f *rawFile, size int64) (handedOff bool, err error) {
	if size == 0 {
		return false, nil
	}
	syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, uintptr(size), fadvWillneed, 0, 0)
	if err := e.flush(); err != nil {
		return false, err
	}
	e.off += size
	if !e.send(item{f: f, size: size}) {
		return true, e.ctx.Err()
	}
	return true, nil
}

const fadvWillneed = 3

func (e *encoder) dir(path string, f *rawFile, entryOff int64, rules []*matchNode, depth int) error {
	dirfd := int(f.Fd())
	names, err := f.readDirNames()
	if err != nil {
		return fmt.Errorf("catar: reading directory %s: %w", path, err)
	}
	sort.Strings(names)
	// .caexclude files are honoured even without the EXCLUDE_FILE bit, as
	// the Debian casync 2 build does (it records --exclude-file=no in the
	// flags but applies the patterns anyway).
	{
		i := sort.SearchStrings(names, ".caexclude")
		if i < len(names) && names[i] == ".caexclude" {
			more, err := parseExcludeFile(filepath.Join(path, ".caexclude"))
			if err != nil {
				return fmt.Errorf("catar: %w", err)
			}
			rules = append(append([]*matchNode(nil), rules...), more...)
		}
	}
	var parentDev uint64
	if e.f&ExcludeSubmounts != 0 {
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err == nil {
			parentDev = st.Dev
		}
	}
	var items []goodbyeItem
	for _, name := range names {
		child := path + "/" + name
		var st syscall.Stat_t
		if err := fstatat(dirfd, name, &st); err != nil {
			if errors.Is(err, syscall.ENOENT) {
				continue // vanished
			}
			return &os.PathError{Op: "lstat", Path: child, Err: err}
		}
		t := uint64(st.Mode) & ModeType
		if (t == ModeLink && e.f&WithSymlinks == 0) ||
			((t == ModeBlock || t == ModeChar) && e.f&WithDeviceNodes == 0) ||
			(t == ModeFIFO && e.f&WithFIFOs == 0) ||
			(t == ModeSock && e.f&WithSockets == 0) {
			continue
		}
		cf, err := openAt(dirfd, name, child, &st)
		if err != nil {
			return err
		}
		ca := uint64(noChattr)
		if cf != nil && e.f&(ExcludeNodump|WithChattr) != 0 {
			c, err := chattr(cf)
			if err != nil {
				cf.Close()
				return err
			}
			if c&0x40 != 0 && e.f&ExcludeNodump != 0 {
				cf.Close()
				continue
			}
			ca = c
		}
		if e.f&ExcludeSubmounts != 0 && t == ModeDir && st.Dev != parentDev {
			if cf != nil {
				cf.Close()
			}
			continue
		}
		var sub []*matchNode
		if len(rules) > 0 {
			var excl bool
			excl, sub = matchTest(rules, name, t == ModeDir)
			if excl {
				if cf != nil {
					cf.Close()
				}
				continue
			}
		}
		start := e.off
		b := appendString(e.buf[:0], TypeFilename, name)
		e.buf = b
		if err := e.write(b); err != nil {
			if cf != nil {
				cf.Close()
			}
			return err
		}
		if err := e.node(child, &st, cf, sub, depth+1, ca); err != nil {
			return err
		}
		items = append(items, goodbyeItem{hash: NameHash(name), start: start, size: e.off - start})
	}
	b := appendGoodbye(e.buf[:0], items, entryOff, e.off)
	e.buf = b
	return e.write(b)
}
