package vfs

import (
	"context"
	"encoding/binary"
	"errors"
	"io/fs"
	"log/slog"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/camount/camount/catar"
)

// TreeOptions configure NewTree. The zero value is ready to use.
type TreeOptions struct {
	// Log receives failed reads and lookups; nil discards them.
	Log *slog.Logger
	// UIDShift maps the archive's owners (and ACL ids) to those shown, as
	// casync's --uid-shift/--uid-range do on extract; ids it cannot map
	// show as 65534 (the kernel's overflow id). nil shows them as stored.
	UIDShift *catar.UIDShift
}

// BackgroundReader is an optional interface of a Source: ReadAtBackground
// reads like ReadAtContext, but at the priority of prefetches. A tree
// mount lists directories ahead of the reader through it, so that those
// reads wait behind what readers wait for, not ahead of it.
type BackgroundReader interface {
	ReadAtBackground(ctx context.Context, p []byte, off int64) (int, error)
}

// tree is what all nodes of one catar mount share.
type tree struct {
	shift *catar.UIDShift // TreeOptions.UIDShift
	arc   *catar.Archive
	bgArc *catar.Archive // arc read at background priority, for the crawlers
	src   Source
	pre   Prefetcher // nil: the source does not prefetch
	log   *slog.Logger
	// noOpen: the source takes no per-open hints, so OPEN is answered with
	// ENOSYS and the kernel stops sending OPEN and RELEASE (two round
	// trips per file) and keeps the page cache, as with FOPEN_KEEP_CACHE.
	noOpen  bool
	handles atomic.Uint64 // last file handle number given out
	seq     seqReads      // archive readahead across files
	// pushJobs: files a sequential reader starts reading, after which
	// the pusher stores the directory's next small files in the kernel's
	// page cache (push.go). Nil without a Prefetcher.
	pushJobs chan pushJob
	pushed   atomic.Int64 // files pushed
	// plusAll: READDIRPLUS replies carry the attributes of every entry,
	// not only of subdirectories (treedir.go); set once a reader looks
	// up a file of a listed directory.
	plusAll atomic.Bool

	// Directory listings read ahead in the background ("crawled"), by
	// ENTRY offset, until a node adopts them. A walk of a tree (find, du,
	// tar) enters directories in archive order, so the crawler lists the
	// pending directory with the smallest offset first, and the
	// subdirectories of what it lists become pending in turn: it runs
	// ahead of the walk, depth first. While the reader reads file
	// contents in archive order (tar), at most crawlLead bytes of archive
	// beyond its position, so that the chunks the crawl fetches are still
	// cached when the reader gets there; a walk of metadata alone (find,
	// du) only needs the listings, so there the crawl runs ahead by a lead
	// that doubles with every directory the reader lists further on in the
	// archive (walkLead), up to what maxPrelisted and maxPrelistedEntries
	// allow: a walk gets the whole crawl after a few directories, while
	// `ls` of a directory or two on a remote image fetches little more
	// than what it shows.
	lead    int64              // crawlLead (tests change it)
	lastDir atomic.Int64       // offset of the directory the reader listed last
	streak  atomic.Int32       // directories the reader listed one after another in archive order
	pos     atomic.Int64       // furthest archive offset the reader reached: directories listed, files read
	wakeAt  atomic.Int64       // crawlers wait for pos to reach this
	preMu   sync.Mutex         //
	preCond *sync.Cond         // on preMu: pending pushed, a listing done or taken, pos reached wakeAt
	prelist map[int64]*listing // guarded by preMu
	// droppedTo is the reader position of the last dropPrelistedBehind
	// scan; guarded by preMu.
	droppedTo int64
	entries   int            // guarded by preMu: children in prelist
	queued    map[int64]bool // guarded by preMu: pending, to list
	running   map[int64]bool // guarded by preMu: being listed now
	pending   []*catar.Entry // guarded by preMu: directories to list, by offset, largest first
	// stopped: stop was called, the crawlers and the pusher end; guarded
	// by preMu. done is closed then, background counts them.
	stopped    bool
	done       chan struct{}
	background sync.WaitGroup
}

