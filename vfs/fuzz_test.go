package vfs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/camount/camount/catar"
)

// FuzzTree mounts arbitrary archive bytes as a tree, without the kernel:
// it drives the go-fuse bridge of NewTree with the requests the kernel
// would send for a walk that reads everything (LOOKUP of every listed
// name, OPENDIR/READDIRPLUS/READDIR with seeks, GETATTR, OPEN/READ,
// READLINK, LISTXATTR/GETXATTR, STATFS, IOCTL), then resolves the names it
// saw again on a second tree by lookups alone (goodbye-table searches, no
// listings) and walks that tree too. mode%3 picks the source: plain, one
// that prefetches (so that the background crawl, its hurry and the pusher
// run too), or one that takes open hints. With mode bit 7 set, data is not the archive but
// edits to one of the catar package's test archives (fuzzEdit), which
// keeps most of an input well formed so that the fuzzer gets past the
// root more often than with raw bytes.
//
// Bad bytes must give errors (EIO), never a panic, a hang or wrong bytes:
// every input must finish within fuzzDeadline, listed names must look up
// to the same entries with and without a listing, reads must return the
// archive's bytes at the file's payload, and prefetch hints must lie
// within the archive.
func FuzzTree(f *testing.F) {
	for _, a := range fuzzTreeSeeds(f) {
		for mode := uint8(0); mode < 3; mode++ {
			f.Add(a, mode)
		}
	}
	bases := fuzzEditBases(f)
	for i := range bases {
		for mode := uint8(0); mode < 3; mode++ {
			m := 0x80 | uint8(i)<<3 | mode
			f.Add([]byte{}, m)
			// a goodbye item's offset, a record size, a byte of a name
			f.Add([]byte{0xe8, 0xff, 2, 1, 0x60, 0, 2, 0xff, 0x70, 0, 0, 'x'}, m)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		if mode&0x80 != 0 {
			data = fuzzEdit(bases[int(mode>>3&0xf)%len(bases)], data)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			exerciseTree(t, data, mode)
		}()
		select {
		case <-done:
		case <-time.After(fuzzDeadline):
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("serving a %d-byte archive (mode %d) did not finish in %v:\n%s", len(data), mode, fuzzDeadline, buf)
		}
	})
}

