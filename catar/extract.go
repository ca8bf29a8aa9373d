package catar

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	// Delete removes, from a directory that already existed, the entries
	// the archive lacks (casync extract's --delete=yes, its default).
	Delete bool
	// UndoImmutable clears the immutable and append-only attributes
	// (chattr -i -a) of entries that must be replaced or deleted and of
	// directories that must change; without it such an entry is an error,
	// as with casync.
	UndoImmutable bool
	// NoHoles writes runs of zeros in regular files instead of leaving
	// holes (casync's --punch-holes=no).
	NoHoles bool
	// Hardlink, if set, is asked for existing files that may equal a
	// regular file of the archive: it gets the entry and the SHA-256 of its
	// contents and returns candidate paths. A candidate equal in contents
	// (read and compared again) and in the metadata the archive records is
	// hard-linked in place of writing the file (casync's --hardlink=yes).
	Hardlink func(e *Entry, sum [32]byte) []string
	// UIDShift maps the archive's owners to the file system's (casync's
	// --uid-shift, --uid-range); nil restores them as stored.
	UIDShift *UIDShift
}

// ExtractStats counts what Extract did besides writing files.
type ExtractStats struct {
	Hardlinked      int64 // files linked to a candidate
	HardlinkedBytes int64
	Deleted         int64 // entries removed by Delete
}

// Extract reads an archive from d and recreates it under dir, which is
// created if missing. Ownership, device nodes, trusted.* xattrs, file
// capabilities and chattr flags need privileges: without them they are
// skipped with a warning. Directories are created in archive order; files
// are created and written by a few workers; directory metadata is applied
// last, deepest first.
func Extract(ctx context.Context, d *Decoder, dir string, o ExtractOptions) error {
	_, err := ExtractWithStats(ctx, d, dir, o)
	return err
}

// ExtractWithStats is Extract, also returning what it did.
//
// Every node but a directory is created under a temporary name in its
// directory and renamed into place once complete, as casync does, so an
// interrupted update leaves each file either old or new. In a directory
// that was empty (made by this extract, or an empty target) there is
// nothing to replace: nodes are created under their own names, and the
// owner and mode creation already gave them are not set again.
func ExtractWithStats(ctx context.Context, d *Decoder, dir string, o ExtractOptions) (*ExtractStats, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mask := o.Features & WithMask
	if mask == 0 {
		mask = WithMask
	}
	x := &extractor{log: log, root: os.Geteuid() == 0, ids: map[string]uint32{}, mask: mask, o: o, stats: &ExtractStats{},
		euid: os.Geteuid(), egid: os.Getegid()}
	x.umask, x.umaskKnown = readUmask()
	_, statErr := os.Lstat(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	rootState := x.rootState(dir, os.IsNotExist(statErr))
	type job struct {
		e      *Entry
		path   string
		data   []byte
		parent *dirState
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
				if err := x.file(j.path, j.e, j.data, nil, j.parent); err != nil {
					setErr(err)
				}
				putFileBuf(j.data)
			}
		}()
	}
	type pending struct {
		e     *Entry
		path  string
		names map[string]struct{} // entries of the archive, for Delete
	}
	var dirs []pending
	dirIndex := map[string]int{}     // archive path → index in dirs, for Delete
	states := map[string]*dirState{} // archive path → what is known of the directory
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
			if o.Delete && e.Path != "" {
				parent, _ := pathSplit(e.Path)
				if i, ok := dirIndex[parent]; ok && dirs[i].names != nil {
					dirs[i].names[e.Name] = struct{}{}
				}
			}
			if skipType(e, x.mask) {
				continue
			}
			path := filepath.Join(dir, filepath.FromSlash(e.Path))
			var parent *dirState
			if e.Path != "" {
				parentPath, _ := pathSplit(e.Path)
				parent = states[parentPath]
			}
			switch {
			case e.IsDir():
				existed, err := x.mkdir(path, e)
				if err != nil {
					return err
				}
				switch {
				case e.Path == "":
					states[""] = rootState
				case !existed && parent != nil:
					// Made here: empty, on its parent's file system,
					// and owned and moded as its parent's new entries.
					states[e.Path] = &dirState{fresh: true, plain: parent.plain, magic: parent.magic}
				default:
					states[e.Path] = &dirState{}
				}
				p := pending{e: e, path: path}
				if o.Delete && existed {
					p.names = map[string]struct{}{}
				}
				if o.Delete {
					dirIndex[e.Path] = len(dirs)
				}
				dirs = append(dirs, p)
			case e.IsRegular() && e.Size > inlineExtractSize:
				// Large files stream straight from the archive.
				if err := x.file(path, e, nil, d, parent); err != nil {
					return err
				}
			case e.IsRegular():
				data := fileBuf(e.Size)
				if _, err := io.ReadFull(d, data); err != nil {
					return err
				}
				jobs <- job{e, path, data, parent}
			default:
				jobs <- job{e, path, nil, parent}
			}
		}
	}()
	close(jobs)
	wg.Wait()
	if loopErr != nil {
		return x.stats, loopErr
	}
	if firstErr != nil {
		return x.stats, firstErr
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if dirs[i].names != nil {
			if err := x.deleteExtra(dirs[i].path, dirs[i].names); err != nil {
				return x.stats, err
			}
		}
		if err := x.meta(dirs[i].path, dirs[i].e, -1); err != nil {
			return x.stats, err
		}
	}
	return x.stats, nil
}