const (
	maxPrelisted        = 4096             // listings kept ahead of use
	maxPrelistedEntries = 1 << 15          // children in them (~400 bytes each)
	maxPending          = 4096             // directories waiting to be listed
	prelistWorker       = 8                // background listers
	crawlLead           = 64 << 20         // bytes of archive the crawl may run ahead of the reader
	walkLeadMin         = 1 << 20          // a metadata walk's lead after one listing; doubles with each further one
	walkLeadShifts      = 40               // doublings after which the lead is unbounded
	prefetchHead        = catar.ListWindow // bytes prefetched at the start of each child: what listing reads
)

// TreeNode is a node of a catar tree mount. Its inode number is its ENTRY
// offset in the archive plus one (the root is 1), so numbers are stable
// across mounts of the same image.
type TreeNode struct {
	gofs.Inode
	readOnly
	t *tree
	e *catar.Entry

	listMu  sync.Mutex              // held while a directory is being listed
	listing atomic.Pointer[listing] // directory: children, once listed
}

// listing is a directory's children, by name and in archive order.
type listing struct {
	byName map[string]*catar.Entry
	list   []*catar.Entry
	pushed int64 // used by the pusher only: children up to here were pushed or passed over
}

// NewTree returns the root of a file system showing the archive arc, whose
// payload bytes are read from src (the same stream arc reads).
func NewTree(arc *catar.Archive, src Source, o TreeOptions) *TreeNode {
	_, hinted := src.(HintedSource)
	t := &tree{arc: arc, src: src, log: logger(o.Log), noOpen: !hinted, shift: o.UIDShift}
	if p, ok := src.(Prefetcher); ok {
		t.pre = p
		t.bgArc = arc
		if b, ok := src.(BackgroundReader); ok {
			t.bgArc = arc.WithReader(bgReaderAt{b})
		}
		t.prelist = map[int64]*listing{}
		t.queued = map[int64]bool{}
		t.running = map[int64]bool{}
		t.preCond = sync.NewCond(&t.preMu)
		t.wakeAt.Store(math.MaxInt64)
		t.lead = crawlLead
		t.done = make(chan struct{})
		t.background.Add(prelistWorker + 1)
		for i := 0; i < prelistWorker; i++ {
			go t.prelister()
		}
		t.pushJobs = make(chan pushJob, 16)
		go t.pusher()
	}
	return &TreeNode{t: t, e: arc.Root()}
}

var (
	_ = (gofs.NodeLookuper)((*TreeNode)(nil))
	_ = (gofs.NodeOpendirHandler)((*TreeNode)(nil))
	_ = (gofs.NodeGetattrer)((*TreeNode)(nil))
	_ = (gofs.NodeOpener)((*TreeNode)(nil))
	_ = (gofs.NodeReader)((*TreeNode)(nil))
	_ = (gofs.NodeReadlinker)((*TreeNode)(nil))
	_ = (gofs.NodeGetxattrer)((*TreeNode)(nil))
	_ = (gofs.NodeListxattrer)((*TreeNode)(nil))
	_ = (gofs.NodeStatfser)((*TreeNode)(nil))
	_ = (gofs.NodeIoctler)((*TreeNode)(nil))
)

// Entry returns the archive entry the node shows.
func (n *TreeNode) Entry() *catar.Entry { return n.e }

func ino(e *catar.Entry) uint64 { return uint64(e.Offset) + 1 }

func (n *TreeNode) path() string { return "/" + n.e.Path }

// fillAttr sets a from the entry: the stored mode, owner, mtime (also used
// as atime and ctime), size, device number; one link (catar records no
// link counts; for directories 1 means "unknown", as on btrfs, and keeps
// find from assuming leaf directories); st_blocks as if stored in 4 KiB
// blocks.
func fillAttr(a *fuse.Attr, e *catar.Entry) {
	a.Ino = ino(e)
	a.Mode = e.Mode
	a.Nlink = 1
	a.Uid, a.Gid = uint32(e.UID), uint32(e.GID)
	a.Blksize = 4096
	switch e.Type() {
	case catar.ModeReg:
		a.Size = uint64(e.Size)
		a.Blocks = blocks512(e.Size)
	case catar.ModeLink:
		a.Size = uint64(len(e.Target))
	case catar.ModeBlock, catar.ModeChar:
		a.Rdev = uint32(e.Rdev())
	}
	timeAttr(a, int64(e.MTime))
}