// fuzzEditBases returns the archives fuzzEdit edits: fixed files, so that
// an input means the same archive in every run.
func fuzzEditBases(f *testing.F) [][]byte {
	var out [][]byte
	for _, n := range []string{"d.catar", "small.catar", "small-unix.catar", "small-none.catar", "d-unix.catar"} {
		b, err := os.ReadFile(filepath.Join("..", "catar", "testdata", n))
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// fuzzEdit applies edits to a copy of base: each 4 bytes are an offset
// (little-endian uint16, modulo the length), an operation and a value.
// Operations: set the byte, xor it, add the signed value to the
// little-endian uint64 there (sizes, offsets), or insert the byte.
func fuzzEdit(base, edits []byte) []byte {
	b := append([]byte(nil), base...)
	for len(edits) >= 4 && len(b) > 0 {
		off := int(edits[0]) | int(edits[1])<<8
		off %= len(b)
		op, v := edits[2], edits[3]
		edits = edits[4:]
		switch op % 4 {
		case 0:
			b[off] = v
		case 1:
			b[off] ^= v
		case 2:
			if off+8 <= len(b) {
				binary.LittleEndian.PutUint64(b[off:], binary.LittleEndian.Uint64(b[off:])+uint64(int64(int8(v))))
			}
		case 3:
			if len(b) < 1<<16 {
				b = append(b[:off], append([]byte{v}, b[off:]...)...)
			}
		}
	}
	return b
}

const (
	fuzzDeadline = 10 * time.Second // per input; a normal one takes milliseconds
	fuzzOps      = 4000             // requests per tree
	fuzzDepth    = 64               // directory levels walked
	fuzzDirents  = 2000             // entries read per directory
	fuzzReadMax  = 64 << 10         // bytes per READ
)

// fuzzSource is a memSource that, in crawl mode, also prefetches (and so
// starts the crawl and the pusher), reads at background priority and
// hurries; it checks every prefetch hint lies within the archive.
type fuzzSource struct {
	*memSource
	badHint atomic.Value // string: the first hint outside the archive
}

func (s *fuzzSource) hint(what string, off, n int64) {
	if off < 0 || n < 0 || off > s.Size() || n > s.Size()-off {
		s.badHint.CompareAndSwap(nil, fmt.Sprintf("%s(%d, %d) outside the %d-byte archive", what, off, n, s.Size()))
	}
}

func (s *fuzzSource) PrefetchRange(off, n int64)  { s.hint("PrefetchRange", off, n) }
func (s *fuzzSource) PrefetchUrgent(off, n int64) { s.hint("PrefetchUrgent", off, n) }
func (s *fuzzSource) ReadAtBackground(ctx context.Context, p []byte, off int64) (int, error) {
	return s.ReadAtContext(ctx, p, off)
}

// hintedFuzzSource adds HintedSource (open handles) to a plain source.
type hintedFuzzSource struct{ *memSource }

func (s hintedFuzzSource) ReadAtHint(ctx context.Context, p []byte, off int64, h uint64) (int, error) {
	if h == 0 {
		panic("read with hint 0")
	}
	return s.ReadAtContext(ctx, p, off)
}
func (s hintedFuzzSource) CloseHint(h uint64) {}

// exerciseTree serves data as a tree and walks it (see FuzzTree).
func exerciseTree(t *testing.T, data []byte, mode uint8) {
	mem := newMemSource(data)
	var src Source = mem
	var fsrc *fuzzSource
	switch mode % 3 {
	case 1:
		fsrc = &fuzzSource{memSource: mem}
		src = fsrc
	case 2:
		src = hintedFuzzSource{mem}
	}
	arc, err := catar.Open(ReaderAt(context.Background(), src), src.Size())
	if err != nil {
		if !errors.Is(err, catar.ErrFormat) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("open: error not naming a malformed archive: %v", err)
		}
		return
	}
	w := newFuzzWalker(t, arc, src, data)
	defer w.stop()
	w.walk()
	w2 := newFuzzWalker(t, arc, src, data)
	defer w2.stop()
	w2.lookupPaths(w)
	w2.walk() // listings of directories looked up first, as after a stat of a path
	if fsrc != nil {
		if h := fsrc.badHint.Load(); h != nil {
			t.Errorf("prefetch hint %s", h)
		}
	}
}

// fuzzWalker sends a tree the kernel's requests.
type fuzzWalker struct {
	t    *testing.T
	root *TreeNode
	raw  fuse.RawFileSystem
	data []byte
	log  *fuzzLog
	ops  int
	// found: the entries walked, by path ("" the root), in walk order.
	found []*catar.Entry
	names map[string]bool // every name listed, to look up elsewhere
	// listed: directories whose listing succeeded, by path.
	listed map[string]bool
}

// fuzzLog counts a tree's error records and keeps the first whose error
// does not name a malformed archive (the fuzz sources never fail reads).
type fuzzLog struct {
	errors atomic.Int64
	bad    atomic.Value // string
}

func (h *fuzzLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *fuzzLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *fuzzLog) WithGroup(string) slog.Handler            { return h }
func (h *fuzzLog) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelError {
		return nil
	}
	h.errors.Add(1)
	named := false
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && a.Key == "err" && errors.Is(err, catar.ErrFormat) {
			named = true
		}
		return true
	})
	if !named {
		h.bad.CompareAndSwap(nil, fmt.Sprintf("%s %v", r.Message, r))
	}
	return nil
}

func newFuzzWalker(t *testing.T, arc *catar.Archive, src Source, data []byte) *fuzzWalker {
	lg := &fuzzLog{}
	root := NewTree(arc, src, TreeOptions{Log: slog.New(lg)})
	sec := time.Second
	raw := gofs.NewNodeFS(root, &gofs.Options{
		EntryTimeout: &sec, AttrTimeout: &sec, NegativeTimeout: &sec,
		NullPermissions: true,
		RootStableAttr:  &gofs.StableAttr{Ino: 1, Mode: syscall.S_IFDIR},
	})
	return &fuzzWalker{t: t, root: root, raw: raw, data: data, log: lg, names: map[string]bool{}, listed: map[string]bool{}}
}

