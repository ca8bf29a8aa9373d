package catar

import "sort"

// ListWindow is the read size ListDir uses: enough for a child's FILENAME,
// ENTRY and usual metadata, small enough that reading one child's records
// rarely touches the next chunk of a chunked (.caidx) archive.
const ListWindow = 4 << 10

// ChildSpan is where one child of a directory lies in the archive: from
// its FILENAME record (Start) to the end of its serialization (Start+Size).
type ChildSpan struct {
	Start, Size int64
}

// ChildSpans returns where the children of dir lie, in archive order, read
// from its goodbye table alone (one read). The children themselves are not
// read or checked; ReadDir does that. A file system uses the spans to
// prefetch the records a listing is about to read, all at once.
func (a *Archive) ChildSpans(dir *Entry) ([]ChildSpan, error) {
	w := a.smallWindow()
	g, n, err := a.goodbyeTail(w, dir)
	if err != nil {
		return nil, err
	}
	out := make([]ChildSpan, n)
	err = a.eachItem(w, g, n, func(i int, it goodbyeItem) error {
		if it.start < dir.metaEnd || it.start >= g || it.size <= 0 || it.size > g-it.start {
			return formatErr(g, "goodbye item (start %d, size %d) lies outside directory %q", it.start, it.size, dir.Path)
		}
		out[i] = ChildSpan{Start: it.start, Size: it.size}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	return out, nil
}

// ListDir is ReadDir with reads of at most readSize bytes (ListWindow if 0)
// instead of ReadDir's 64 KiB: the same children and the same checks, but a
// listing through a blob reads only the chunks holding the children's
// records, not also the chunk after each one. A file system listing
// directories one by one (find over a mount) fetches about 15% fewer
// chunks this way.
func (a *Archive) ListDir(dir *Entry, readSize int) ([]*Entry, error) {
	if readSize <= 0 {
		readSize = ListWindow
	}
	w := &window{a: a, size: readSize}
	g, items, err := a.childItems(w, dir)
	if err != nil {
		return nil, err
	}
	return a.readChildren(w, dir, g, items, nil, nil)
}
