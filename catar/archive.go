package catar

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
)

// Archive gives random access to a catar archive held in an io.ReaderAt.
// It reads only the records it needs: a lookup reads O(log n) goodbye items
// per directory level. An Archive is safe for concurrent use if r is.
type Archive struct {
	r        io.ReaderAt
	size     int64
	features uint64
	root     *Entry
}

// Prefetcher is an optional interface of the io.ReaderAt given to Open:
// PrefetchRange asks for [off, off+n) to be fetched in the background.
// ReadDir uses it to fetch the records of all children at once instead of
// one after the other (fetch.Blob implements it).
type Prefetcher interface {
	PrefetchRange(off, n int64)
}

// ErrNotExist is returned (wrapped) by Lookup when a name is absent; it
// is fs.ErrNotExist.
var ErrNotExist = fs.ErrNotExist

// Open checks the root of the archive of the given size and returns an
// Archive reading from r.
func Open(r io.ReaderAt, size int64) (*Archive, error) {
	if size < entrySize+40 {
		return nil, formatErr(0, "archive of %d bytes is too small", size)
	}
	a := &Archive{r: r, size: size}
	w := a.smallWindow()
	hdr, err := w.get(0, headerSize+8)
	if err != nil {
		return nil, err
	}
	if le.Uint64(hdr[8:]) != TypeEntry {
		return nil, formatErr(0, "archive does not start with an ENTRY record")
	}
	a.features = le.Uint64(hdr[16:])
	root, err := a.readNode(w, 0, -1, size, "", "")
	if err != nil {
		return nil, err
	}
	if !root.IsDir() {
		return nil, formatErr(0, "the root entry is not a directory")
	}
	if _, _, err := a.goodbyeTail(w, root); err != nil {
		return nil, err
	}
	a.root = root
	return a, nil
}

// WithReader returns the archive read through r instead, which must hold
// the same bytes (for example the same stream read at another priority).
// Entries of either Archive may be passed to the other.
func (a *Archive) WithReader(r io.ReaderAt) *Archive {
	b := *a
	b.r = r
	return &b
}

// Root returns the root directory.
func (a *Archive) Root() *Entry { return a.root }

// Features returns the archive's feature flags.
func (a *Archive) Features() uint64 { return a.features }

// ReaderAt returns the reader the archive reads from.
func (a *Archive) ReaderAt() io.ReaderAt { return a.r }

// Size returns the archive size.
func (a *Archive) Size() int64 { return a.size }

// Payload returns the contents of a regular file.
func (a *Archive) Payload(e *Entry) *io.SectionReader {
	if !e.IsRegular() {
		return io.NewSectionReader(a.r, 0, 0)
	}
	return io.NewSectionReader(a.r, e.PayloadOffset, e.Size)
}

// window is a cached read window over the archive, so reading consecutive
// small records costs one ReadAt.
type window struct {
	a     *Archive
	off   int64
	buf   []byte
	size  int   // bytes read ahead per ReadAt
	limit int64 // if > 0, read no further ahead than this offset
}

// window returns a large read window, for reading many consecutive records.
func (a *Archive) window() *window { return &window{a: a, size: 64 << 10} }

// smallWindow returns a window for point lookups, which should touch as few
// chunks of an underlying blob as possible.
func (a *Archive) smallWindow() *window { return &window{a: a, size: 512} }

// get returns n bytes at off (valid until the next call).
func (w *window) get(off int64, n int) ([]byte, error) {
	if off < 0 || n < 0 || off+int64(n) > w.a.size {
		return nil, formatErr(off, "record of %d bytes extends past the end of the archive (%d bytes)", n, w.a.size)
	}
	if off >= w.off && off+int64(n) <= w.off+int64(len(w.buf)) {
		return w.buf[off-w.off : off-w.off+int64(n)], nil
	}
	size := n
	if size < w.size {
		size = w.size
	}
	if rem := w.a.size - off; int64(size) > rem {
		size = int(rem)
	}
	if w.limit > 0 && off+int64(size) > w.limit && off+int64(n) <= w.limit {
		size = int(w.limit - off)
	}
	if cap(w.buf) < size {
		w.buf = make([]byte, size)
	}
	w.buf = w.buf[:size]
	m, err := w.a.r.ReadAt(w.buf, off)
	if m < n {
		w.buf = w.buf[:0]
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("catar: reading at %d: %w", off, err)
	}
	w.buf = w.buf[:m]
	w.off = off
	return w.buf[:n], nil
}