const (
	extractWorkers    = 4
	inlineExtractSize = 1 << 20
)

// fileBufs recycle the buffers of small files handed to the writers, by
// size class (4 KiB << i, up to inlineExtractSize): no allocation, zeroing
// and garbage per file.
var fileBufs [9]sync.Pool

func fileBufClass(n int64) int {
	c := 0
	for int64(4096)<<c < n && c < len(fileBufs)-1 {
		c++
	}
	return c
}

// fileBuf returns a buffer of n ≤ inlineExtractSize bytes (never nil).
func fileBuf(n int64) []byte {
	c := fileBufClass(n)
	if p, ok := fileBufs[c].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 4096<<c)
}

// putFileBuf recycles a buffer from fileBuf.
func putFileBuf(b []byte) {
	c := fileBufClass(int64(cap(b)))
	if cap(b) != 4096<<c {
		return
	}
	b = b[:cap(b)]
	fileBufs[c].Put(&b)
}

type extractor struct {
	log   *slog.Logger
	root  bool
	mask  uint64 // WITH_* features to restore
	mu    sync.Mutex
	ids   map[string]uint32
	o     ExtractOptions
	stats *ExtractStats
	// subvolWarn: the warning that subvolumes cannot be made, given once.
	subvolWarn sync.Once
	// What a new node gets before its metadata is set: the process's
	// owner, and permissions less the umask (if umaskKnown).
	euid, egid int
	umask      uint32
	umaskKnown bool
}

// dirState is what Extract knows of a directory it writes into.
type dirState struct {
	// fresh: the directory was empty when Extract began filling it (made
	// by Extract, or an empty target), so its entries are created under
	// their own names: there is nothing to replace atomically.
	fresh bool
	// plain: new entries get the process's owner and group and their
	// creation mode less the umask (no set-group-ID bit or default ACL
	// above them), so ownership and mode that already match need no
	// chown or chmod.
	plain bool
	// magic is the file system's type (statfs f_type), 0 if unknown.
	magic int64
}

// rootState describes the target directory dir: fresh if it was just
// made (made) or is empty; plain if new entries in it get the process's
// owner and group and mode less the umask.
func (x *extractor) rootState(dir string, made bool) *dirState {
	st := &dirState{fresh: made}
	if !made {
		if f, err := os.Open(dir); err == nil {
			names, err := f.Readdirnames(1)
			f.Close()
			st.fresh = len(names) == 0 && err == io.EOF
		}
	}
	if !st.fresh {
		return &dirState{}
	}
	var sfs syscall.Statfs_t
	if syscall.Statfs(dir, &sfs) == nil {
		st.magic = int64(sfs.Type)
	}
	var sst syscall.Stat_t
	if x.umaskKnown && !ignoresCreateMode(st.magic) && syscall.Stat(dir, &sst) == nil && sst.Mode&syscall.S_ISGID == 0 {
		var b [1]byte
		_, err := syscall.Getxattr(dir, "system.posix_acl_default", b[:])
		// ENODATA: no default ACL; ERANGE would mean one is there.
		st.plain = err == syscall.ENODATA || err == syscall.EOPNOTSUPP
	}
	return st
}

