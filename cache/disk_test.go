package cache

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/camount/camount/chunker"
)

func testChunk(i, size int) (chunker.Chunk, []byte) {
	data := bytes.Repeat([]byte(fmt.Sprintf("chunk %d;", i)), size/8+1)[:size]
	return chunker.Chunk{ID: chunker.SHA512_256.Sum(data), Size: uint64(size)}, data
}

func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	c, err := ScanDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, f := range c.Chunks {
		n += f.Size
	}
	return n
}

func TestDiskPutGetVerify(t *testing.T) {
	dir := t.TempDir()
	d, err := OpenDisk(DiskOptions{Dir: dir, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c, data := testChunk(1, 5000)
	if _, ok := d.Get(c, chunker.SHA512_256); ok {
		t.Fatal("hit in an empty cache")
	}
	d.Put(c.ID, data)
	got, ok := d.Get(c, chunker.SHA512_256)
	if !ok || !bytes.Equal(got, data) {
		t.Fatal("miss after Put")
	}
	// The file is in the .castr layout, uncompressed.
	h := c.ID.String()
	p := filepath.Join(dir, h[:4], h)
	if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("chunk file %s: %v", p, err)
	}
	// A damaged file is a miss and is removed.
	os.Chmod(p, 0o644)
	bad := bytes.Clone(data)
	bad[10] ^= 1
	os.WriteFile(p, bad, 0o644)
	if _, ok := d.Get(c, chunker.SHA512_256); ok {
		t.Fatal("served a corrupt file")
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatal("corrupt file not removed")
	}
	// A short file too.
	d.Put(c.ID, data)
	os.Chmod(p, 0o644)
	os.Truncate(p, 100)
	if _, ok := d.Get(c, chunker.SHA512_256); ok {
		t.Fatal("served a truncated file")
	}
	if d.Corrupt.Load() != 2 {
		t.Fatalf("Corrupt = %d", d.Corrupt.Load())
	}
}

func TestDiskEvictsLRUAndSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	const max = 100_000
	d, err := OpenDisk(DiskOptions{Dir: dir, MaxBytes: max})
	if err != nil {
		t.Fatal(err)
	}
	var chunks []chunker.Chunk
	for i := 0; i < 50; i++ {
		c, data := testChunk(i, 10_000)
		chunks = append(chunks, c)
		d.Put(c.ID, data)
		// Keep chunk 0 in use: it must survive eviction.
		if _, ok := d.Get(chunks[0], chunker.SHA512_256); !ok {
			t.Fatalf("chunk 0 evicted after %d puts", i)
		}
		time.Sleep(time.Millisecond)
		waitFor(t, func() bool { return dirBytes(t, dir) <= max })
	}
	d.Close()
	if n := dirBytes(t, dir); n > max || n < max/2 {
		t.Fatalf("cache holds %d bytes, bound %d", n, max)
	}
	// Reopen with a smaller bound: the oldest go, the recently used stay.
	d2, err := OpenDisk(DiskOptions{Dir: dir, MaxBytes: 30_000})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if n := dirBytes(t, dir); n > 30_000 {
		t.Fatalf("after reopen: %d bytes", n)
	}
	if _, ok := d2.Get(chunks[0], chunker.SHA512_256); !ok {
		t.Fatal("most recently used chunk lost on restart")
	}
	if _, ok := d2.Get(chunks[49], chunker.SHA512_256); !ok {
		t.Fatal("newest chunk lost on restart")
	}
	if _, ok := d2.Get(chunks[1], chunker.SHA512_256); ok {
		t.Fatal("an old chunk survived")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("condition not reached in 1s")
}

// TestDiskShared runs two caches on one directory, as two processes would.
func TestDiskShared(t *testing.T) {
	dir := t.TempDir()
	const max = 200_000
	a, _ := OpenDisk(DiskOptions{Dir: dir, MaxBytes: max, Rescan: 20 * time.Millisecond})
	b, _ := OpenDisk(DiskOptions{Dir: dir, MaxBytes: max, Rescan: 20 * time.Millisecond})
	defer a.Close()
	defer b.Close()
	var wg sync.WaitGroup
	for w, d := range []*Disk{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				c, data := testChunk(i%60+w*30, 7000) // overlapping sets
				if got, ok := d.Get(c, chunker.SHA512_256); ok {
					if !bytes.Equal(got, data) {
						t.Error("wrong data from the shared cache")
					}
					continue
				}
				d.Put(c.ID, data)
			}
		}()
	}
	wg.Wait()
	// Each sees the other's files at its next rescan (every 20ms here).
	deadline := time.Now().Add(3 * time.Second)
	for dirBytes(t, dir) > max && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := dirBytes(t, dir); n > max {
		t.Fatalf("shared cache holds %d bytes, bound %d", n, max)
	}
	if c, _ := ScanDir(dir); c.Temps != 0 {
		t.Fatalf("%d temporary files left", c.Temps)
	}
}

// fillCache puts n chunks of size bytes into an unbounded cache at dir.
func fillCache(t *testing.T, dir string, n, size int) {
	t.Helper()
	d, err := OpenDisk(DiskOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		_, data := testChunk(i, size)
		d.Put(chunker.SHA512_256.Sum(data), data)
	}
	d.Close()
}

func TestPrune(t *testing.T) {
	dir := t.TempDir()
	fillCache(t, dir, 10, 1000)
	os.MkdirAll(filepath.Join(dir, "abcd"), 0o755)
	os.WriteFile(filepath.Join(dir, "abcd", "leftover.tmp"), nil, 0o644)
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(filepath.Join(dir, "abcd", "leftover.tmp"), old, old)
	files, n, err := Prune(dir, 5000)
	if err != nil || files != 5 || n != 5000 {
		t.Fatalf("Prune = %d files, %d bytes, %v", files, n, err)
	}
	if c, _ := ScanDir(dir); len(c.Chunks) != 5 || c.Temps != 0 {
		t.Fatalf("after prune: %d chunks, %d temps", len(c.Chunks), c.Temps)
	}
}

// TestDiskBoundUnderConcurrentPuts writes from many goroutines with
// constant rescans: the directory never exceeds the bound. Sampling a directory tree is not atomic (a file removed from
// one fan-out directory after it was listed and one written to another
// before it is listed are both counted), so live samples get one scan's
// churn of slack; the quiet directory at the end gets none.
func TestDiskBoundUnderConcurrentPuts(t *testing.T) {
	dir := t.TempDir()
	const max = 1 << 20
	d, err := OpenDisk(DiskOptions{Dir: dir, MaxBytes: max, Rescan: 3 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	stop := make(chan struct{})
	var peak int64
	var mon sync.WaitGroup
	mon.Add(1)
	go func() {
		defer mon.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := dirBytes(t, dir); n > peak {
				peak = n
			}
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 60; i++ {
				_, data := testChunk(w*1000+i, 16<<10+(i*7919)%(48<<10))
				d.Put(chunker.SHA512_256.Sum(data), data)
			}
		}()
	}
	wg.Wait()
	close(stop)
	mon.Wait()
	if peak > max+max/2 {
		t.Fatalf("directory reached %d bytes, bound %d", peak, max)
	}
	if n := dirBytes(t, dir); n > max {
		t.Fatalf("directory holds %d bytes, bound %d", n, max)
	}
}