// children lists a directory once and keeps the listing.
// Lookups in the directory do not wait for a listing in progress.
func (n *TreeNode) children() (*listing, error) {
	if l := n.listing.Load(); l != nil {
		return l, nil
	}
	n.listMu.Lock()
	defer n.listMu.Unlock()
	if l := n.listing.Load(); l != nil {
		return l, nil
	}
	n.t.advance(n.e.Offset)
	n.t.walked(n.e.Offset)
	l := n.t.takePrelisted(n.e)
	if l == nil {
		var err error
		if l, err = n.t.list(n.t.arc, n.e); err != nil {
			return nil, err
		}
	}
	n.listing.Store(l)
	n.t.prelistChildren(l)
	if n.t.pre != nil && n.t.seq.near(n.e.Offset) {
		// A reader of file contents got here: push the directory's
		// files ahead of it.
		n.t.push(pushJob{dir: n, after: n.e.Offset})
	}
	return l, nil
}

// bgReaderAt reads a BackgroundReader.
type bgReaderAt struct{ b BackgroundReader }

func (r bgReaderAt) ReadAt(p []byte, off int64) (int, error) {
	return r.b.ReadAtBackground(context.Background(), p, off)
}

// list reads a directory's children through arc, first asking the source
// to prefetch the start of every child so the reads run in parallel.
func (t *tree) list(arc *catar.Archive, dir *catar.Entry) (*listing, error) {
	if t.pre != nil {
		prefetchChildren(arc, dir, t.pre.PrefetchRange)
	}
	list, err := arc.ListDir(dir, catar.ListWindow)
	if err != nil {
		return nil, err
	}
	l := &listing{byName: make(map[string]*catar.Entry, len(list)), list: list}
	for _, c := range list {
		l.byName[c.Name] = c
	}
	return l, nil
}

// advance records that the reader got to archive offset off, waking the
// crawlers when they wait for that.
func (t *tree) advance(off int64) {
	if t.pre == nil {
		return
	}
	for {
		p := t.pos.Load()
		if off <= p {
			return
		}
		if t.pos.CompareAndSwap(p, off) {
			break
		}
	}
	if off >= t.wakeAt.Load() {
		t.preMu.Lock()
		t.wakeAt.Store(math.MaxInt64)
		t.preCond.Broadcast()
		t.preMu.Unlock()
	}
}

// walked records that the reader lists the directory at off: one more in
// a walk if it lies beyond the last one, else the start of a new walk. A
// longer walk widens the crawl's lead, so it wakes the crawlers.
func (t *tree) walked(off int64) {
	if t.pre == nil {
		return
	}
	n := int32(1)
	if prev := t.lastDir.Swap(off); off > prev {
		n = t.streak.Add(1)
	} else {
		t.streak.Store(1)
	}
	if n <= walkLeadShifts {
		t.preMu.Lock()
		t.wakeAt.Store(math.MaxInt64)
		t.preCond.Broadcast()
		t.preMu.Unlock()
	}
}

// walkLead is how far ahead of the reader the crawl lists directories
// while the reader reads no file contents.
func (t *tree) walkLead() int64 {
	n := t.streak.Load()
	if n >= walkLeadShifts {
		return math.MaxInt64 / 2
	}
	return walkLeadMin << max(n-1, 0)
}

// takePrelisted returns and forgets the background listing of dir, if
// any; when a background lister is reading dir right now, it waits for it
// rather than reading the same records twice.
func (t *tree) takePrelisted(dir *catar.Entry) *listing {
	if t.pre == nil {
		return nil
	}
	t.preMu.Lock()
	defer t.preMu.Unlock()
	if t.running[dir.Offset] {
		// A crawler is listing it: its reads now hold up the reader.
		t.preMu.Unlock()
		t.hurry(dir)
		t.preMu.Lock()
		for t.running[dir.Offset] {
			t.preCond.Wait()
		}
	}
	l := t.prelist[dir.Offset]
	if l != nil {
		delete(t.prelist, dir.Offset)
		t.entries -= len(l.list)
		t.preCond.Broadcast() // room for another listing
	}
	delete(t.queued, dir.Offset) // still pending: the crawlers skip it
	return l
}