// stop stops the tree's background work and checks its log.
func (w *fuzzWalker) stop() {
	w.root.t.stop()
	if b := w.log.bad.Load(); b != nil {
		w.t.Errorf("logged an error that does not name a malformed archive: %s", b)
	}
}

// eio checks that a request answered EIO logged why.
func (w *fuzzWalker) eio(what string, st fuse.Status, before int64) {
	if st == fuse.EIO && w.log.errors.Load() == before {
		w.t.Errorf("%s: EIO without an error logged", what)
	}
}

// op counts a request; false when the budget is spent.
func (w *fuzzWalker) op() bool {
	w.ops++
	return w.ops <= fuzzOps
}

func hdr(node uint64) fuse.InHeader { return fuse.InHeader{NodeId: node} }

// fuzzNode is a node the kernel knows: its node ID and its inode.
type fuzzNode struct {
	id    uint64
	in    *gofs.Inode
	depth int
}

func (n fuzzNode) entry() *catar.Entry { return n.in.Operations().(*TreeNode).e }

// walk walks the tree from the root, breadth first.
func (w *fuzzWalker) walk() {
	queue := []fuzzNode{{id: 1, in: w.root.EmbeddedInode()}}
	var st fuse.StatfsOut
	w.raw.StatFs(nil, &fuse.InHeader{NodeId: 1}, &st)
	for len(queue) > 0 && w.op() {
		n := queue[0]
		queue = queue[1:]
		e := n.entry()
		w.found = append(w.found, e)
		w.attrs(n, e)
		switch e.Type() {
		case catar.ModeDir:
			if n.depth < fuzzDepth {
				queue = append(queue, w.dir(n, e)...)
			}
		case catar.ModeReg:
			w.read(n, e)
		case catar.ModeLink:
			b, st := w.raw.Readlink(nil, &fuse.InHeader{NodeId: n.id})
			if !st.Ok() || string(b) != e.Target {
				w.t.Errorf("readlink /%s: %q, %v; want %q", e.Path, b, st, e.Target)
			}
		}
		if e.Type() != catar.ModeLink {
			if _, st := w.raw.Readlink(nil, &fuse.InHeader{NodeId: n.id}); st != fuse.EINVAL {
				w.t.Errorf("readlink of non-symlink /%s: %v, want EINVAL", e.Path, st)
			}
		}
	}
}

// attrs checks GETATTR, the xattrs and the chattr flags of a node.
func (w *fuzzWalker) attrs(n fuzzNode, e *catar.Entry) {
	var out fuse.AttrOut
	if st := w.raw.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(n.id)}, &out); !st.Ok() {
		w.t.Errorf("getattr /%s: %v", e.Path, st)
	}
	if out.Ino != ino(e) || out.Mode != e.Mode || (e.IsRegular() && out.Size != uint64(e.Size)) {
		w.t.Errorf("getattr /%s: ino %d mode 0%o size %d; entry at %d, mode 0%o, size %d", e.Path, out.Ino, out.Mode, out.Size, e.Offset, e.Mode, e.Size)
	}
	if e.IsRegular() && (e.PayloadOffset < 0 || e.Size < 0 || e.PayloadOffset+e.Size > int64(len(w.data))) {
		w.t.Errorf("/%s: payload [%d, +%d) outside the %d-byte archive", e.Path, e.PayloadOffset, e.Size, len(w.data))
	}
	sz, st := w.raw.ListXAttr(nil, &fuse.InHeader{NodeId: n.id}, nil)
	if !st.Ok() {
		w.t.Errorf("listxattr /%s size: %v", e.Path, st)
		return
	}
	buf := make([]byte, sz)
	if sz > 0 {
		if got, st := w.raw.ListXAttr(nil, &fuse.InHeader{NodeId: n.id}, buf); !st.Ok() || got != sz {
			w.t.Errorf("listxattr /%s: %d, %v; want %d", e.Path, got, st, sz)
			return
		}
	}
	for _, name := range strings.Split(strings.TrimSuffix(string(buf), "\x00"), "\x00") {
		if name == "" || !w.op() {
			continue
		}
		vs, st := w.raw.GetXAttr(nil, &fuse.InHeader{NodeId: n.id}, name, nil)
		if !st.Ok() {
			w.t.Errorf("getxattr /%s %q size: %v", e.Path, name, st)
			continue
		}
		v := make([]byte, vs+1)
		if got, st := w.raw.GetXAttr(nil, &fuse.InHeader{NodeId: n.id}, name, v); !st.Ok() || got != vs {
			w.t.Errorf("getxattr /%s %q: %d, %v; want %d", e.Path, name, got, st, vs)
		}
	}
	if _, st := w.raw.GetXAttr(nil, &fuse.InHeader{NodeId: n.id}, "user.fuzz-absent", make([]byte, 64)); st != fuse.Status(syscall.ENODATA) {
		w.t.Errorf("getxattr /%s of an absent name: %v, want ENODATA", e.Path, st)
	}
	var iout fuse.IoctlOut
	w.raw.Ioctl(nil, &fuse.IoctlIn{InHeader: hdr(n.id), Cmd: fsIocGetflags, OutSize: 8}, nil, &iout, make([]byte, 8))
}

