package catar

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func encodeDir(t *testing.T, dir string) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := Encode(context.Background(), &b, dir, EncodeOptions{}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestExtractUpdate: extracting over an older tree with Delete leaves
// exactly the archive's tree, through temporary names only.
func TestExtractUpdate(t *testing.T) {
	src := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(src, "keep/sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "keep/sub/f"), []byte("new"), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "became-file"), []byte("x"), 0o644))
	must(t, os.Symlink("keep", filepath.Join(src, "link")))
	arch := encodeDir(t, src)

	out := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(out, "keep/sub/old-dir/deeper"), 0o755))
	must(t, os.WriteFile(filepath.Join(out, "keep/sub/f"), []byte("old contents"), 0o644))
	must(t, os.WriteFile(filepath.Join(out, "keep/stale"), []byte("stale"), 0o644))
	must(t, os.MkdirAll(filepath.Join(out, "became-file/x"), 0o755))
	must(t, os.WriteFile(filepath.Join(out, "link"), []byte("was a file"), 0o644))
	st, err := ExtractWithStats(context.Background(), NewDecoder(bytes.NewReader(arch)), out, ExtractOptions{Delete: true})
	must(t, err)
	if st.Deleted != 2 {
		t.Errorf("deleted %d entries, want 2 (keep/stale, keep/sub/old-dir)", st.Deleted)
	}
	if got := encodeDir(t, out); !bytes.Equal(got, arch) {
		t.Fatalf("updated tree differs from the archive:\n%s\n---\n%s", decodeAll(t, got), decodeAll(t, arch))
	}
	// Without Delete, extra entries stay.
	must(t, os.WriteFile(filepath.Join(out, "extra"), []byte("e"), 0o644))
	must(t, Extract(context.Background(), NewDecoder(bytes.NewReader(arch)), out, ExtractOptions{}))
	if _, err := os.Stat(filepath.Join(out, "extra")); err != nil {
		t.Fatal("Delete=false removed an extra entry")
	}
	filepath.Walk(out, func(p string, fi os.FileInfo, err error) error {
		if strings.HasPrefix(filepath.Base(p), ".#") {
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
}

// TestExtractHardlink: a file equal in contents and metadata to a
// candidate is linked; one whose candidate differs in metadata or changed
// is written.
func TestExtractHardlink(t *testing.T) {
	src := t.TempDir()
	big := bytes.Repeat([]byte("0123456789abcdef"), (inlineExtractSize/16)+100) // streamed path
	must(t, os.WriteFile(filepath.Join(src, "small"), []byte("small file"), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "big"), big, 0o644))
	must(t, os.WriteFile(filepath.Join(src, "mode"), []byte("mode differs"), 0o600))
	arch := encodeDir(t, src)
	seed := t.TempDir()
	copyFile := func(name string, mode os.FileMode) {
		b, err := os.ReadFile(filepath.Join(src, name))
		must(t, err)
		p := filepath.Join(seed, name)
		must(t, os.WriteFile(p, b, mode))
		must(t, os.Chmod(p, mode))
		fi, err := os.Stat(filepath.Join(src, name))
		must(t, err)
		must(t, os.Chtimes(p, fi.ModTime(), fi.ModTime()))
	}
	copyFile("small", 0o644)
	copyFile("big", 0o644)
	copyFile("mode", 0o644)
	out := t.TempDir()
	asked := 0
	st, err := ExtractWithStats(context.Background(), NewDecoder(bytes.NewReader(arch)), out, ExtractOptions{
		Hardlink: func(e *Entry, sum [32]byte) []string {
			asked++
			b, err := os.ReadFile(filepath.Join(src, e.Path))
			if err != nil || sha256.Sum256(b) != sum {
				t.Errorf("%s: wrong sum", e.Path)
			}
			return []string{filepath.Join(seed, e.Path)}
		}})
	must(t, err)
	if asked != 3 || st.Hardlinked != 2 || st.HardlinkedBytes != int64(len(big))+10 {
		t.Fatalf("asked %d, linked %d (%d bytes)", asked, st.Hardlinked, st.HardlinkedBytes)
	}
	ino := func(p string) uint64 {
		var s syscall.Stat_t
		must(t, syscall.Stat(p, &s))
		return s.Ino
	}
	for _, n := range []string{"small", "big"} {
		if ino(filepath.Join(out, n)) != ino(filepath.Join(seed, n)) {
			t.Errorf("%s not hard-linked", n)
		}
	}
	if ino(filepath.Join(out, "mode")) == ino(filepath.Join(seed, "mode")) {
		t.Error("file with other permissions hard-linked")
	}
	if got := encodeDir(t, out); !bytes.Equal(got, arch) {
		t.Fatal("extracted tree differs")
	}
}

// TestExtractNoHoles: zero runs stay holes unless NoHoles.
func TestExtractNoHoles(t *testing.T) {
	src := t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "z"), make([]byte, 256<<10), 0o644))
	arch := encodeDir(t, src)
	blocks := func(o ExtractOptions) int64 {
		out := t.TempDir()
		must(t, Extract(context.Background(), NewDecoder(bytes.NewReader(arch)), out, o))
		var s syscall.Stat_t
		must(t, syscall.Stat(filepath.Join(out, "z"), &s))
		return s.Blocks
	}
	if b := blocks(ExtractOptions{}); b != 0 {
		t.Errorf("zeros took %d blocks, want a hole", b)
	}
	if b := blocks(ExtractOptions{NoHoles: true}); b < 512 {
		t.Errorf("NoHoles: %d blocks, want the zeros written", b)
	}
}

// TestExtractUndoImmutable: an immutable file in the way is an error
// unless UndoImmutable.
func TestExtractUndoImmutable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chattr +i needs root")
	}
	if _, err := exec.LookPath("chattr"); err != nil {
		t.Skip("chattr not installed")
	}
	src := t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "f"), []byte("new"), 0o644))
	arch := encodeDir(t, src)
	out := t.TempDir()
	p := filepath.Join(out, "f")
	must(t, os.WriteFile(p, []byte("old"), 0o644))
	must(t, os.WriteFile(filepath.Join(out, "gone"), []byte("old"), 0o644))
	if b, err := exec.Command("chattr", "+i", p, filepath.Join(out, "gone")).CombinedOutput(); err != nil {
		t.Skipf("chattr +i unsupported on the temporary directory's file system: %s", b)
	}
	t.Cleanup(func() { exec.Command("chattr", "-R", "-i", out).Run() })
	err := Extract(context.Background(), NewDecoder(bytes.NewReader(arch)), out, ExtractOptions{Delete: true})
	if err == nil || !errors.Is(err, syscall.EPERM) && !strings.Contains(err.Error(), "immutable") {
		t.Fatalf("replacing an immutable file: %v", err)
	}
	must(t, Extract(context.Background(), NewDecoder(bytes.NewReader(arch)), out, ExtractOptions{Delete: true, UndoImmutable: true}))
	if got := encodeDir(t, out); !bytes.Equal(got, arch) {
		t.Fatal("tree differs after UndoImmutable")
	}
}