// ignoresCreateMode reports file systems whose new nodes need not get the
// mode they are created with (vfat, for one, takes it from its mount
// options, and a read-only file gets its FAT read-only attribute only
// through chmod): there every mode is set explicitly.
func ignoresCreateMode(magic int64) bool {
	switch magic {
	case 0, msdosMagic, fuseMagic,
		0x2011bab0, // exfat
		0x5346544e, // ntfs
		0x7366746e, // ntfs3
		0xff534d42, // cifs
		0xfe534d42: // smb2
		return true
	}
	return false
}

// readUmask returns the process's umask from /proc/self/status (Linux
// 4.7+); reading it with umask(2) would change it for a moment for every
// thread.
func readUmask() (uint32, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Umask:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			return uint32(m), err == nil
		}
	}
	return 0, false
}

// born is what a node just created by Extract is known to have, so that
// metadata already right need not be set again.
type born struct {
	uid, gid int
	perm     uint32 // permission bits (ModePerm)
	magic    int64  // file system type, 0 if unknown
}

// createPerm is the mode a new node is created with: its final
// permission bits (without set-ID and sticky bits, which chown would
// clear) when the archive restores them, else 0600 as before.
func (x *extractor) createPerm(e *Entry) uint32 {
	if e.Features&x.mask&(WithPermissions|WithACL|WithReadOnly) != 0 {
		return e.Mode & 0o777
	}
	return 0o600
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

// mkdir creates the directory at path, or keeps the directory already
// there (existed), replacing anything else in the way.
func (x *extractor) mkdir(path string, e *Entry) (existed bool, err error) {
	if e.Path != "" && e.Flags&x.mask&WithSubvolume != 0 {
		if ok, err := x.mkSubvolume(path); ok || err != nil {
			return false, err
		}
	}
	for try := 0; ; try++ {
		err = syscall.Mkdir(path, 0o700)
		if err == nil {
			return false, nil
		}
		if err == syscall.EEXIST {
			var st syscall.Stat_t
			if syscall.Lstat(path, &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
				if x.o.UndoImmutable {
					// The directory must take new entries; its
					// attributes are restored at the end.
					x.undoImmutable(path)
				}
				return true, nil
			}
			if try == 0 && e.Path != "" {
				if err := x.remove(path); err != nil {
					return false, err
				}
				continue
			}
		}
		if err == syscall.EPERM && try == 0 && x.o.UndoImmutable {
			x.undoImmutable(filepath.Dir(path))
			continue
		}
		return false, &os.PathError{Op: "mkdir", Path: path, Err: err}
	}
}

// remove deletes path (recursively), clearing immutable attributes on the
// way with UndoImmutable.
func (x *extractor) remove(path string) error {
	err := os.RemoveAll(path)
	if err != nil && x.o.UndoImmutable {
		x.undoImmutable(filepath.Dir(path))
		filepath.Walk(path, func(p string, _ os.FileInfo, _ error) error {
			x.undoImmutable(p)
			return nil
		})
		err = os.RemoveAll(path)
	}
	if err != nil {
		return fmt.Errorf("replacing %s: %w (immutable? see --undo-immutable)", path, err)
	}
	return nil
}

func (x *extractor) undoImmutable(path string) { clearImmutable(path) }

// deleteExtra removes the entries of dir the archive lacks.
func (x *extractor) deleteExtra(dir string, names map[string]struct{}) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	have, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("reading %s: %w", dir, err)
	}
	for _, n := range have {
		if _, ok := names[n]; ok {
			continue
		}
		if err := x.remove(filepath.Join(dir, n)); err != nil {
			return err
		}
		x.mu.Lock()
		x.stats.Deleted++
		x.mu.Unlock()
	}
	return nil
}

