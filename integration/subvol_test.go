package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestBtrfsSubvolumes: on btrfs, make stores which directories are
// subvolumes and which are read-only exactly as casync make does, and
// extract onto btrfs recreates them (subvolumes, read-only ones read-only)
// as casync extract does.
func TestBtrfsSubvolumes(t *testing.T) {
	needRoot(t)
	needCmd(t, "casync", "mkfs.btrfs", "btrfs", "mount", "umount")
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	runCmd(t, "truncate", "-s", "120M", img)
	runCmd(t, "mkfs.btrfs", "-q", img)
	m := filepath.Join(dir, "m")
	os.Mkdir(m, 0o755)
	if _, err := tryCmd("mount", "-o", "loop", img, m); err != nil {
		t.Skipf("cannot mount btrfs here: %v", err)
	}
	t.Cleanup(func() { runCmd(t, "umount", m) })
	src := filepath.Join(m, "src")
	os.Mkdir(src, 0o755)
	runCmd(t, "btrfs", "-q", "subvolume", "create", filepath.Join(src, "sv"))
	os.WriteFile(filepath.Join(src, "sv", "f"), []byte("in a subvolume\n"), 0o644)
	os.Mkdir(filepath.Join(src, "sv", "d"), 0o755)
	runCmd(t, "btrfs", "-q", "subvolume", "snapshot", "-r", filepath.Join(src, "sv"), filepath.Join(src, "ro"))
	os.Mkdir(filepath.Join(src, "plain"), 0o755)
	os.WriteFile(filepath.Join(src, "plain", "x"), []byte("x"), 0o644)

	for _, flags := range [][]string{nil, {"--without=subvolume-ro"}, {"--without=subvolume"}} {
		c, x := filepath.Join(dir, "c.catar"), filepath.Join(dir, "x.catar")
		runCmd(t, "casync", append(append([]string{"make"}, flags...), c, src)...)
		camount(t, append(append([]string{"make"}, flags...), x, src)...)
		cb, _ := os.ReadFile(c)
		xb, _ := os.ReadFile(x)
		if !bytes.Equal(cb, xb) {
			t.Errorf("make %q on btrfs: archive differs from casync's", flags)
		}
	}
	arc := filepath.Join(dir, "s.catar")
	runCmd(t, "casync", "make", arc, src)
	xc, xm := filepath.Join(m, "xc"), filepath.Join(m, "xm")
	runCmd(t, "casync", "extract", arc, xc)
	camount(t, "extract", arc, xm)
	describe := func(root string) string {
		var b strings.Builder
		for _, d := range []string{"sv", "ro", "plain", "sv/d"} {
			p := filepath.Join(root, d)
			var st os.FileInfo
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			ino := st.Sys().(*syscall.Stat_t)
			ro, _ := tryCmd("btrfs", "property", "get", p, "ro")
			b.WriteString(d + " subvolume=" + boolStr(ino.Ino == 256) + " " + strings.TrimSpace(ro) + "\n")
		}
		return b.String()
	}
	want, got := describe(xc), describe(xm)
	if want != got || !strings.Contains(got, "ro subvolume=true ro=true") {
		t.Errorf("extract onto btrfs:\ncasync:\n%s\ncamount:\n%s", want, got)
	}
	// Extracting onto a file system without subvolumes makes directories.
	camount(t, "extract", arc, filepath.Join(dir, "plain-out"))
	if b, err := os.ReadFile(filepath.Join(dir, "plain-out", "ro", "f")); err != nil || string(b) != "in a subvolume\n" {
		t.Errorf("extract onto a non-btrfs directory: %q %v", b, err)
	}
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