// hurry raises the fetches of the records listing dir reads to the
// priority of a waiting reader, for a directory a crawler is listing when
// the reader gets there.
func (t *tree) hurry(dir *catar.Entry) {
	if up, ok := t.pre.(UrgentPrefetcher); ok {
		prefetchChildren(t.arc, dir, up.PrefetchUrgent)
	}
}

// prefetchChildren asks prefetch for the head of each of dir's children:
// the records listing dir reads. A failure to find them is left to the
// listing to report.
func prefetchChildren(arc *catar.Archive, dir *catar.Entry, prefetch func(off, n int64)) {
	spans, err := arc.ChildSpans(dir)
	if err != nil {
		return
	}
	for _, s := range spans {
		prefetch(s.Start, min(s.Size, prefetchHead))
	}
}

// prelistChildren makes the subdirectories of a directory just listed (by
// a reader or a crawler) pending, for the crawlers to list.
func (t *tree) prelistChildren(l *listing) {
	if t.pre == nil {
		return
	}
	t.preMu.Lock()
	defer t.preMu.Unlock()
	t.pushDirs(l)
}

// pushDirs adds l's subdirectories to the pending directories, keeping
// them sorted by offset (largest first). When too many are pending, the
// ones furthest ahead are dropped: they become pending again when their
// parent is adopted. t.preMu held.
func (t *tree) pushDirs(l *listing) {
	pushed := false
	for _, c := range l.list {
		if !c.IsDir() || t.queued[c.Offset] || t.running[c.Offset] || t.prelist[c.Offset] != nil {
			continue
		}
		i := sort.Search(len(t.pending), func(i int) bool { return t.pending[i].Offset < c.Offset })
		t.pending = append(t.pending, nil)
		copy(t.pending[i+1:], t.pending[i:])
		t.pending[i] = c
		t.queued[c.Offset] = true
		pushed = true
		if len(t.pending) > maxPending {
			delete(t.queued, t.pending[0].Offset)
			t.pending[0] = nil
			t.pending = t.pending[1:]
		}
	}
	if pushed {
		t.preCond.Broadcast()
	}
}

// nextToList returns the pending directory to list next, waiting until
// there is one within the lead of the reader and room for its listing.
// Pending directories behind the reader were skipped by it and are
// dropped. It returns nil once the tree is stopped. t.preMu held.
func (t *tree) nextToList() *catar.Entry {
	for {
		if t.stopped {
			return nil
		}
		pos := t.pos.Load()
		for len(t.pending) > 0 {
			d := t.pending[len(t.pending)-1]
			if t.queued[d.Offset] && d.Offset >= pos {
				break
			}
			delete(t.queued, d.Offset)
			t.pending[len(t.pending)-1] = nil
			t.pending = t.pending[:len(t.pending)-1]
		}
		if t.prelistFull() {
			t.dropPrelistedBehind(pos)
		}
		lead := t.lead
		if !t.seq.active() {
			lead = t.walkLead() // a walk of metadata alone
		}
		if n := len(t.pending); n > 0 && !t.prelistFull() {
			d := t.pending[n-1]
			if d.Offset <= pos+lead {
				t.pending[n-1] = nil
				t.pending = t.pending[:n-1]
				delete(t.queued, d.Offset)
				return d
			}
			t.wakeAt.Store(d.Offset - lead)
			if t.pos.Load() >= d.Offset-lead {
				continue // the reader moved on meanwhile
			}
		}
		t.preCond.Wait()
	}
}

// prelistFull reports whether the listings kept ahead reached their
// bounds. t.preMu held.
func (t *tree) prelistFull() bool {
	return len(t.prelist) >= maxPrelisted || t.entries >= maxPrelistedEntries
}

// dropPrelistedBehind forgets listings of directories behind the reader,
// which it skipped. It scans the listings only when the reader moved on
// since the last scan (the crawlers call it for every directory they take
// while the listings are full). t.preMu held.
func (t *tree) dropPrelistedBehind(pos int64) {
	if pos <= t.droppedTo {
		return
	}
	t.droppedTo = pos
	for off, l := range t.prelist {
		if off < pos {
			delete(t.prelist, off)
			t.entries -= len(l.list)
		}
	}
}