// backWindow bounds getBack's reads: a goodbye table is preceded by the
// payloads of the directory's last files, which a larger read through a
// blob would fetch for nothing (a 4 KiB read fetched ~5% more chunks in a
// full listing). It holds the tables of directories of up to 19 entries;
// larger tables are read exactly, in a second read.
const backWindow = 512

// getBack is get for data read backwards (a goodbye table from its
// tail): on a miss it reads the window that ends at off+n, starting no
// earlier than lo, so the records before off come with it.
func (w *window) getBack(lo, off int64, n int) ([]byte, error) {
	if off >= w.off && off+int64(n) <= w.off+int64(len(w.buf)) && n >= 0 {
		return w.buf[off-w.off : off-w.off+int64(n)], nil
	}
	end := off + int64(n)
	start := end - int64(min(w.size, backWindow))
	if start < lo {
		start = lo
	}
	if start > off || start < 0 || end > w.a.size {
		return w.get(off, n)
	}
	// Exactly [start, end): a plain get would read a whole window ahead.
	size, limit := w.size, w.limit
	w.size, w.limit = int(end-start), 0
	_, err := w.get(start, int(end-start))
	w.size, w.limit = size, limit
	if err != nil {
		return nil, err
	}
	return w.buf[off-start : off-start+int64(n)], nil
}

// header reads a record header at off and checks its size against the
// type's limits and the end of the enclosing node.
func (w *window) header(off, end int64) (size, typ uint64, err error) {
	h, err := w.get(off, headerSize)
	if err != nil {
		return 0, 0, err
	}
	size, typ = le.Uint64(h), le.Uint64(h[8:])
	max := maxRecordSize(typ)
	switch {
	case max == 0:
		return 0, 0, formatErr(off, "unknown record type 0x%016x", typ)
	case size < headerSize || size == ^uint64(0):
		return 0, 0, formatErr(off, "%s record size %d invalid", recordName(typ), size)
	case size > max:
		return 0, 0, formatErr(off, "%s record of %d bytes is too large", recordName(typ), size)
	case size > uint64(end-off):
		return 0, 0, formatErr(off, "%s record of %d bytes extends past its node's end at %d", recordName(typ), size, end)
	}
	return size, typ, nil
}

// readNode reads the ENTRY at off and its metadata and body records; end is
// the end of the node's serialization.
func (a *Archive) readNode(w *window, off, nameOff, end int64, name, path string) (*Entry, error) {
	size, typ, err := w.header(off, end)
	if err != nil {
		return nil, err
	}
	if typ != TypeEntry {
		return nil, formatErr(off, "expected ENTRY, found %s", recordName(typ))
	}
	b, err := w.get(off+headerSize, int(size)-headerSize)
	if err != nil {
		return nil, err
	}
	e, err := parseEntry(off, b, a.features)
	if err != nil {
		return nil, err
	}
	e.Name, e.Path, e.NameOffset, e.End = name, path, nameOff, end
	p := nodeParser{e: e}
	pos := off + entrySize
	for {
		if pos >= end {
			break
		}
		size, typ, err := w.header(pos, end)
		if err != nil {
			return nil, err
		}
		if metaStage(typ) == 0 {
			break
		}
		b, err := w.get(pos+headerSize, int(size)-headerSize)
		if err != nil {
			return nil, err
		}
		if err := p.meta(pos, typ, b); err != nil {
			return nil, err
		}
		pos += int64(size)
	}
	if err := p.finishMeta(off); err != nil {
		return nil, err
	}
	e.metaEnd = pos
	bt := bodyType(e.Mode)
	if e.IsDir() {
		return e, nil
	}
	if bt == 0 {
		if pos != end {
			return nil, formatErr(pos, "unexpected data after a fifo or socket entry")
		}
		return e, nil
	}
	if pos >= end {
		return nil, formatErr(pos, "%s entry lacks its %s record", typeName(e.Mode), recordName(bt))
	}
	size, typ, err = w.header(pos, end)
	if err != nil {
		return nil, err
	}
	if typ != bt {
		return nil, formatErr(pos, "%s entry followed by %s instead of %s", typeName(e.Mode), recordName(typ), recordName(bt))
	}
	if pos+int64(size) != end {
		return nil, formatErr(pos, "%s record ends at %d but the entry ends at %d", recordName(typ), pos+int64(size), end)
	}
	if typ == TypePayload {
		e.PayloadOffset, e.Size = pos+headerSize, int64(size)-headerSize
		return e, nil
	}
	b, err = w.get(pos+headerSize, int(size)-headerSize)
	if err != nil {
		return nil, err
	}
	return e, parseBody(e, pos, typ, b)
}