// dir lists a directory as the kernel does and looks up every name,
// returning the children.
func (w *fuzzWalker) dir(n fuzzNode, e *catar.Entry) []fuzzNode {
	var oout fuse.OpenOut
	oin := &fuse.OpenIn{InHeader: hdr(n.id), Flags: syscall.O_RDONLY | syscall.O_DIRECTORY}
	logged := w.log.errors.Load()
	if st := w.raw.OpenDir(nil, oin, &oout); !st.Ok() {
		w.eio("opendir /"+e.Path, st, logged)
		if st != fuse.EIO {
			w.t.Errorf("opendir /%s: %v, want EIO for a malformed directory", e.Path, st)
		}
		w.lookupNames(n, e, nil)
		return nil
	}
	defer w.raw.ReleaseDir(&fuse.ReleaseIn{InHeader: hdr(n.id), Fh: oout.Fh})
	w.listed[e.Path] = true
	// READDIRPLUS in small replies, as a getdents with a small buffer.
	var names []string
	var offs []uint64
	off := uint64(0)
	for len(names) < fuzzDirents && w.op() {
		buf := make([]byte, 600)
		l := fuse.NewDirEntryList(buf, off)
		if st := w.raw.ReadDirPlus(nil, &fuse.ReadIn{InHeader: hdr(n.id), Fh: oout.Fh, Offset: off}, l); !st.Ok() {
			w.t.Errorf("readdirplus /%s at %d: %v", e.Path, off, st)
			return nil
		}
		ents, outs, err := fuse.ParseDirLookupEntries(l.Bytes())
		if err != nil {
			w.t.Errorf("readdirplus /%s: %v", e.Path, err)
			return nil
		}
		if len(ents) == 0 {
			break
		}
		for i, d := range ents {
			off = d.Off
			if d.Name == "." || d.Name == ".." {
				continue
			}
			if outs[i].NodeId != 0 && outs[i].Ino != d.Ino {
				w.t.Errorf("readdirplus /%s: %q has ino %d and attributes of ino %d", e.Path, d.Name, d.Ino, outs[i].Ino)
			}
			names = append(names, d.Name)
			offs = append(offs, d.Off)
		}
	}
	seen := map[string]bool{}
	for _, name := range names {
		if seen[name] || name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
			w.t.Errorf("listing of /%s has a bad or repeated name %q", e.Path, name)
		}
		seen[name] = true
		w.names[name] = true
	}
	// Seek back part way and read again with READDIR: the same names.
	if len(offs) > 1 && w.op() {
		k := len(offs) / 2
		buf := make([]byte, 4096)
		l := fuse.NewDirEntryList(buf, offs[k])
		if st := w.raw.ReadDir(nil, &fuse.ReadIn{InHeader: hdr(n.id), Fh: oout.Fh, Offset: offs[k]}, l); !st.Ok() {
			w.t.Errorf("readdir /%s after seeking to %d: %v", e.Path, offs[k], st)
		} else if ents, err := fuse.ParseDirEntries(l.Bytes()); err != nil || len(ents) == 0 && k+1 < len(names) || len(ents) > 0 && (k+1 >= len(names) || ents[0].Name != names[k+1]) {
			w.t.Errorf("readdir /%s after seeking past %q: %v, %v", e.Path, names[k], ents, err)
		}
	}
	return w.lookupNames(n, e, names)
}