// prelister is a crawler: it lists pending directories in the background
// and makes their subdirectories pending in turn.
func (t *tree) prelister() {
	defer t.background.Done()
	t.preMu.Lock()
	defer t.preMu.Unlock()
	for {
		dir := t.nextToList()
		if dir == nil {
			return // stopped
		}
		t.running[dir.Offset] = true
		t.preMu.Unlock()
		l, err := t.list(t.bgArc, dir)
		t.preMu.Lock()
		delete(t.running, dir.Offset)
		t.preCond.Broadcast()
		if err != nil {
			t.log.Debug("background listing failed", "path", "/"+dir.Path, "err", err)
			continue
		}
		t.prelist[dir.Offset] = l
		t.entries += len(l.list)
		t.droppedTo = min(t.droppedTo, dir.Offset-1) // behind the reader by now? the next scan sees it
		t.pushDirs(l)
	}
}

// stop ends the tree's background work (the crawlers and the pusher) and
// waits for it to end. A mount's tree serves until the process exits, so
// only tests, which make many trees, stop theirs. The tree still answers
// requests afterwards, without crawling ahead.
func (t *tree) stop() {
	if t.pre == nil {
		return
	}
	t.preMu.Lock()
	if !t.stopped {
		t.stopped = true
		close(t.done)
		t.preCond.Broadcast()
	}
	t.preMu.Unlock()
	t.background.Wait()
}

// fail logs err about the node and returns its errno.
func (n *TreeNode) fail(op string, err error) syscall.Errno {
	errno := Errno(err)
	switch errno {
	case syscall.ENOENT:
	case syscall.EINTR:
		n.t.log.Debug(op+" interrupted", "path", n.path())
	default:
		n.t.log.Error(op+" failed", "path", n.path(), "err", err)
	}
	return errno
}

func (n *TreeNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if !n.e.IsDir() {
		return nil, syscall.ENOTDIR
	}
	var c *catar.Entry
	if l := n.listing.Load(); l != nil {
		if c = l.byName[name]; c == nil {
			return nil, syscall.ENOENT
		}
	} else {
		var err error
		if c, err = n.t.arc.Lookup(n.e, name); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, syscall.ENOENT
			}
			return nil, n.fail("lookup of "+name, err)
		}
	}
	if !c.IsDir() && n.listing.Load() != nil && !n.t.plusAll.Load() {
		// A file of a directory listed without file attributes: the
		// reader looks at files, not only at the tree (treedir.go).
		n.t.plusAll.Store(true)
	}
	return n.child(ctx, c, out), 0
}

// child returns the inode of child c of directory n and fills its
// attributes.
func (n *TreeNode) child(ctx context.Context, c *catar.Entry, out *fuse.EntryOut) *gofs.Inode {
	fillAttr(&out.Attr, c)
	n.t.mapOwner(&out.Attr)
	return n.NewInode(ctx, &TreeNode{t: n.t, e: c}, gofs.StableAttr{Mode: c.Type(), Ino: ino(c)})
}

func (n *TreeNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fillAttr(&out.Attr, n.e)
	n.t.mapOwner(&out.Attr)
	return 0
}

// mapOwner applies TreeOptions.UIDShift to attributes fillAttr filled.
func (t *tree) mapOwner(a *fuse.Attr) {
	if t.shift == nil {
		return
	}
	var ok bool
	if a.Uid, ok = t.shift.FromArchive(a.Uid); !ok {
		a.Uid = 65534
	}
	if a.Gid, ok = t.shift.FromArchive(a.Gid); !ok {
		a.Gid = 65534
	}
}

func (n *TreeNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	statfs(out, n.t.src.Size(), 0)
	return 0
}

