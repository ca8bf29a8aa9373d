package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	"github.com/camount/camount/catar"
)

// TestFATAttrsThroughMount: a mount answers FAT_IOCTL_GET_ATTRIBUTES with
// the FAT attributes an archive stores, and casync make and camount make
// of the mounted tree (a FUSE file system, where both ask that ioctl)
// store them again: the archives equal the original. The host kernel has
// no vfat, so the archive's attributes are set by patching an ENTRY.
func TestFATAttrsThroughMount(t *testing.T) {
	needCmd(t, "casync")
	needFUSE(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.Mkdir(src, 0o755)
	os.WriteFile(filepath.Join(src, "hidden"), []byte("h"), 0o644)
	os.WriteFile(filepath.Join(src, "plain"), []byte("p"), 0o644)
	arc := filepath.Join(dir, "t.catar")
	camount(t, "make", "--with=unix", "--with=fat-attrs", arc, src)
	b, err := os.ReadFile(arc)
	if err != nil {
		t.Fatal(err)
	}
	a, err := catar.Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	en, err := a.LookupPath("hidden")
	if err != nil {
		t.Fatal(err)
	}
	// ENTRY: header (16), feature flags (8), mode (8), flags (8).
	flags := uint64(catar.WithFlagHidden | catar.WithFlagSystem)
	for i := 0; i < 8; i++ {
		b[en.Offset+32+int64(i)] = byte(flags >> (8 * i))
	}
	os.WriteFile(arc, b, 0o644)

	mnt := filepath.Join(dir, "mnt")
	startMount(t, nil, arc, mnt)
	get := func(p string) (uint32, syscall.Errno) {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var v uint32
		_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), 0x80047210, uintptr(unsafe.Pointer(&v)))
		return v, errno
	}
	if v, errno := get(filepath.Join(mnt, "hidden")); errno != 0 || v != 0x02|0x04 {
		t.Errorf("FAT_IOCTL_GET_ATTRIBUTES on the mount: %#x %v, want 0x6", v, errno)
	}
	if v, errno := get(filepath.Join(mnt, "plain")); errno != 0 || v != 0 {
		t.Errorf("FAT_IOCTL_GET_ATTRIBUTES of a plain file: %#x %v", v, errno)
	}
	for _, tool := range []string{"casync", camountBin} {
		out := filepath.Join(dir, filepath.Base(tool)+".catar")
		runCmd(t, tool, "make", "--with=unix", "--with=fat-attrs", out, mnt)
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, b) {
			t.Errorf("%s make of the mount: the archive differs from the one mounted", filepath.Base(tool))
		}
	}
}
