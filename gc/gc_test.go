package gc

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/camount/camount/chunker"
)

// writeIndex writes an index of the given chunk IDs.
func writeIndex(t *testing.T, p string, flags uint64, ids ...chunker.ID) {
	t.Helper()
	x := &chunker.Index{Flags: flags, Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10}
	for i, id := range ids {
		x.Chunks = append(x.Chunks, chunker.Chunk{ID: id, Start: uint64(i) * 1000, Size: 1000})
	}
	var b bytes.Buffer
	if _, err := x.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func id(i byte) chunker.ID { return chunker.SHA512_256.Sum([]byte{i}) }

// put writes a chunk file with the given suffix and modification time.
func put(t *testing.T, dir string, id chunker.ID, suffix string, mtime time.Time) string {
	t.Helper()
	h := id.String()
	p := filepath.Join(dir, h[:4], h+suffix)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte("chunk "+h), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	return p
}

func files(t *testing.T, dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			r, _ := filepath.Rel(dir, p)
			out = append(out, r)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

func TestSweepLocal(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "s")
	old := time.Now().Add(-2 * time.Hour)
	flags := chunker.FlagSHA512_256
	writeIndex(t, filepath.Join(dir, "a.caibx"), flags, id(1), id(2), id(1))
	writeIndex(t, filepath.Join(dir, "b.caidx"), flags, id(3))
	keep := []string{
		put(t, store, id(1), ".cacnk", old),
		put(t, store, id(2), ".cacnk", old),
		put(t, store, id(3), "", old),                // the disk cache's layout
		put(t, store, id(4), ".cacnk", time.Now()),   // young: a make running meanwhile
		put(t, store, id(4), ".cacnk.1234.tmp", old), // a write in progress: not a chunk
	}
	gone := []string{
		put(t, store, id(5), ".cacnk", old),
		put(t, store, id(6), "", old),
	}
	os.WriteFile(filepath.Join(store, "README"), []byte("x"), 0o644)
	keep = append(keep, filepath.Join(store, "README"))

	refs, err := Referenced([]string{filepath.Join(dir, "a.caibx"), filepath.Join(dir, "b.caidx")})
	if err != nil {
		t.Fatal(err)
	}
	if refs.Len() != 3 || refs.Refs != 4 {
		t.Errorf("referenced %d chunks, %d references; want 3, 4", refs.Len(), refs.Refs)
	}
	before := files(t, store)
	var listed []string
	st, err := Sweep(context.Background(), Local{store}, refs, Options{DryRun: true, MinAge: time.Hour, OnRemove: func(e Entry) { listed = append(listed, e.Name) }})
	if err != nil || st.Removed != 2 || len(listed) != 2 {
		t.Fatalf("dry run: %+v %v %q", st, err, listed)
	}
	if got := files(t, store); !equal(got, before) {
		t.Fatalf("dry run removed files: %q -> %q", before, got)
	}
	st, err = Sweep(context.Background(), Local{store}, refs, Options{MinAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if st.Removed != 2 || st.Referenced != 3 || st.Young != 1 || st.Chunks != 6 {
		t.Errorf("stats %+v", st)
	}
	for _, p := range keep {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("kept file removed: %v", err)
		}
	}
	for _, p := range gone {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s not removed: %v", p, err)
		}
	}
}

// A chunk rewritten between listing and removal (a concurrent make) stays.
func TestSweepKeepsChunkChangedMeanwhile(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-2 * time.Hour)
	p := put(t, dir, id(7), ".cacnk", old)
	refs := &Set{ids: map[chunker.ID]struct{}{}}
	st, err := Sweep(context.Background(), touching{Local{dir}}, refs, Options{})
	if err != nil || st.Changed != 1 || st.Removed != 0 {
		t.Fatalf("%+v %v", st, err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Errorf("chunk changed meanwhile was removed: %v", err)
	}
}

// touching refreshes each chunk's time between Walk and Remove, as
// camount make does for a chunk it reuses.
type touching struct{ Local }

func (s touching) Remove(ctx context.Context, e Entry) error {
	now := time.Now()
	os.Chtimes(e.Name, now, now)
	return s.Local.Remove(ctx, e)
}

func TestReferencedRefuses(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.caibx")
	writeIndex(t, a, chunker.FlagSHA512_256, id(1))
	b := filepath.Join(dir, "b.caibx")
	writeIndex(t, b, 0, id(2)) // sha256
	if _, err := Referenced([]string{a, b}); !errors.Is(err, ErrMixedDigests) {
		t.Errorf("mixed digests: %v", err)
	}
	if _, err := Referenced([]string{a, filepath.Join(dir, "missing.caibx")}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing index: %v", err)
	}
	bad := filepath.Join(dir, "bad.caibx")
	raw, _ := os.ReadFile(a)
	os.WriteFile(bad, raw[:len(raw)-10], 0o644)
	if _, err := Referenced([]string{a, bad}); !errors.Is(err, chunker.ErrFormat) {
		t.Errorf("truncated index: %v", err)
	}
	if _, err := Referenced(nil); err == nil {
		t.Error("no index: no error")
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