func (n *TreeNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if errno := openFlags(flags); errno != 0 {
		return nil, 0, errno
	}
	if !n.e.IsRegular() {
		return nil, 0, 0
	}
	if n.t.noOpen {
		return nil, 0, syscall.ENOSYS
	}
	return &fileHandle{id: n.t.handles.Add(1), src: n.t.src}, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *TreeNode) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if !n.e.IsRegular() {
		return nil, syscall.EISDIR
	}
	if n.t.pre != nil && off >= 0 && off < n.e.Size {
		n.t.advance(n.e.PayloadOffset + off)
		pOff, pLen, inRun := n.t.seq.observe(n.e.PayloadOffset+off, min(int64(len(dest)), n.e.Size-off))
		if size := n.t.src.Size(); pLen > 0 && pOff < size {
			// The run's window may reach past the end of the archive.
			n.t.pre.PrefetchRange(pOff, min(pLen, size-pOff))
		}
		if inRun && off == 0 {
			n.t.pushAfter(n)
		}
	}
	return readPayload(ctx, n.t.log, n.t.src, n.path(), n.e.PayloadOffset, n.e.Size, f, dest, off)
}

func (n *TreeNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if n.e.Type() != catar.ModeLink {
		return nil, syscall.EINVAL
	}
	return []byte(n.e.Target), 0
}

// xattrs returns the extended attributes the node shows: the stored ones,
// the file capability as security.capability, the SELinux label as
// security.selinux, and the ACLs as system.posix_acl_access and
// system.posix_acl_default (getfacl shows them, and the kernel enforces
// them: the mount runs with FUSE_POSIX_ACL).
func (n *TreeNode) xattrs() []catar.Xattr {
	l := n.e.Xattrs
	ao := catar.ACLXattrOptions{AlwaysMask: true}
	if n.t.shift != nil && n.e.HasUID() {
		ao.ID = func(a catar.ACLEntry, _ bool) (uint32, bool) { return n.t.shift.FromArchive(uint32(a.ID)) }
	}
	acc, def := catar.ACLXattrs(n.e, ao)
	if n.e.FCaps == nil && n.e.SELinux == "" && acc == nil && def == nil {
		return l
	}
	l = append([]catar.Xattr(nil), l...)
	if n.e.FCaps != nil {
		l = append(l, catar.Xattr{Name: "security.capability", Value: n.e.FCaps})
	}
	if n.e.SELinux != "" {
		l = append(l, catar.Xattr{Name: "security.selinux", Value: append([]byte(n.e.SELinux), 0)})
	}
	if acc != nil {
		l = append(l, catar.Xattr{Name: "system.posix_acl_access", Value: acc})
	}
	if def != nil {
		l = append(l, catar.Xattr{Name: "system.posix_acl_default", Value: def})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].Name < l[j].Name })
	return l
}

func (n *TreeNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var b []byte
	for _, x := range n.xattrs() {
		b = append(append(b, x.Name...), 0)
	}
	return xattrReply(b, dest)
}

func (n *TreeNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	for _, x := range n.xattrs() {
		if x.Name == attr {
			return xattrReply(x.Value, dest)
		}
	}
	return 0, syscall.ENODATA
}

// fsIocGetflags is FS_IOC_GETFLAGS (_IOR('f', 1, long) on 64-bit Linux);
// fatIoctlGetAttributes is FAT_IOCTL_GET_ATTRIBUTES (_IOR('r', 0x10, __u32)).
const (
	fsIocGetflags         = 0x80086601
	fatIoctlGetAttributes = 0x80047210
)

// Ioctl answers FS_IOC_GETFLAGS (lsattr, casync make) with the stored
// chattr flags and FAT_IOCTL_GET_ATTRIBUTES with the stored FAT
// attributes (of archives made with fat-attrs, as on the vfat file system
// they came from); other ioctls are not supported.
func (n *TreeNode) Ioctl(ctx context.Context, f gofs.FileHandle, cmd uint32, arg uint64, input []byte, output []byte) (int32, syscall.Errno) {
	var v uint64
	switch cmd {
	case fsIocGetflags:
		v = catar.ChattrFromFlags(n.e.Flags)
	case fatIoctlGetAttributes:
		if n.e.Features&catar.WithFatAttrs == 0 || !n.e.IsRegular() && !n.e.IsDir() {
			return 0, syscall.ENOTTY
		}
		v = catar.FatAttrsFromFlags(n.e.Flags)
	default:
		return 0, syscall.ENOTTY
	}
	if len(output) < 4 {
		return 0, syscall.EINVAL
	}
	clear(output)
	binary.NativeEndian.PutUint32(output, uint32(v))
	return 0, 0
}