// lookupNames looks up the listed names in a directory, which must all
// be found, then a few other names, which need not be.
func (w *fuzzWalker) lookupNames(n fuzzNode, e *catar.Entry, names []string) []fuzzNode {
	var kids []fuzzNode
	for _, name := range names {
		if !w.op() {
			break
		}
		var out fuse.EntryOut
		if st := w.raw.Lookup(nil, &fuse.InHeader{NodeId: n.id}, name, &out); !st.Ok() || out.NodeId == 0 {
			w.t.Errorf("lookup of listed name %q in /%s: %v", name, e.Path, st)
			continue
		}
		c := n.in.GetChild(name)
		if c == nil {
			w.t.Errorf("lookup of %q in /%s made no child inode", name, e.Path)
			continue
		}
		ce := c.Operations().(*TreeNode).e
		if out.Ino != ino(ce) || ce.Name != name || ce.Offset <= e.Offset || e.End > 0 && ce.End > e.End {
			w.t.Errorf("lookup of %q in /%s (at %d, end %d): ino %d, entry %q at %d, end %d", name, e.Path, e.Offset, e.End, out.Ino, ce.Name, ce.Offset, ce.End)
		}
		kids = append(kids, fuzzNode{id: out.NodeId, in: c, depth: n.depth + 1})
	}
	for _, name := range []string{"fuzz-absent", "a", "f"} {
		if !w.op() {
			break
		}
		var out fuse.EntryOut
		logged := w.log.errors.Load()
		st := w.raw.Lookup(nil, &fuse.InHeader{NodeId: n.id}, name, &out)
		w.eio(fmt.Sprintf("lookup of %q in /%s", name, e.Path), st, logged)
	}
	return kids
}

// read opens and reads a file in parts, checking the bytes against the
// archive's at the file's payload.
func (w *fuzzWalker) read(n fuzzNode, e *catar.Entry) {
	var oout fuse.OpenOut
	switch st := w.raw.Open(nil, &fuse.OpenIn{InHeader: hdr(n.id), Flags: syscall.O_RDONLY}, &oout); st {
	case fuse.OK, fuse.ENOSYS:
	default:
		w.t.Errorf("open /%s: %v", e.Path, st)
		return
	}
	if oout.Fh != 0 {
		defer w.raw.Release(nil, &fuse.ReleaseIn{InHeader: hdr(n.id), Fh: oout.Fh})
	}
	for _, off := range []int64{0, fuzzReadMax, e.Size - 100, e.Size, e.Size + 4096} {
		if off < 0 || !w.op() {
			continue
		}
		buf := make([]byte, fuzzReadMax)
		res, st := w.raw.Read(nil, &fuse.ReadIn{InHeader: hdr(n.id), Fh: oout.Fh, Offset: uint64(off), Size: fuzzReadMax}, buf)
		if !st.Ok() {
			w.t.Errorf("read /%s at %d: %v", e.Path, off, st)
			continue
		}
		got, _ := res.Bytes(buf)
		want := []byte{}
		if off < e.Size {
			end := min(e.Size, off+fuzzReadMax)
			want = w.data[e.PayloadOffset+off : e.PayloadOffset+end]
		}
		if !bytes.Equal(got, want) {
			w.t.Errorf("read /%s at %d: %d bytes, not the archive's %d at %d", e.Path, off, len(got), len(want), e.PayloadOffset+off)
		}
	}
	// An offset past what int64 holds (the kernel sends none).
	if _, st := w.raw.Read(nil, &fuse.ReadIn{InHeader: hdr(n.id), Fh: oout.Fh, Offset: 1<<63 + 5, Size: 4096}, make([]byte, 4096)); st != fuse.EINVAL {
		w.t.Errorf("read /%s at 2^63+5: %v, want EINVAL", e.Path, st)
	}
}