// pathSplit splits an archive path into its parent's path and its name.
func pathSplit(p string) (string, string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

var tempSeq atomic.Uint64

// tempName returns a temporary name beside path, as casync's ".#name…".
func tempName(path string) string {
	dir, name := filepath.Split(path)
	if len(name) > 200 {
		name = name[:200] // the result must fit NAME_MAX (255)
	}
	return fmt.Sprintf("%s.#%s%x-%d", dir, name, tempSeq.Add(1), os.Getpid())
}

// file creates a non-directory node at path from a temporary name: its
// contents from data, or from d when data is nil; its metadata; then the
// rename into place. In a fresh directory (parent) the node is created
// under its own name: nothing is there to replace.
func (x *extractor) file(path string, e *Entry, data []byte, d *Decoder, parent *dirState) error {
	if e.IsRegular() && x.o.Hardlink != nil && data != nil {
		sum := sha256.Sum256(data)
		if ok, err := x.tryHardlink(path, e, sum); ok || err != nil {
			return err
		}
	}
	perm := x.createPerm(e)
	var b *born
	if parent != nil && parent.plain {
		b = &born{uid: x.euid, gid: x.egid, perm: perm &^ x.umask, magic: parent.magic}
	} else if parent != nil {
		b = &born{uid: -1, gid: -1, perm: ^uint32(0), magic: parent.magic}
	}
	tmp := path
	if parent == nil || !parent.fresh || x.o.Hardlink != nil && data == nil {
		tmp = tempName(path)
	}
	fd, skipped, sum, err := x.create(tmp, e, data, d, perm)
	if err != nil && tmp == path && errors.Is(err, syscall.EEXIST) {
		tmp = tempName(path) // not so fresh after all
		fd, skipped, sum, err = x.create(tmp, e, data, d, perm)
	}
	if err != nil || skipped {
		return err
	}
	closeFd := func() {
		if fd >= 0 {
			syscall.Close(fd)
			fd = -1
		}
	}
	defer closeFd()
	if e.IsRegular() && x.o.Hardlink != nil && data == nil {
		if ok, err := x.tryHardlink(path, e, sum); ok || err != nil {
			closeFd()
			syscall.Unlink(tmp)
			return err
		}
	}
	if err := x.metaOpts(tmp, e, fd, false, b); err != nil {
		closeFd()
		syscall.Unlink(tmp)
		return err
	}
	if tmp != path {
		if err := x.install(tmp, path); err != nil {
			closeFd()
			syscall.Unlink(tmp)
			return err
		}
	}
	if e.Flags&x.mask&WithChattr != 0 && e.IsRegular() {
		if err := setChattr(path, fd, ChattrFromFlags(e.Flags&x.mask)); err != nil {
			if x.root {
				return err
			}
			x.log.Warn("cannot restore file attributes", "path", path, "err", err)
		}
	}
	if e.IsRegular() {
		var magic int64
		if b != nil {
			magic = b.magic
		}
		if err := x.fsAttrs(path, e, fd, ModeReg, magic); err != nil {
			if x.root {
				return err
			}
			x.log.Warn("cannot restore FAT attributes or subvolume flags", "path", path, "err", err)
		}
	}
	return nil
}

// install renames tmp to path, replacing what is there.
func (x *extractor) install(tmp, path string) error {
	for try := 0; ; try++ {
		err := syscall.Rename(tmp, path)
		if err == nil {
			return nil
		}
		if try > 0 {
			return &os.PathError{Op: "rename", Path: path, Err: err}
		}
		switch err {
		case syscall.EISDIR, syscall.ENOTEMPTY, syscall.EEXIST, syscall.ENOTDIR:
			if err := x.remove(path); err != nil {
				return err
			}
		case syscall.EPERM:
			if !x.o.UndoImmutable {
				return fmt.Errorf("replacing %s: %w (immutable? see --undo-immutable)", path, err)
			}
			x.undoImmutable(path)
			x.undoImmutable(filepath.Dir(path))
		default:
			return &os.PathError{Op: "rename", Path: path, Err: err}
		}
	}
}

// tryHardlink links path to a candidate equal to the entry, if any.
func (x *extractor) tryHardlink(path string, e *Entry, sum [32]byte) (bool, error) {
	if e.ACL != nil || e.FCaps != nil || e.SELinux != "" || e.Flags&x.mask != 0 || e.ProjID != 0 {
		return false, nil // metadata a link cannot be checked for cheaply
	}
	for _, c := range x.o.Hardlink(e, sum) {
		if !x.sameFile(c, e, sum) {
			continue
		}
		var cst, pst syscall.Stat_t
		if syscall.Lstat(c, &cst) == nil && syscall.Lstat(path, &pst) == nil && cst.Dev == pst.Dev && cst.Ino == pst.Ino {
			return true, nil // already that file (a rename would do nothing)
		}
		tmp := tempName(path)
		if err := syscall.Link(c, tmp); err != nil {
			if err == syscall.EXDEV || err == syscall.EMLINK || err == syscall.EPERM {
				return false, nil
			}
			continue
		}
		if err := x.install(tmp, path); err != nil {
			syscall.Unlink(tmp)
			return false, err
		}
		x.mu.Lock()
		x.stats.Hardlinked++
		x.stats.HardlinkedBytes += e.Size
		x.mu.Unlock()
		return true, nil
	}
	return false, nil
}

// sameFile reports whether the file at p has the entry's contents (sum,
// read again) and the metadata the archive records, as casync checks
// before linking.
func (x *extractor) sameFile(p string, e *Entry, sum [32]byte) bool {
	var st syscall.Stat_t
	if syscall.Lstat(p, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG || st.Size != e.Size {
		return false
	}
	if e.Features&(WithPermissions|WithACL|WithReadOnly) != 0 && st.Mode&0o7777 != e.Mode&0o7777 {
		return false
	}
	if e.HasUID() {
		u, okU := x.o.UIDShift.FromArchive(uint32(e.UID))
		g, okG := x.o.UIDShift.FromArchive(uint32(e.GID))
		if !okU || !okG || st.Uid != u || st.Gid != g {
			return false
		}
	}
	if e.HasMTime() {
		g := Granularity(e.Features)
		if (uint64(st.Mtim.Sec)*1e9+uint64(st.Mtim.Nsec))/g*g != e.MTime {
			return false
		}
	}
	if e.Features&WithXattrs != 0 {
		xs := xattrSource{path: p}
		names, err := xs.list()
		if err != nil {
			return false
		}
		var have []Xattr
		for _, n := range names {
			if strings.HasPrefix(n, "user.") || strings.HasPrefix(n, "trusted.") {
				v, ok, err := xs.get(n)
				if err != nil || !ok {
					return false
				}
				have = append(have, Xattr{Name: n, Value: v})
			}
		}
		sort.Slice(have, func(i, j int) bool { return have[i].Name < have[j].Name })
		if len(have) != len(e.Xattrs) {
			return false
		}
		for i := range have {
			if have[i].Name != e.Xattrs[i].Name || !bytes.Equal(have[i].Value, e.Xattrs[i].Value) {
				return false
			}
		}
	}
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	h := sha256.New()
	if n, err := io.Copy(h, f); err != nil || n != e.Size {
		return false
	}
	return [32]byte(h.Sum(nil)) == sum
}

// create makes the node at path (a fresh temporary name); a regular file's
// contents come from data, or from d when data is nil, and sum is their
// SHA-256 when hardlinking is on. A regular file is returned open (fd ≥ 0)
// so its metadata can be set through the descriptor. skipped reports a node
// that could not be created without privileges.
func (x *extractor) create(path string, e *Entry, data []byte, d *Decoder, perm uint32) (fd int, skipped bool, sum [32]byte, err error) {
	fd = -1
	err = x.mknode(path, e, &fd, perm)
	if err == syscall.EPERM && x.o.UndoImmutable {
		x.undoImmutable(filepath.Dir(path))
		err = x.mknode(path, e, &fd, perm)
	}
	if err != nil {
		if (err == syscall.EPERM || err == syscall.EACCES) && !x.root && (e.Type() == ModeBlock || e.Type() == ModeChar) {
			x.log.Warn("cannot create device node without privileges", "path", path)
			return -1, true, sum, nil
		}
		return -1, false, sum, &os.PathError{Op: "create", Path: path, Err: err}
	}
	if e.IsRegular() {
		w := &sparseWriter{fd: fd, noHoles: x.o.NoHoles}
		var h hash.Hash
		if x.o.Hardlink != nil && data == nil {
			h = sha256.New()
		}
		if data != nil {
			_, err = w.Write(data)
		} else if h != nil {
			_, err = d.WriteTo(io.MultiWriter(w, h))
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
			syscall.Unlink(path)
			return -1, false, sum, fmt.Errorf("writing %s: %w", path, err)
		}
		if h != nil {
			sum = [32]byte(h.Sum(nil))
		}
	}
	return fd, false, sum, nil
}

func (x *extractor) mknode(path string, e *Entry, fd *int, perm uint32) error {
	switch e.Type() {
	case ModeReg:
		f, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, perm)
		if err != nil {
			return err
		}
		*fd = f
		return nil
	case ModeLink:
		return syscall.Symlink(e.Target, path)
	case ModeFIFO:
		return syscall.Mkfifo(path, perm)
	case ModeSock, ModeBlock, ModeChar:
		return syscall.Mknod(path, e.Type()|perm, int(e.Rdev()))
	}
	return nil
}

// sparseWriter writes to a file descriptor, leaving holes for aligned
// 4 KiB blocks of zeros.
type sparseWriter struct {
	fd        int
	off       int64
	holeAtEnd bool
	noHoles   bool // write zeros too
}

func (s *sparseWriter) Write(p []byte) (int, error) {
	if s.noHoles {
		n := 0
		for len(p) > 0 {
			m, err := syscall.Pwrite(s.fd, p, s.off)
			if err != nil {
				return n, err
			}
			s.off += int64(m)
			n += m
			p = p[m:]
		}
		return n, nil
	}
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
	return x.metaOpts(path, e, fd, true, nil)
}

// metaOpts is meta, leaving chattr flags out unless withChattr (an
// immutable file could not be renamed into place). If b is set, the node
// was just created with what b says: owner and permissions it already
// has are not set again.
func (x *extractor) metaOpts(path string, e *Entry, fd int, withChattr bool, b *born) error {
	t := e.Type()
	hasUID := e.HasUID() && x.mask&withUIDs != 0
	names := x.mask&WithUserNames != 0 && (e.User != "" || e.Group != "")
	if hasUID || names {
		uid, gid := int(e.UID), int(e.GID)
		if hasUID && x.o.UIDShift != nil {
			u, okU := x.o.UIDShift.FromArchive(uint32(e.UID))
			g, okG := x.o.UIDShift.FromArchive(uint32(e.GID))
			if !okU || !okG {
				return fmt.Errorf("%s: uid/gid %d/%d outside --uid-shift/--uid-range: %w", path, e.UID, e.GID, syscall.EINVAL)
			}
			uid, gid = int(u), int(g)
		}
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
		switch {
		case b != nil && (uid == -1 || uid == b.uid) && (gid == -1 || gid == b.gid):
			// Already so.
		case fd >= 0:
			err = syscall.Fchown(fd, uid, gid)
		default:
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
		if e.Features&x.mask&(WithPermissions|WithACL|WithReadOnly) != 0 && (b == nil || b.perm != e.Mode&ModePerm) {
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
		t := syscall.NsecToTimespec(ns) // before 1970 too: Nsec stays in [0, 1e9)
		ts := []syscall.Timespec{t, t}
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
	if withChattr && e.Flags&x.mask&WithChattr != 0 && (t == ModeReg || t == ModeDir) {
		if err := setChattr(path, fd, ChattrFromFlags(e.Flags&x.mask)); err != nil {
			if x.root {
				return err
			}
			x.log.Warn("cannot restore file attributes", "path", path, "err", err)
		}
	}
	if withChattr && (t == ModeReg || t == ModeDir) {
		if err := x.fsAttrs(path, e, fd, uint32(t), 0); err != nil {
			if x.root {
				return err
			}
			x.log.Warn("cannot restore FAT attributes or subvolume flags", "path", path, "err", err)
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
	numeric := s == ""
	if numeric {
		s = name // casync stores the decimal id when the name is unknown
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return -1
	}
	if numeric { // a stored id: shifted, as casync's name_to_uid does
		sh, ok := x.o.UIDShift.FromArchive(uint32(v))
		if !ok {
			return -1
		}
		v = uint64(sh)
	}
	x.ids[key] = uint32(v)
	return int(v)
}

func (x *extractor) acl(path string, e *Entry) error {
	var o ACLXattrOptions
	if e.HasUID() && x.o.UIDShift != nil {
		o.ID = func(a ACLEntry, group bool) (uint32, bool) {
			return x.o.UIDShift.FromArchive(uint32(a.ID))
		}
	}
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
