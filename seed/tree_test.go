package seed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/camount/camount/catar"
	"github.com/camount/camount/chunker"
)

func makeTestTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 40; i++ {
		sub := filepath.Join(dir, "d"+string(rune('a'+i%5)))
		os.MkdirAll(sub, 0o755)
		b := make([]byte, rng.Intn(200<<10))
		rng.Read(b)
		if i%7 == 0 {
			b = b[:0]
		}
		if err := os.WriteFile(filepath.Join(sub, "f"+string(rune('a'+i))), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink("da/fa", filepath.Join(dir, "link"))
	os.WriteFile(filepath.Join(dir, "dup1"), []byte("same contents"), 0o644)
	os.WriteFile(filepath.Join(dir, "dup2"), []byte("same contents"), 0o644)
	return dir
}

func testOptions() TreeOptions {
	return TreeOptions{Features: catar.DefaultFeatures, Params: chunker.Params{Min: 4 << 10, Avg: 16 << 10, Max: 64 << 10},
		Digest: chunker.SHA512_256, Hardlinks: true}
}

// chunkStream chunks b as the scan should.
func chunkStream(t *testing.T, b []byte, o TreeOptions) []chunker.Chunk {
	c, err := chunker.NewChunker(bytes.NewReader(b), o.Params)
	if err != nil {
		t.Fatal(err)
	}
	var out []chunker.Chunk
	var off uint64
	for {
		d, err := c.Next()
		if err != nil || d == nil {
			break
		}
		out = append(out, chunker.Chunk{ID: o.Digest.Sum(d), Start: off, Size: uint64(len(d))})
		off += uint64(len(d))
	}
	return out
}

func TestTreeSeedRegeneratesStream(t *testing.T) {
	dir := makeTestTree(t)
	o := testOptions()
	ctx := context.Background()
	var want bytes.Buffer
	if _, err := catar.Encode(ctx, &want, dir, catar.EncodeOptions{Features: o.Features}); err != nil {
		t.Fatal(err)
	}
	tr, err := ScanTree(ctx, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if tr.Size() != int64(want.Len()) {
		t.Fatalf("stream size %d, want %d", tr.Size(), want.Len())
	}
	got := make([]byte, want.Len())
	if _, err := tr.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("regenerated stream differs from the encoder's")
	}
	// Odd ranges.
	for _, r := range [][2]int{{0, 1}, {100, 5000}, {len(got) - 7, 7}, {len(got) / 3, len(got) / 3}} {
		b := make([]byte, r[1])
		if _, err := tr.ReadAt(b, int64(r[0])); err != nil || !bytes.Equal(b, got[r[0]:r[0]+r[1]]) {
			t.Fatalf("ReadAt %v: %v", r, err)
		}
	}
	chunks := chunkStream(t, want.Bytes(), o)
	if len(chunks) < 10 {
		t.Fatalf("only %d chunks", len(chunks))
	}
	for _, c := range chunks {
		b, ok, err := tr.Chunk(ctx, c.ID)
		if !ok || err != nil || !bytes.Equal(b, want.Bytes()[c.Start:c.End()]) {
			t.Fatalf("chunk at %d: ok=%v err=%v", c.Start, ok, err)
		}
	}
	// Hardlink candidates.
	sum := sha256.Sum256([]byte("same contents"))
	if c := tr.HardlinkCandidates(13, sum); len(c) != 2 || c[0] != "dup1" || c[1] != "dup2" {
		t.Fatalf("hardlink candidates %v", c)
	}
	// A file changed after the scan: its chunks fail verification.
	var victim chunker.Chunk
	for _, c := range chunks {
		if c.Size > 10000 {
			victim = c
		}
	}
	// Corrupt every file: some payload lies in the victim chunk unless it is all metadata.
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if fi.Mode().IsRegular() && fi.Size() > 0 {
			f, _ := os.OpenFile(p, os.O_WRONLY, 0)
			f.WriteAt(bytes.Repeat([]byte{0xff}, int(min(fi.Size(), 100000))), 0)
			f.Close()
		}
		return nil
	})
	if _, ok, err := tr.Chunk(ctx, victim.ID); !ok || !errors.Is(err, ErrSeedChanged) {
		t.Fatalf("changed seed: ok=%v err=%v", ok, err)
	}
}

func TestTreeSeedCache(t *testing.T) {
	dir := makeTestTree(t)
	o := testOptions()
	o.CacheDir = t.TempDir()
	ctx := context.Background()
	a, err := ScanTree(ctx, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	b, err := ScanTree(ctx, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Reused {
		t.Fatal("unchanged seed was scanned again")
	}
	b.Close()
	os.WriteFile(filepath.Join(dir, "new"), []byte("x"), 0o644)
	c, err := ScanTree(ctx, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Reused {
		t.Fatal("changed seed reused a stale scan")
	}
	ents, _ := os.ReadDir(o.CacheDir)
	if len(ents) != 1 {
		t.Fatalf("cache holds %d entries, want 1", len(ents))
	}
}

// TestTreeSeedCacheBound: every new tree scan keeps the cache within
// maxCacheEntries scans, the newest kept.
func TestTreeSeedCacheBound(t *testing.T) {
	o := testOptions()
	root := t.TempDir()
	o.CacheDir = filepath.Join(root, "seeds")
	ctx := context.Background()
	var last string
	for i := 0; i < maxCacheEntries+3; i++ {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte(fmt.Sprint("tree ", i)), 0o644); err != nil {
			t.Fatal(err)
		}
		tr, err := ScanTree(ctx, dir, o)
		if err != nil {
			t.Fatal(err)
		}
		tr.Close()
		last = dir
	}
	ents, err := os.ReadDir(o.CacheDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != maxCacheEntries {
		t.Fatalf("cache holds %d scans after %d, want %d", len(ents), maxCacheEntries+3, maxCacheEntries)
	}
	tr, err := ScanTree(ctx, last, o)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if !tr.Reused {
		t.Error("the newest scan was trimmed")
	}
}
