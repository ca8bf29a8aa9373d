package integration

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeBlockDeviceFSSize: camount make of a loop device larger than
// the file system on it writes the index casync make writes: only the
// file system for the kinds casync probes (ext2/3/4, FAT, squashfs,
// Android boot images), the whole device for the others (erofs; btrfs and
// xfs with CAMOUNT_TEST_LONG, their minimum sizes make them slow). A
// regular file holding a file system is serialised whole, as by casync.
func TestMakeBlockDeviceFSSize(t *testing.T) {
	needRoot(t)
	needCmd(t, "casync", "losetup")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "r"), randomBytes(150<<10, 3), 0o644)
	os.WriteFile(filepath.Join(src, "h"), []byte("hello\n"), 0o644)
	store := filepath.Join(dir, "s.castr")

	type fsCase struct {
		name, device string // device: size of the loop file
		mkfs         []string
		probed       bool
		long         bool
	}
	cases := []fsCase{
		{"ext2", "40M", []string{"mkfs.ext2", "-q", "-F", "@FS@", "12M"}, true, false},
		{"ext3", "40M", []string{"mkfs.ext3", "-q", "-F", "@FS@", "16M"}, true, false},
		{"ext4", "40M", []string{"mkfs.ext4", "-q", "-F", "@FS@", "20M"}, true, false},
		{"vfat", "40M", []string{"mkfs.vfat", "-C", "@FS@", "12000"}, true, false},
		{"squashfs", "8M", []string{"mksquashfs", src, "@FS@", "-quiet"}, true, false},
		{"erofs", "8M", []string{"mkfs.erofs", "@FS@", src}, false, false},
		{"btrfs", "200M", []string{"sh", "-c", "truncate -s 120M @FS@ && mkfs.btrfs -q @FS@"}, false, true},
		{"xfs", "400M", []string{"sh", "-c", "truncate -s 300M @FS@ && mkfs.xfs -q @FS@"}, false, true},
	}
	long := os.Getenv("CAMOUNT_TEST_LONG") != ""
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.long && !long {
				t.Skip("slow (large minimum file system size): CAMOUNT_TEST_LONG=1")
			}
			if _, err := exec.LookPath(c.mkfs[0]); err != nil {
				t.Skipf("%s not installed", c.mkfs[0])
			}
			fs := filepath.Join(dir, "fs."+c.name)
			args := make([]string, len(c.mkfs))
			for i, a := range c.mkfs {
				args[i] = strings.ReplaceAll(a, "@FS@", fs)
			}
			runCmd(t, args[0], args[1:]...)
			fsBytes, err := os.ReadFile(fs)
			if err != nil {
				t.Fatal(err)
			}
			img := filepath.Join(dir, "img."+c.name)
			runCmd(t, "truncate", "-s", c.device, img)
			f, _ := os.OpenFile(img, os.O_WRONLY, 0)
			f.WriteAt(fsBytes, 0)
			f.Close()
			os.Remove(fs)
			compareDeviceIndex(t, dir, store, img, c.name, c.probed, int64(len(fsBytes)))
			os.Remove(img)
		})
	}

	// An Android boot image (no mkbootimg here: the header by hand).
	t.Run("android-bootimg", func(t *testing.T) {
		img := filepath.Join(dir, "img.boot")
		h := make([]byte, 4096)
		copy(h, "ANDROID!")
		le := binary.LittleEndian
		le.PutUint32(h[8:], 5000)  // kernel
		le.PutUint32(h[16:], 3000) // initrd
		le.PutUint32(h[36:], 2048) // page size
		b := append(h, bytes.Repeat([]byte{0x5a}, 20000)...)
		os.WriteFile(img, b, 0o644)
		runCmd(t, "truncate", "-s", "4M", img)
		compareDeviceIndex(t, dir, store, img, "boot", true, 2048+6144+4096)
	})
}

// compareDeviceIndex makes img (through a loop device) with casync and
// camount and compares the indexes; probed: the index covers want bytes.
func compareDeviceIndex(t *testing.T, dir, store, img, name string, probed bool, want int64) {
	t.Helper()
	dev := strings.TrimSpace(runCmd(t, "losetup", "-f", "--show", img))
	defer exec.Command("losetup", "-d", dev).Run()
	ci, mi := filepath.Join(dir, "c."+name+".caibx"), filepath.Join(dir, "m."+name+".caibx")
	runCmd(t, "casync", "make", "--store="+store, ci, dev)
	camount(t, "make", "--store="+store, mi, dev)
	cb, _ := os.ReadFile(ci)
	mb, _ := os.ReadFile(mi)
	if !bytes.Equal(cb, mb) || len(cb) == 0 {
		t.Errorf("%s on %s: camount's index differs from casync's", name, dev)
	}
	size := int64(readIndex(t, mi).Size())
	st, _ := os.Stat(img)
	if probed && size != want {
		t.Errorf("%s: index covers %d bytes, want the file system's %d (device %d)", name, size, want, st.Size())
	}
	if !probed && size != st.Size() {
		t.Errorf("%s: index covers %d bytes, want the whole device's %d", name, size, st.Size())
	}
	if probed && name == "ext2" {
		// The same bytes in a regular file: not probed, by either.
		runCmd(t, "casync", "make", "--store="+store, ci, img)
		camount(t, "make", "--store="+store, mi, img)
		cb, _ = os.ReadFile(ci)
		mb, _ = os.ReadFile(mi)
		if !bytes.Equal(cb, mb) || int64(readIndex(t, mi).Size()) != st.Size() {
			t.Errorf("regular file holding ext2: index differs from casync's or is not whole")
		}
	}
}
