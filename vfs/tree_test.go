package vfs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/camount/camount/catar"
)

// bgSource adds Prefetcher and BackgroundReader to a memSource and counts
// background reads.
type bgSource struct {
	*memSource
	bg atomic.Int64
}

func (s *bgSource) PrefetchRange(off, n int64) {}

func (s *bgSource) ReadAtBackground(ctx context.Context, p []byte, off int64) (int, error) {
	s.bg.Add(1)
	return s.ReadAtContext(ctx, p, off)
}

// crawlFixture mounts (without the kernel) a tree of a/b/c/d/e/f, a file
// m of mSize bytes, and z/y, in that archive order, over a bgSource.
func crawlFixture(t *testing.T, mSize int) (*catar.Archive, *bgSource, *TreeNode) {
	tree := t.TempDir()
	deep := filepath.Join(tree, "a", "b", "c", "d", "e")
	os.MkdirAll(deep, 0o755)
	os.WriteFile(filepath.Join(deep, "f"), []byte("f"), 0o644)
	os.WriteFile(filepath.Join(tree, "m"), pattern(mSize), 0o644) // between a/ and z/
	os.MkdirAll(filepath.Join(tree, "z", "y"), 0o755)
	buf := encodeDir(t, tree)
	src := &bgSource{memSource: newMemSource(buf)}
	arc := openArchive(t, src)
	return arc, src, NewTree(arc, src, TreeOptions{})
}

// crawlWatch returns, for a tree's crawl, whether a path is listed in the
// background now, and a wait (up to 10 s) until it is.
func crawlWatch(t *testing.T, arc *catar.Archive, tr *tree) (listed func(string) bool, waitFor func(string)) {
	listed = func(path string) bool {
		e, err := arc.LookupPath(path)
		if err != nil {
			t.Fatal(err)
		}
		tr.preMu.Lock()
		defer tr.preMu.Unlock()
		return tr.prelist[e.Offset] != nil
	}
	waitFor = func(path string) {
		t.Helper()
		for start := time.Now(); !listed(path); time.Sleep(time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("%s is not listed in the background", path)
			}
		}
	}
	return listed, waitFor
}

// TestTreeCrawl checks that listing a directory lists the directories
// below it in the background, depth first, through the background reader,
// but, while the reader reads file contents, no further than the lead
// ahead of its position.
func TestTreeCrawl(t *testing.T) {
	arc, src, root := crawlFixture(t, 1<<20)
	tr := root.t
	tr.preMu.Lock()
	tr.lead = 64 << 10 // a/... lies within the lead of the root, z/ beyond m
	tr.preMu.Unlock()
	// A reader of file contents (the lead applies only to one).
	tr.seq.observe(0, 100)
	tr.seq.observe(100, 100)

	prelisted, waitFor := crawlWatch(t, arc, tr)
	if _, err := root.children(); err != nil {
		t.Fatal(err)
	}
	waitFor("a/b/c/d/e")
	for _, p := range []string{"a", "a/b", "a/b/c", "a/b/c/d"} {
		if !prelisted(p) {
			t.Errorf("%s is not listed in the background", p)
		}
	}
	if src.bg.Load() == 0 {
		t.Error("background listings did not read through ReadAtBackground")
	}
	time.Sleep(50 * time.Millisecond)
	if prelisted("z") {
		t.Error("z, beyond the lead, was listed before the reader got near it")
	}

	// The reader moves on (reads m): z and then z/y are listed.
	m, err := arc.LookupPath("m")
	if err != nil {
		t.Fatal(err)
	}
	tr.advance(m.PayloadOffset + m.Size)
	waitFor("z/y")

	// A node adopts a background listing.
	a, _ := arc.LookupPath("a")
	n := &TreeNode{t: tr, e: a}
	l, err := n.children()
	if err != nil || len(l.list) != 1 || l.list[0].Name != "b" {
		t.Fatalf("listing of a: %v, %v", l, err)
	}
	if prelisted("a") {
		t.Error("an adopted listing is still kept as a background listing")
	}
}