// lookupPaths resolves, by lookups alone on a fresh tree, the paths v
// walked: every one in a directory v listed must be found, at the same
// entry. Then it looks up every name v saw in every directory.
func (w *fuzzWalker) lookupPaths(v *fuzzWalker) {
	ids := map[string]fuzzNode{"": {id: 1, in: w.root.EmbeddedInode()}}
	for _, e := range v.found {
		if e.Path == "" {
			continue
		}
		if !w.op() {
			return
		}
		dir, name := "", e.Path
		if i := strings.LastIndexByte(e.Path, '/'); i >= 0 {
			dir, name = e.Path[:i], e.Path[i+1:]
		}
		p, ok := ids[dir]
		if !ok {
			continue
		}
		var out fuse.EntryOut
		logged := w.log.errors.Load()
		st := w.raw.Lookup(nil, &fuse.InHeader{NodeId: p.id}, name, &out)
		w.eio("lookup of /"+e.Path, st, logged)
		if !st.Ok() || out.NodeId == 0 {
			if v.listed[dir] {
				w.t.Errorf("lookup of /%s without a listing: %v", e.Path, st)
			}
			continue
		}
		c := p.in.GetChild(name)
		ce := c.Operations().(*TreeNode).e
		if v.listed[dir] && (ce.Offset != e.Offset || ce.End != e.End || ce.Path != e.Path) {
			w.t.Errorf("lookup of /%s without a listing: entry at %d-%d, with one at %d-%d", e.Path, ce.Offset, ce.End, e.Offset, e.End)
		}
		ids[e.Path] = fuzzNode{id: out.NodeId, in: c}
	}
	for path, n := range ids {
		if !n.entry().IsDir() {
			continue
		}
		for name := range v.names {
			if !w.op() {
				return
			}
			var out fuse.EntryOut
			if st := w.raw.Lookup(nil, &fuse.InHeader{NodeId: n.id}, name, &out); st.Ok() && out.NodeId != 0 {
				if c := n.in.GetChild(name); c == nil || c.Operations().(*TreeNode).e.Name != name {
					w.t.Errorf("lookup of %q in /%s found another name", name, path)
				}
			}
		}
	}
}

// fuzzTreeSeeds returns valid archives with every entry type, xattrs,
// ACLs, nested and empty directories, plus the catar package's test
// archives (made by casync).
func fuzzTreeSeeds(f *testing.F) [][]byte {
	dir := f.TempDir()
	must := func(err error) {
		if err != nil {
			f.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "a", "b", "c"), 0o755))
	must(os.MkdirAll(filepath.Join(dir, "empty"), 0o700))
	must(os.WriteFile(filepath.Join(dir, "a", "b", "c", "deep"), []byte("deep\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "a", "file"), pattern(3000), 0o640))
	must(os.WriteFile(filepath.Join(dir, "a", "zero"), nil, 0o600))
	must(os.WriteFile(filepath.Join(dir, "top"), []byte("top\n"), 0o755))
	must(os.Symlink("a/file", filepath.Join(dir, "link")))
	must(os.Symlink("../nowhere", filepath.Join(dir, "a", "dangling")))
	for i := 0; i < 12; i++ {
		must(os.WriteFile(filepath.Join(dir, "a", "b", fmt.Sprintf("f%02d", i)), []byte{byte(i)}, 0o644))
	}
	syscall.Setxattr(filepath.Join(dir, "top"), "user.k", []byte("v"), 0)
	syscall.Setxattr(filepath.Join(dir, "a"), "user.dir", []byte("xattr of a directory"), 0)
	syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644)
	if l, err := net.Listen("unix", filepath.Join(dir, "sock")); err == nil {
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
	}
	syscall.Mknod(filepath.Join(dir, "chr"), syscall.S_IFCHR|0o644, 1<<8|3)
	syscall.Mknod(filepath.Join(dir, "blk"), syscall.S_IFBLK|0o600, 7<<8|1)
	exec.Command("setfacl", "-m", "u:1234:r,g:99:rw", filepath.Join(dir, "a", "file")).Run()
	exec.Command("setfacl", "-d", "-m", "u:1234:rx", filepath.Join(dir, "a", "b")).Run()
	var seeds [][]byte
	for _, feat := range []uint64{0, catar.WithUnix, catar.WithBest} {
		var buf bytes.Buffer
		if _, err := catar.Encode(context.Background(), &buf, dir, catar.EncodeOptions{Features: feat}); err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, buf.Bytes())
	}
	for _, n := range []string{"d.catar", "small.catar", "small-unix.catar", "small-none.catar"} {
		b, err := os.ReadFile(filepath.Join("..", "catar", "testdata", n))
		must(err)
		seeds = append(seeds, b)
	}
	return seeds
}
