package vfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// TestTreeDirHandles: directory handles from OPENDIR, as a kernel without
// no_opendir support uses them (the tree mounted without noOpendir): a
// big directory read in small parts on two handles at once, rewound and
// sought to every offset it handed out, lists every entry once, in order;
// files listed by READDIRPLUS without attributes stat exactly.
func TestTreeDirHandles(t *testing.T) {
	needFUSE(t)
	tree := t.TempDir()
	big := filepath.Join(tree, "big")
	os.MkdirAll(filepath.Join(tree, "empty"), 0o755)
	os.MkdirAll(big, 0o755)
	want := []string{".", ".."}
	for i := 0; i < 700; i++ {
		name := fmt.Sprintf("%03d-%0*d", i, 10+i%60, i)
		if i%9 == 0 {
			os.Mkdir(filepath.Join(big, name), 0o755)
		} else {
			os.WriteFile(filepath.Join(big, name), bytes.Repeat([]byte{'x'}, i), 0o600)
		}
		want = append(want, name)
	}
	buf := encodeDir(t, tree)
	src := newMemSource(buf)
	arc := openArchive(t, src)
	dir := t.TempDir()
	sec := time.Second
	srv, err := gofs.Mount(dir, NewTree(arc, src, TreeOptions{}), &gofs.Options{EntryTimeout: &sec, AttrTimeout: &sec, NullPermissions: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			exec.Command("fusermount3", "-uz", dir).Run()
		}
	})
	type dirent struct {
		name string
		off  int64
	}
	parse := func(b []byte) (out []dirent) {
		for len(b) > 0 {
			reclen := int(binary.LittleEndian.Uint16(b[16:]))
			name := b[19:reclen]
			name = name[:bytes.IndexByte(name, 0)]
			out = append(out, dirent{string(name), int64(binary.LittleEndian.Uint64(b[8:]))})
			b = b[reclen:]
		}
		return out
	}
	names := func(l []dirent) (s []string) {
		for _, e := range l {
			s = append(s, e.name)
		}
		return s
	}
	open := func(rel string) int {
		fd, err := syscall.Open(filepath.Join(dir, rel), syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	// one getdents call of n bytes
	read := func(fd, n int) []dirent {
		b := make([]byte, n)
		k, err := syscall.ReadDirent(fd, b)
		if err != nil {
			t.Fatal(err)
		}
		return parse(b[:k])
	}
	readAll := func(fd, n int) (all []dirent) {
		for {
			l := read(fd, n)
			if len(l) == 0 {
				return all
			}
			all = append(all, l...)
		}
	}
	seek := func(fd int, off int64) {
		if _, err := syscall.Seek(fd, off, 0); err != nil {
			t.Fatalf("seekdir to %d: %v", off, err)
		}
	}

	// Two handles read in small parts, interleaved.
	fa, fb := open("big"), open("big")
	defer syscall.Close(fa)
	defer syscall.Close(fb)
	var la, lb []dirent
	for {
		a, b := read(fa, 400), read(fb, 700)
		la, lb = append(la, a...), append(lb, b...)
		if len(a) == 0 && len(b) == 0 {
			break
		}
	}
	if !slices.Equal(names(la), want) || !slices.Equal(names(lb), want) {
		t.Fatalf("interleaved handles listed %d and %d entries, want %d", len(la), len(lb), len(want))
	}
	// Seek on one handle to offsets it handed out, backwards and forwards.
	for _, k := range []int{len(la) - 1, 0, 1, 2, 350, 17, len(la) - 2, 600} {
		seek(fa, la[k].off)
		if got := readAll(fa, 500); !slices.Equal(names(got), want[k+1:]) {
			t.Fatalf("after seekdir past entry %d (%q): %d entries, want %d", k, la[k].name, len(got), len(want)-k-1)
		}
	}
	// Seek part way through a read, then on.
	seek(fa, la[100].off)
	part := read(fa, 300)
	seek(fa, la[50].off)
	if got := readAll(fa, 300); len(part) == 0 || !slices.Equal(names(got), want[51:]) {
		t.Fatalf("seekdir back part way through: %d entries, want %d", len(got), len(want)-51)
	}
	// Files listed without attributes stat exactly.
	for _, i := range []int{1, 2, 350, 699} {
		name := want[i+2]
		var a, b syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(big, name), &a); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Lstat(filepath.Join(dir, "big", name), &b); err != nil {
			t.Fatal(err)
		}
		if a.Mode != b.Mode || a.Size != b.Size || a.Mtim != b.Mtim {
			t.Fatalf("%s: mode %o size %d mtime %v, want %o %d %v", name, b.Mode, b.Size, b.Mtim, a.Mode, a.Size, a.Mtim)
		}
	}
	// An empty directory: . and .., nothing after them.
	fe := open("empty")
	defer syscall.Close(fe)
	e := readAll(fe, 4096)
	if !slices.Equal(names(e), []string{".", ".."}) {
		t.Fatalf("empty: %v", names(e))
	}
	seek(fe, e[1].off)
	if got := readAll(fe, 4096); len(got) != 0 {
		t.Fatalf("empty: after seekdir past ..: %v", names(got))
	}
}
