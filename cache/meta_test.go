package cache

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/camount/camount/chunker"
)

// duBytes sums every regular file under dir, as du would.
func duBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			info, _ := e.Info()
			n += info.Size()
		}
		return nil
	})
	return n
}

// writeMeta plants metadata as fetch and seed keep it, used at the given
// time.
func writeMeta(t *testing.T, dir string, used time.Time, size int, names ...string) {
	t.Helper()
	for _, n := range names {
		p := filepath.Join(dir, n)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, used, used)
	}
}

// TestPruneCountsMetadata: the bound covers the indexes and seed scans kept
// beside the chunks; chunks go first, then metadata, least recently used
// first, an index with its validators as one entry.
func TestPruneCountsMetadata(t *testing.T) {
	dir := t.TempDir()
	fillCache(t, dir, 10, 1000)
	long := time.Now().Add(-48 * time.Hour)
	writeMeta(t, dir, long.Add(3*time.Hour), 300, "indexes/aa.idx", "indexes/aa.json")
	writeMeta(t, dir, long.Add(2*time.Hour), 200, "indexes/bb.idx", "indexes/bb.json")
	writeMeta(t, dir, long.Add(1*time.Hour), 500, "seeds/file-1")
	writeMeta(t, dir, long.Add(4*time.Hour), 100, "seeds/tree-1/skel", "seeds/tree-1/chunks")
	writeMeta(t, dir, long, 50, "seeds/.tmp-abandoned") // stale: removed, not counted
	c, err := ScanDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Meta) != 4 || c.MetaBytes() != 1700 || c.Temps != 1 || len(c.StaleTemps) != 1 {
		t.Fatalf("scan: %d metadata entries, %d bytes, %d temps (%d stale)", len(c.Meta), c.MetaBytes(), c.Temps, len(c.StaleTemps))
	}
	if n, size := c.MetaOf(MetaIndex); n != 2 || size != 1000 {
		t.Errorf("indexes: %d, %d bytes; want 2 (with their validators), 1000", n, size)
	}
	if n, size := c.MetaOf(MetaSeedScan); n != 2 || size != 700 {
		t.Errorf("seed scans: %d, %d bytes; want 2, 700", n, size)
	}
	// 10000 bytes of chunks and 1700 of metadata: to 5000, chunks go.
	files, n, err := Prune(dir, 5000)
	if err != nil || files != 7 || n != 7000 {
		t.Fatalf("Prune(5000) = %d files, %d bytes, %v", files, n, err)
	}
	if got := duBytes(t, dir); got > 5000 {
		t.Fatalf("after Prune(5000) the directory holds %d bytes", got)
	}
	// To 1100: every chunk, then the least recently used metadata (the
	// file scan, then index bb with its .json).
	if _, _, err := Prune(dir, 1100); err != nil {
		t.Fatal(err)
	}
	if got := duBytes(t, dir); got > 1100 {
		t.Fatalf("after Prune(1100) the directory holds %d bytes", got)
	}
	for _, p := range []string{"seeds/file-1", "indexes/bb.idx", "indexes/bb.json"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
			t.Errorf("%s kept", p)
		}
	}
	for _, p := range []string{"indexes/aa.idx", "indexes/aa.json", "seeds/tree-1/skel"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
	if _, _, err := Prune(dir, 0); err != nil || duBytes(t, dir) != 0 {
		t.Fatalf("Prune(0) left %d bytes (%v)", duBytes(t, dir), err)
	}
}

// TestDiskBoundCountsMetadata: a live cache keeps chunks and the metadata
// beside them within its bound together.
func TestDiskBoundCountsMetadata(t *testing.T) {
	dir := t.TempDir()
	writeMeta(t, dir, time.Now(), 1500, "indexes/aa.idx", "seeds/file-1")
	const max = 10000
	d, err := OpenDisk(DiskOptions{Dir: dir, MaxBytes: max})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		_, data := testChunk(i, 1000)
		d.Put(chunker.SHA512_256.Sum(data), data)
	}
	d.Close()
	if got := duBytes(t, dir); got > max {
		t.Fatalf("the directory holds %d bytes, bound %d", got, max)
	}
	if got := dirBytes(t, dir); got < max/2 {
		t.Fatalf("only %d bytes of chunks kept", got)
	}
}

// TestTrimMeta keeps the most recently used entries of a metadata
// directory.
func TestTrimMeta(t *testing.T) {
	dir := t.TempDir()
	base := time.Now().Add(-time.Hour)
	for i, stem := range []string{"a", "b", "c", "d"} {
		writeMeta(t, dir, base.Add(time.Duration(i)*time.Minute), 10, "indexes/"+stem+".idx", "indexes/"+stem+".json")
	}
	TrimMeta(dir, IndexDir, 2)
	ents, _ := os.ReadDir(filepath.Join(dir, IndexDir))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 4 || names[0] != "c.idx" || names[3] != "d.json" {
		t.Fatalf("kept %v, want c and d", names)
	}
}