// TestTreeCrawlWalkLead: in a walk of metadata alone, the crawl starts
// with a short lead (listing one directory, as `ls` does, lists little
// more) and widens it with every directory the walk lists further on.
func TestTreeCrawlWalkLead(t *testing.T) {
	arc, _, root := crawlFixture(t, 4<<20)
	tr := root.t
	listed, waitFor := crawlWatch(t, arc, tr)
	node := func(path string) *TreeNode {
		e, err := arc.LookupPath(path)
		if err != nil {
			t.Fatal(err)
		}
		return &TreeNode{t: tr, e: e}
	}
	if _, err := root.children(); err != nil {
		t.Fatal(err)
	}
	waitFor("a/b") // within the first lead
	time.Sleep(50 * time.Millisecond)
	if listed("z") {
		t.Fatal("listing the root alone crawled to z, 4 MiB further on")
	}
	// The reader walks on: a, a/b, a/b/c. The lead doubles each time.
	for _, p := range []string{"a", "a/b", "a/b/c"} {
		if _, err := node(p).children(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor("z/y")
}

// TestTreePush reads a tree's files in walk order, as tar does: the
// pusher stores files ahead of the reader in the kernel's cache, and every
// file reads back exactly. A walk that reads no contents pushes nothing.
func TestTreePush(t *testing.T) {
	needFUSE(t)
	srcDir := t.TempDir()
	want := map[string][]byte{}
	for d := 0; d < 3; d++ {
		dir := filepath.Join(srcDir, fmt.Sprintf("d%d", d), "sub")
		os.MkdirAll(dir, 0o755)
		for i := 0; i < 40; i++ {
			for _, p := range []string{filepath.Dir(dir), dir} {
				name := filepath.Join(p, fmt.Sprintf("f%02d", i))
				b := pattern(100 + i*997 + d*13)
				b[0] = byte(i) // differ from each other
				os.WriteFile(name, b, 0o644)
				rel, _ := filepath.Rel(srcDir, name)
				want[rel] = b
			}
		}
	}
	big := pattern(3 << 20)
	os.WriteFile(filepath.Join(srcDir, "d1", "big"), big, 0o644)
	want["d1/big"] = big
	buf := encodeDir(t, srcDir)
	mount := func() (string, *tree) {
		src := &bgSource{memSource: newMemSource(buf)}
		arc := openArchive(t, src)
		root := NewTree(arc, src, TreeOptions{})
		return mountT(t, root), root.t
	}

	dir, tr := mount()
	// stat only (find, du): nothing pushed
	n := 0
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil {
			n++
		}
		return err
	})
	if n != len(want)+7 || tr.pushed.Load() != 0 {
		t.Errorf("walk: %d entries (want %d), %d files pushed (want 0)", n, len(want)+7, tr.pushed.Load())
	}

	dir, tr = mount()
	got := 0
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(b, want[rel]) {
			t.Errorf("%s: %d bytes differ from the source's %d", rel, len(b), len(want[rel]))
		}
		got++
		return nil
	})
	if err != nil || got != len(want) {
		t.Fatalf("read %d files of %d: %v", got, len(want), err)
	}
	if tr.pushed.Load() == 0 {
		t.Error("reading the files in walk order pushed none into the kernel's cache")
	}
}

// gatedSource is a bgSource whose background reads wait for open, and
// which records urgent prefetches.
type gatedSource struct {
	*memSource
	open   chan struct{}
	mu     sync.Mutex
	urgent [][2]int64
}

func (s *gatedSource) PrefetchRange(off, n int64) {}

func (s *gatedSource) PrefetchUrgent(off, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.urgent = append(s.urgent, [2]int64{off, n})
}

func (s *gatedSource) ReadAtBackground(ctx context.Context, p []byte, off int64) (int, error) {
	<-s.open
	return s.ReadAtContext(ctx, p, off)
}

// TestTreeHurry: when the reader comes to a directory a crawler is still
// listing, it raises the records that listing reads to its own priority
// (PrefetchUrgent) and then takes the crawler's listing.
func TestTreeHurry(t *testing.T) {
	tree := t.TempDir()
	os.MkdirAll(filepath.Join(tree, "a", "b"), 0o755)
	os.WriteFile(filepath.Join(tree, "a", "f"), []byte("f"), 0o644)
	buf := encodeDir(t, tree)
	src := &gatedSource{memSource: newMemSource(buf), open: make(chan struct{})}
	arc := openArchive(t, src)
	root := NewTree(arc, src, TreeOptions{})
	tr := root.t
	if _, err := root.children(); err != nil { // makes a/ pending
		t.Fatal(err)
	}
	a, _ := arc.LookupPath("a")
	for start := time.Now(); ; time.Sleep(time.Millisecond) {
		tr.preMu.Lock()
		running := tr.running[a.Offset]
		tr.preMu.Unlock()
		if running {
			break // a crawler reads a/ and waits for the gate
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("no crawler started listing a/")
		}
	}
	type result struct {
		l   *listing
		err error
	}
	done := make(chan result, 1)
	go func() {
		l, err := (&TreeNode{t: tr, e: a}).children()
		done <- result{l, err}
	}()
	covered := func(off int64) bool {
		src.mu.Lock()
		defer src.mu.Unlock()
		for _, u := range src.urgent {
			if off >= u[0] && off < u[0]+u[1] {
				return true
			}
		}
		return false
	}
	b, _ := arc.LookupPath("a/b")
	f, _ := arc.LookupPath("a/f")
	for start := time.Now(); !covered(b.Offset) || !covered(f.Offset); time.Sleep(time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("the reader did not hurry the records of a/'s children: %v", src.urgent)
		}
	}
	select {
	case r := <-done:
		t.Fatalf("the reader listed a/ before the crawler did: %v, %v", r.l, r.err)
	default:
	}
	close(src.open)
	r := <-done
	if r.err != nil || len(r.l.list) != 2 || r.l.list[0].Name != "b" || r.l.list[1].Name != "f" {
		t.Fatalf("listing of a/: %v, %v", r.l, r.err)
	}
}

// TestTreeReadHintsInArchive: a sequential reader of the last files of
// an archive gets prefetches within the archive, though the run's window
// reaches past its end.
func TestTreeReadHintsInArchive(t *testing.T) {
	tree := t.TempDir()
	for i := 0; i < 10; i++ {
		os.WriteFile(filepath.Join(tree, fmt.Sprintf("f%d", i)), pattern(300<<10), 0o644)
	}
	src := &fuzzSource{memSource: newMemSource(encodeDir(t, tree))}
	arc := openArchive(t, src)
	root := NewTree(arc, src, TreeOptions{})
	defer root.t.stop()
	files, err := arc.ReadDir(arc.Root())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 128<<10)
	for _, e := range files {
		n := &TreeNode{t: root.t, e: e}
		for off := int64(0); off < e.Size; off += int64(len(buf)) {
			if _, errno := n.Read(context.Background(), nil, buf, off); errno != 0 {
				t.Fatal(errno)
			}
		}
	}
	if h := src.badHint.Load(); h != nil {
		t.Errorf("prefetch hint %s", h)
	}
}
