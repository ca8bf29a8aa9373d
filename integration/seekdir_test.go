package integration

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// dirent is one linux_dirent64 record: its name and d_off (the offset
// that seekdir to just after it takes).
type dirent struct {
	name string
	off  int64
}

// getdentsAll reads fd's directory from its current position to the end
// with getdents64 calls of bufSize bytes.
func getdentsAll(t *testing.T, fd, bufSize int) []dirent {
	t.Helper()
	var out []dirent
	buf := make([]byte, bufSize)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatalf("getdents: %v", err)
		}
		if n == 0 {
			return out
		}
		out = append(out, parseDirents(buf[:n])...)
	}
}

// parseDirents parses the linux_dirent64 records getdents64 returned.
func parseDirents(b []byte) (out []dirent) {
	for len(b) > 0 {
		off := int64(binary.LittleEndian.Uint64(b[8:]))
		reclen := int(binary.LittleEndian.Uint16(b[16:]))
		name := b[19:reclen]
		if i := slices.Index(name, 0); i >= 0 {
			name = name[:i]
		}
		out = append(out, dirent{string(name), off})
		b = b[reclen:]
	}
	return out
}

// TestMountSeekdir: seekdir to any offset a listing handed out (d_off)
// resumes the listing just after that entry, whether the kernel asks
// camount (a directory not yet listed whole) or serves it from its cache;
// an empty directory lists . and .. only.
func TestMountSeekdir(t *testing.T) {
	needFUSE(t)
	needCmd(t, "casync")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for _, d := range []string{"a", "b", "empty"} {
		if err := os.MkdirAll(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"a", "b"} {
		for i := 0; i < 400; i++ {
			name := filepath.Join(src, d, fmt.Sprintf("%03d-%0*d", i, 20+i%50, i))
			var err error
			if i%5 == 0 {
				err = os.Mkdir(name, 0o755)
			} else {
				err = os.WriteFile(name, []byte{byte(i)}, 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	store, index := casyncMakeTree(t, dir, src)
	mnt := filepath.Join(dir, "mnt")
	startMount(t, nil, "--store="+store, index, mnt)

	open := func(rel string) int {
		t.Helper()
		fd, err := unix.Open(filepath.Join(mnt, rel), unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	seek := func(fd int, off int64) {
		t.Helper()
		if _, err := unix.Seek(fd, off, 0); err != nil {
			t.Fatalf("seekdir to %d: %v", off, err)
		}
	}
	names := func(l []dirent) []string {
		var s []string
		for _, e := range l {
			s = append(s, e.name)
		}
		return s
	}

	// b: while the kernel has not yet cached the whole listing, a new
	// handle sought to each offset the listing gave so far asks camount
	// for the rest of the listing from there.
	want := []string{".", ".."}
	ents, err := os.ReadDir(filepath.Join(src, "b"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		want = append(want, e.Name()) // casync orders entries by name, as ReadDir does
	}
	fd := open("b")
	buf := make([]byte, 512)
	var head []dirent
	for round := 0; ; round++ {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		head = append(head, parseDirents(buf[:n])...)
		k := len(head) - 1
		if round%3 == 1 {
			k = len(head) / 2
		}
		fd2, err := unix.Open(filepath.Join(mnt, "b"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		seek(fd2, head[k].off)
		n2, err := unix.Getdents(fd2, make([]byte, 512))
		unix.Close(fd2)
		if err != nil {
			t.Fatal(err)
		}
		if n2 == 0 && k+1 < len(want) {
			t.Fatalf("b: seekdir past entry %d (%q, d_off %d) on a new handle lists nothing, want %q next", k, head[k].name, head[k].off, want[k+1])
		}
		fd3, err := unix.Open(filepath.Join(mnt, "b"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		seek(fd3, head[k].off)
		got := getdentsAll(t, fd3, 512)
		unix.Close(fd3)
		if !slices.Equal(names(got), want[k+1:]) {
			t.Fatalf("b: after seekdir past entry %d (%q, d_off %d) on a new handle: %d entries (first %v), want %d (first %v)", k, head[k].name, head[k].off, len(got), names(got[:min(len(got), 3)]), len(want)-k-1, want[k+1:min(len(want), k+4)])
		}
	}
	if !slices.Equal(names(head), want) {
		t.Fatalf("b: listed %d entries, want %d", len(head), len(want))
	}

	// a: the same after the kernel cached the whole listing.
	fd = open("a")
	all := getdentsAll(t, fd, 4096)
	if len(all) != 402 {
		t.Fatalf("a: %d entries, want 402", len(all))
	}
	for _, k := range []int{401, 0, 199, 2, 400} {
		seek(fd, all[k].off)
		got := getdentsAll(t, fd, 1000)
		if !slices.Equal(names(got), names(all[k+1:])) {
			t.Fatalf("a: after seekdir past entry %d (%q): %d entries, want %d", k, all[k].name, len(got), len(all)-k-1)
		}
	}

	// empty: . and .. only, and nothing after them.
	fd = open("empty")
	e := getdentsAll(t, fd, 4096)
	if !slices.Equal(names(e), []string{".", ".."}) {
		t.Fatalf("empty: %v", names(e))
	}
	seek(fd, e[1].off)
	if got := getdentsAll(t, fd, 4096); len(got) != 0 {
		t.Fatalf("empty: after seekdir past ..: %v", names(got))
	}
	seek(fd, e[0].off)
	if got := getdentsAll(t, fd, 4096); !slices.Equal(names(got), []string{".."}) {
		t.Fatalf("empty: after seekdir past .: %v", names(got))
	}
}
