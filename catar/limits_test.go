package catar

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// sparseArchive is an io.ReaderAt of size bytes, zero but for the given
// pieces: the stream of an index that repeats one chunk, as large as its
// author likes at no cost.
type sparseArchive struct {
	size   int64
	pieces map[int64][]byte
}

func (s *sparseArchive) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	for at, b := range s.pieces {
		if at < off+int64(len(p)) && at+int64(len(b)) > off {
			lo := max(at, off)
			copy(p[lo-off:], b[lo-at:])
		}
	}
	return len(p), nil
}

// TestHugeGoodbyeTable: a directory whose goodbye table claims more than
// casync's 2^24 items is refused with a format error naming it, before
// anything reads the table into memory (here almost 1 TiB: listing the
// root used to allocate that much and crash).
func TestHugeGoodbyeTable(t *testing.T) {
	const size = 1 << 40
	w := &builder{}
	w.rec(TypeEntry, entryBody(0xb000000000000000, ModeDir|0777))
	w.rec(TypeFilename, []byte("a\x00")) // what the root's ENTRY is followed by
	const g = 24 << 16                   // (size-g-40) is a multiple of 24: a table of whole items
	gsize := uint64(size - g)
	var tail []byte
	tail = le.AppendUint64(tail, g)
	tail = le.AppendUint64(tail, gsize)
	tail = le.AppendUint64(tail, GoodbyeTailMarker)
	r := &sparseArchive{size: size, pieces: map[int64][]byte{
		0:                      w.b,
		g:                      appendHeader(nil, gsize, TypeGoodbye),
		size - goodbyeItemSize: tail,
	}}
	a, err := Open(r, size)
	if err == nil {
		_, err = a.ListDir(a.Root(), 0)
	}
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Offset != size-goodbyeItemSize {
		t.Fatalf("a directory with a %d-byte goodbye table: %v, want a format error at its tail", gsize, err)
	}
	t.Log(err)
}

// TestGoodbyeLayout: tables in casync's layout are accepted whatever their
// size (also those read in several pieces, over 2730 items); a table with
// two items swapped is refused.
func TestGoodbyeLayout(t *testing.T) {
	sizes := []int{2730, 2731, 6000}
	for n := 1; n <= 40; n++ {
		sizes = append(sizes, n)
	}
	for _, n := range sizes {
		var names []string
		for i := 0; i < n; i++ {
			names = append(names, fmt.Sprintf("f%05d", i))
		}
		b := build(names, nil)
		a, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		if l, err := a.ReadDir(a.Root()); err != nil || len(l) != n || l[n-1].Name != names[n-1] {
			t.Fatalf("%d names: %d listed, %v", n, len(l), err)
		}
		if l, err := a.ListDir(a.Root(), 0); err != nil || len(l) != n {
			t.Fatalf("%d names: ListDir: %d listed, %v", n, len(l), err)
		}
		spans, err := a.ChildSpans(a.Root())
		if err != nil || len(spans) != n {
			t.Fatalf("%d names: %d spans, %v", n, len(spans), err)
		}
		for i := 1; i < n; i++ {
			if spans[i].Start != spans[i-1].Start+spans[i-1].Size {
				t.Fatalf("%d names: span %d %+v does not follow %+v", n, i, spans[i], spans[i-1])
			}
		}
		if n < 2 {
			continue
		}
		g := len(b) - (16 + 24*(n+1))
		bad := append([]byte(nil), b...)
		for _, k := range [][2]int{{0, 1}, {n - 2, n - 1}} {
			copy(bad[g+16+24*k[0]:], b[g+16+24*k[1]:g+16+24*k[1]+24])
			copy(bad[g+16+24*k[1]:], b[g+16+24*k[0]:g+16+24*k[0]+24])
			a, err := Open(bytes.NewReader(bad), int64(len(bad)))
			if err == nil {
				_, err = a.ReadDir(a.Root())
			}
			if err == nil || !strings.Contains(err.Error(), "binary-search-tree order") {
				t.Fatalf("%d names, slots %v swapped: %v", n, k, err)
			}
			copy(bad, b)
		}
	}
}

// nested returns an archive of directories d/d/d/... levels deep below
// the root.
func nested(levels int) []byte {
	const f = 0xb000000000000000
	w := &builder{}
	var node func(level int)
	node = func(level int) {
		entryOff := int64(len(w.b))
		w.rec(TypeEntry, entryBody(f, ModeDir|0777))
		var items []goodbyeItem
		if level > 0 {
			start := w.rec(TypeFilename, []byte("d\x00"))
			node(level - 1)
			items = append(items, goodbyeItem{hash: NameHash("d"), start: start, size: int64(len(w.b)) - start})
		}
		w.b = appendGoodbye(w.b, items, entryOff, int64(len(w.b)))
	}
	node(levels)
	return w.b
}

// TestArchiveDepth: random access accepts what casync and Decoder accept,
// 63 levels below the root, and refuses one more, which also bounds the
// paths entries carry (a deeper chain made a walk hold memory growing
// with the square of its depth).
func TestArchiveDepth(t *testing.T) {
	for _, levels := range []int{maxDepth - 1, maxDepth, 5000} {
		b := nested(levels)
		errSeq := Validate(bytes.NewReader(b))
		a, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		deepest := a.Root()
		for deepest.IsDir() {
			var l []*Entry
			if l, err = a.ReadDir(deepest); err != nil || len(l) == 0 {
				break
			}
			deepest = l[0]
		}
		_, errLookup := a.LookupPath(strings.Repeat("d/", levels))
		ok := levels < maxDepth
		if (errSeq == nil) != ok || (err == nil) != ok || (errLookup == nil) != ok {
			t.Fatalf("%d levels: decoder: %v; listing: %v; lookup: %v", levels, errSeq, err, errLookup)
		}
		if ok && strings.Count(deepest.Path, "/") != levels-1 {
			t.Fatalf("%d levels: deepest entry %q", levels, deepest.Path)
		}
		if !ok && !strings.Contains(err.Error(), "nested deeper than 64") {
			t.Fatalf("%d levels: %v", levels, err)
		}
	}
}