func typeName(mode uint32) string {
	switch mode & ModeType {
	case ModeReg:
		return "regular file"
	case ModeDir:
		return "directory"
	case ModeLink:
		return "symlink"
	case ModeBlock:
		return "block device"
	case ModeChar:
		return "char device"
	case ModeFIFO:
		return "fifo"
	case ModeSock:
		return "socket"
	}
	return "unknown"
}

// goodbyeTail checks a directory's goodbye tail and returns the GOODBYE
// offset and its item count.
func (a *Archive) goodbyeTail(w *window, dir *Entry) (g int64, n int, err error) {
	if !dir.IsDir() {
		return 0, 0, fmt.Errorf("catar: %q is not a directory", dir.Path)
	}
	t, err := w.getBack(dir.metaEnd, dir.End-goodbyeItemSize, goodbyeItemSize)
	if err != nil {
		return 0, 0, err
	}
	entOff, size, marker := le.Uint64(t), le.Uint64(t[8:]), le.Uint64(t[16:])
	tailOff := dir.End - goodbyeItemSize
	if marker != GoodbyeTailMarker {
		return 0, 0, formatErr(tailOff, "goodbye tail marker 0x%x invalid", marker)
	}
	if size < 40 || (size-40)%goodbyeItemSize != 0 || size > uint64(dir.End-dir.metaEnd) {
		return 0, 0, formatErr(tailOff, "goodbye size %d invalid", size)
	}
	if size > maxRecordSize(TypeGoodbye) {
		// Listing reads the whole table into memory: an image repeating
		// a chunk is huge at no cost, and its table must not be.
		return 0, 0, formatErr(tailOff, "goodbye table of %d bytes is too large (at most %d items)", size, (maxRecordSize(TypeGoodbye)-40)/goodbyeItemSize)
	}
	g = dir.End - int64(size)
	if entOff != uint64(g-dir.Offset) {
		return 0, 0, formatErr(tailOff, "goodbye tail points to entry %d, not the directory's entry at %d", g-int64(entOff), dir.Offset)
	}
	h, err := w.getBack(g, g, headerSize)
	if err != nil {
		return 0, 0, err
	}
	if le.Uint64(h) != size || le.Uint64(h[8:]) != TypeGoodbye {
		return 0, 0, formatErr(g, "GOODBYE header does not match its tail")
	}
	return g, int(size-40) / goodbyeItemSize, nil
}

// eachItem calls fn with the n items of the goodbye table at g, in slot
// order. It reads the table 64 KiB at a time, so that a listing holds the
// table once, decoded, not also its bytes.
func (a *Archive) eachItem(w *window, g int64, n int, fn func(i int, it goodbyeItem) error) error {
	const per = (64 << 10) / goodbyeItemSize
	for i := 0; i < n; i += per {
		k := min(per, n-i)
		// Backwards: never past the table's end into the next entry.
		tb, err := w.getBack(g, g+headerSize+int64(i)*goodbyeItemSize, k*goodbyeItemSize)
		if err != nil {
			return err
		}
		for j := 0; j < k; j++ {
			b := tb[j*goodbyeItemSize:]
			it := goodbyeItem{start: g - int64(le.Uint64(b)), size: int64(le.Uint64(b[8:])), hash: le.Uint64(b[16:])}
			if err := fn(i+j, it); err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *Archive) item(w *window, g int64, i int) (goodbyeItem, error) {
	b, err := w.getBack(g, g+headerSize+int64(i)*goodbyeItemSize, goodbyeItemSize)
	if err != nil {
		return goodbyeItem{}, err
	}
	return goodbyeItem{start: g - int64(le.Uint64(b)), size: int64(le.Uint64(b[8:])), hash: le.Uint64(b[16:])}, nil
}

// child reads the FILENAME and node of a goodbye item of dir.
func (a *Archive) child(w *window, dir *Entry, g int64, it goodbyeItem) (*Entry, error) {
	if it.start < dir.metaEnd || it.start >= g || it.size < entrySize+18 || it.size > g-it.start {
		return nil, formatErr(g, "goodbye item (start %d, size %d) lies outside directory %q", it.start, it.size, dir.Path)
	}
	if dir.depth+1 >= maxDepth {
		// As casync and Decoder: it also bounds the length of the
		// paths entries carry, and so what a walk holds.
		return nil, formatErr(it.start, "directories nested deeper than %d levels", maxDepth)
	}
	end := it.start + it.size
	size, typ, err := w.header(it.start, end)
	if err != nil {
		return nil, err
	}
	if typ != TypeFilename {
		return nil, formatErr(it.start, "goodbye item points to %s, not FILENAME", recordName(typ))
	}
	b, err := w.get(it.start+headerSize, int(size)-headerSize)
	if err != nil {
		return nil, err
	}
	name, err := cstring(it.start, b, "FILENAME")
	if err != nil {
		return nil, err
	}
	if err := validName(it.start, name); err != nil {
		return nil, err
	}
	if NameHash(name) != it.hash {
		return nil, formatErr(g, "goodbye hash of %q does not match its name", name)
	}
	p := name
	if dir.Path != "" {
		p = dir.Path + "/" + name
	}
	c, err := a.readNode(w, it.start+int64(size), it.start, end, name, p)
	if err != nil {
		return nil, err
	}
	c.depth = dir.depth + 1
	return c, nil
}

// Lookup finds name in directory dir by a binary search of its goodbye
// table. It returns an error wrapping fs.ErrNotExist when there is none.
func (a *Archive) Lookup(dir *Entry, name string) (*Entry, error) {
	w := a.smallWindow()
	g, n, err := a.goodbyeTail(w, dir)
	if err != nil {
		return nil, err
	}
	h := NameHash(name)
	var found *Entry
	var search func(i int) error
	search = func(i int) error {
		if i >= n || found != nil {
			return nil
		}
		it, err := a.item(w, g, i)
		if err != nil {
			return err
		}
		if it.hash == h {
			c, err := a.child(w, dir, g, it)
			if err != nil {
				return err
			}
			if c.Name == name {
				found = c
				return nil
			}
		}
		if h <= it.hash {
			if err := search(2*i + 1); err != nil {
				return err
			}
		}
		if h >= it.hash {
			return search(2*i + 2)
		}
		return nil
	}
	if err := search(0); err != nil {
		return nil, err
	}
	if found == nil {
		return nil, fmt.Errorf("catar: %q in %q: %w", name, "/"+dir.Path, fs.ErrNotExist)
	}
	return found, nil
}

// LookupPath resolves a slash-separated path from the root (symlinks are
// not followed).
func (a *Archive) LookupPath(path string) (*Entry, error) {
	e := a.root
	for _, c := range strings.Split(path, "/") {
		if c == "" || c == "." {
			continue
		}
		if c == ".." {
			return nil, fmt.Errorf("catar: path %q: '..' not supported", path)
		}
		if !e.IsDir() {
			return nil, fmt.Errorf("catar: path %q: %q is not a directory", path, e.Path)
		}
		var err error
		if e, err = a.Lookup(e, c); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// childItems reads dir's goodbye table, checks its layout and returns its
// items sorted by archive offset, with the table's offset g. ReadDir and
// ListDir share it.
func (a *Archive) childItems(w *window, dir *Entry) (g int64, items []goodbyeItem, err error) {
	g, n, err := a.goodbyeTail(w, dir)
	if err != nil {
		return 0, nil, err
	}
	items = make([]goodbyeItem, n)
	err = a.eachItem(w, g, n, func(i int, it goodbyeItem) error {
		items[i] = it
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	if err := checkGoodbyeLayout(items, g); err != nil {
		return 0, nil, err
	}
	sort.Slice(items, func(i, j int) bool { return items[i].start < items[j].start })
	return g, items, nil
}

// ReadDir returns the children of dir in archive (name) order, checking
// that the goodbye table describes exactly the serialized children.
func (a *Archive) ReadDir(dir *Entry) ([]*Entry, error) {
	return a.readDir(a.window(), dir)
}

func (a *Archive) readDir(w *window, dir *Entry) ([]*Entry, error) {
	g, items, err := a.childItems(w, dir)
	if err != nil {
		return nil, err
	}
	pf, _ := a.r.(Prefetcher)
	if pf != nil {
		for _, it := range items {
			pf.PrefetchRange(it.start, min(it.size, 512))
		}
	}
	// Read ahead over runs of small children, but never into a large
	// file's payload (through a Blob that would fetch chunks for nothing).
	const small = 16 << 10
	runEnd := make([]int64, len(items))
	for i := len(items) - 1; i >= 0; i-- {
		it := items[i]
		runEnd[i] = it.start + min(it.size, 512)
		if it.size <= small {
			runEnd[i] = it.start + it.size
			if i+1 < len(items) && runEnd[i+1] > runEnd[i] {
				runEnd[i] = runEnd[i+1]
			}
		}
		runEnd[i] = min(runEnd[i], it.start+(64<<10))
	}
	return a.readChildren(w, dir, g, items, runEnd, pf)
}

// readChildren reads the entries of dir's children (items, sorted by
// offset, from childItems), checking that they lie back to back from the
// end of dir's own records up to its goodbye table at g and are in name
// order. If limits is set, the window reads no further ahead than
// limits[i] while reading child i; if pf is set, each subdirectory's
// goodbye table is prefetched as soon as its entry is read.
func (a *Archive) readChildren(w *window, dir *Entry, g int64, items []goodbyeItem, limits []int64, pf Prefetcher) ([]*Entry, error) {
	out := make([]*Entry, 0, len(items))
	pos := dir.metaEnd
	for i, it := range items {
		if limits != nil {
			w.limit = limits[i]
		}
		if it.start != pos {
			return nil, formatErr(g, "goodbye table of %q does not match its entries (item at %d, expected %d)", "/"+dir.Path, it.start, pos)
		}
		c, err := a.child(w, dir, g, it)
		if err != nil {
			return nil, err
		}
		if len(out) > 0 && c.Name <= out[len(out)-1].Name {
			return nil, formatErr(it.start, "entry %q out of order after %q", c.Name, out[len(out)-1].Name)
		}
		w.limit = 0
		if pf != nil && c.IsDir() {
			// Its goodbye table, which listing it reads first.
			n := min(c.End-c.metaEnd, backWindow)
			pf.PrefetchRange(c.End-n, n)
		}
		out = append(out, c)
		pos = it.start + it.size
	}
	if pos != g {
		return nil, formatErr(pos, "unexpected data before the goodbye table of %q", "/"+dir.Path)
	}
	return out, nil
}

// checkGoodbyeLayout checks that items (in slot order) are in casync's
// binary-search-tree layout: an in-order walk of the implicit tree over
// the slots (FORMAT.md §4.5) visits them sorted by hash, then offset. It
// walks in place, without copies of the table.
func checkGoodbyeLayout(items []goodbyeItem, g int64) error {
	var prev *goodbyeItem
	var stack [64]int // the tree's depth is at most log2(len(items))+1
	sp := 0
	for i := 0; i < len(items) || sp > 0; {
		for ; i < len(items); i = 2*i + 1 {
			stack[sp] = i
			sp++
		}
		sp--
		i = stack[sp]
		it := &items[i]
		if prev != nil && (prev.hash > it.hash || prev.hash == it.hash && prev.start > it.start) {
			return formatErr(g, "goodbye table is not in binary-search-tree order (slot %d)", i)
		}
		prev = it
		i = 2*i + 2
	}
	return nil
}

// Walk calls fn for e and every entry below it, depth first in archive
// order. Returning SkipDir from fn for a directory skips its children.
func (a *Archive) Walk(e *Entry, fn func(*Entry) error) error {
	return a.walk(a.window(), e, fn)
}

// walk is Walk reading through one window (one buffer for the whole walk).
func (a *Archive) walk(w *window, e *Entry, fn func(*Entry) error) error {
	if err := fn(e); err != nil {
		if errors.Is(err, fs.SkipDir) {
			return nil
		}
		return err
	}
	if !e.IsDir() {
		return nil
	}
	kids, err := a.readDir(w, e)
	if err != nil {
		return err
	}
	for _, k := range kids {
		if err := a.walk(w, k, fn); err != nil {
			return err
		}
	}
	return nil
}
