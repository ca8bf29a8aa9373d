package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/camount/camount/catar"
	"github.com/pmorjan/kmod"
	"golang.org/x/sys/unix"
)

// casync parity checks that need a kernel the host lacks, run in the
// TestVMNBD guest (one boot): FAT attributes on a real vfat, and mkdev
// choosing its /dev/nbdN.
//
// FAT: the host makes empty vfat images (mkfs.vfat); the guest mounts one
// over a loop device, creates files and sets their attributes with
// FAT_IOCTL_SET_ATTRIBUTES, then
//   - camount make (default features, and --with=fat-attrs into a store)
//     records exactly those attributes (decoded from the archive), and the
//     archive and index bytes equal casync's made there from the same tree;
//   - camount extract onto a fresh vfat restores them
//     (FAT_IOCTL_GET_ATTRIBUTES), as casync extract does;
//   - camount mount of the index answers FAT_IOCTL_GET_ATTRIBUTES with them.
//
// casync runs in the guest with the host's shared libraries copied in.

// FAT attribute bits (linux/msdos_fs.h).
const (
	fatRO     = 0x01
	fatHidden = 0x02
	fatSys    = 0x04
	fatDir    = 0x10
	fatArch   = 0x20
	fatAll    = fatRO | fatHidden | fatSys | fatArch

	fatIoctlGet = 0x80047210
	fatIoctlSet = 0x40047211
)

var vmFATFiles = []struct {
	name string
	attr uint32
}{
	{"plain.txt", 0},
	{"hidden.txt", fatHidden},
	{"system.bin", fatSys},
	{"archive.txt", fatArch},
	{"readonly.txt", fatRO},
	{"all.txt", fatHidden | fatSys | fatArch | fatRO},
	{"d", fatHidden},
	{"d/inner.txt", fatHidden | fatArch},
	{"d/Long Name With Spaces.dat", fatSys | fatArch},
}

// vmGuestParityModules are loaded by the guest for these checks (and
// copied into the initramfs by populate).
var vmGuestParityModules = []string{"vfat", "nls_cp437", "nls_ascii", "nls_utf8"}

// vmPrepareParity puts what the guest's parity checks need into the
// initramfs root and returns the checks the guest must report.
func vmPrepareParity(t *testing.T, root string) []string {
	t.Helper()
	want := []string{"mkdev-choose-device", "mkdev-device-busy", "mkdev-node-nbd", "mkdev-node-dev-name", "mkdev-plain-blob"}
	if _, err := exec.LookPath("mkfs.vfat"); err != nil {
		// Only the FAT checks need it: the rest of the VM test still runs.
		t.Log("no mkfs.vfat (dosfstools): the guest skips the FAT attribute checks")
		return want
	}
	for _, n := range []string{"fat-src", "fat-camount", "fat-casync"} {
		runCmd(t, "mkfs.vfat", "-C", filepath.Join(root, "vm", n+".img"), "2048")
	}
	// users for the archives' user-names feature, as on a real system
	os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc", "group"), []byte("root:x:0:\n"), 0o644)
	want = append(want, "fat-setup", "fat-make-flags", "fat-make-index-flags", "fat-extract", "fat-mount")
	if cs, err := exec.LookPath("casync"); err == nil {
		if err := copyWithLibs(t, cs, root, "bin/casync"); err != nil {
			os.Remove(filepath.Join(root, "bin", "casync"))
			t.Logf("casync cannot go into the guest (%v): the FAT checks run without comparing with casync", err)
			return want
		}
		want = append(want, "fat-make-casync", "fat-extract-casync")
	} else {
		t.Log("no casync on the host: the guest checks FAT attributes without comparing with casync")
	}
	return want
}

// copyWithLibs copies a dynamically linked program and the libraries ldd
// names (with the loader) into root.
func copyWithLibs(t *testing.T, prog, root, to string) error {
	t.Helper()
	out, err := exec.Command("ldd", prog).Output()
	if err != nil {
		return fmt.Errorf("ldd %s: %w", prog, err)
	}
	copyFile(t, prog, filepath.Join(root, to))
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "/") {
			if real, err := filepath.EvalSymlinks(f); err == nil {
				copyFile(t, real, filepath.Join(root, f))
			}
		}
	}
	return nil
}

// ---- guest side ----

func vmParityChecks(r *vmReport) {
	if k, err := kmod.New(); err == nil {
		for _, m := range vmGuestParityModules {
			if err := k.Load(m, "", 0); err != nil {
				fmt.Printf("VMTEST info: loading %s: %v\n", m, err)
			}
		}
	}
	if _, err := os.Stat("/vm/fat-src.img"); err == nil {
		vmFATChecks(r)
	} else {
		fmt.Println("VMTEST info: no vfat images (the host has no mkfs.vfat): FAT checks skipped")
	}
	vmMkdevDeviceChecks(r)
}

func fatGet(p string) (uint32, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var v uint32
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fatIoctlGet, uintptr(unsafe.Pointer(&v))); e != 0 {
		return 0, &os.PathError{Op: "FAT_IOCTL_GET_ATTRIBUTES", Path: p, Err: e}
	}
	return v, nil
}

func fatSet(p string, v uint32) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fatIoctlSet, uintptr(unsafe.Pointer(&v))); e != 0 {
		return &os.PathError{Op: "FAT_IOCTL_SET_ATTRIBUTES", Path: p, Err: e}
	}
	return nil
}

// vmLoopRW attaches a read-write loop device to file.
func vmLoopRW(file string) (string, error) {
	backing, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer ctl.Close()
	n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
	if err != nil {
		return "", fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
	}
	path := "/dev/loop" + strconv.Itoa(n)
	dev, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer dev.Close()
	// No autoclear: the device must outlive this open (the VM ends anyway).
	cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
	if err := unix.IoctlLoopConfigure(int(dev.Fd()), &cfg); err != nil {
		return "", fmt.Errorf("LOOP_CONFIGURE %s: %w", path, err)
	}
	return path, nil
}

// vmMountVFAT mounts a vfat image at dir.
func vmMountVFAT(img, dir string) error {
	dev, err := vmLoopRW(img)
	if err != nil {
		return err
	}
	os.MkdirAll(dir, 0o755)
	if err := syscall.Mount(dev, dir, "vfat", 0, ""); err != nil {
		return fmt.Errorf("mount -t vfat %s (%s) %s: %w", dev, img, dir, err)
	}
	return nil
}

func vmRun(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// fatCompare reads the attributes of every test file under dir and
// compares them (within mask) with what was set.
func fatCompare(dir string, mask uint32) error {
	var bad []string
	for _, f := range vmFATFiles {
		v, err := fatGet(filepath.Join(dir, f.name))
		if err != nil {
			return err
		}
		if v&mask != f.attr&mask {
			bad = append(bad, fmt.Sprintf("%s: %#x, want %#x", f.name, v&mask, f.attr&mask))
		}
	}
	if bad != nil {
		return fmt.Errorf("%s: %s", dir, strings.Join(bad, "; "))
	}
	return nil
}

func vmFATChecks(r *vmReport) {
	src := "/fat/src"
	if err := vmMountVFAT("/vm/fat-src.img", src); err != nil {
		r.fail("fat-setup", "%v", err)
		return
	}
	defer syscall.Unmount(src, 0)
	var err error
	for i, f := range vmFATFiles {
		p := filepath.Join(src, f.name)
		if f.name == "d" {
			err = os.Mkdir(p, 0o755)
		} else {
			err = os.WriteFile(p, bytes.Repeat([]byte(f.name+"\n"), 100*(i+1)), 0o644)
		}
		if err != nil {
			break
		}
	}
	// Attributes last, deepest first (a new file gets the archive bit).
	for i := len(vmFATFiles) - 1; i >= 0 && err == nil; i-- {
		f := vmFATFiles[i]
		attr := f.attr
		if f.name == "d" {
			attr |= fatDir
		}
		err = fatSet(filepath.Join(src, f.name), attr)
	}
	if err == nil {
		err = fatCompare(src, fatAll)
	}
	if !r.check("fat-setup", err, "%d files on vfat with their attributes set", len(vmFATFiles)) {
		return
	}
	_, haveCasync := exec.LookPath("casync")
	tools := []string{"camount"}
	if haveCasync == nil {
		tools = append(tools, "casync")
	}
	for _, tool := range tools {
		if err := vmRun(tool, "make", "/tmp/"+tool+".catar", src); err != nil {
			r.fail("fat-make-flags", "%v", err)
			return
		}
		if err := vmRun(tool, "make", "--with=fat-attrs", "--store=/tmp/"+tool+".castr", "/tmp/"+tool+".caidx", src); err != nil {
			r.fail("fat-make-index-flags", "%v", err)
			return
		}
	}
	// The attributes camount recorded, decoded.
	r.check("fat-make-flags", fatArchiveFlags("/tmp/camount.catar", "", true), "the archive holds each file's hidden, system, archive and read-only attribute")
	r.check("fat-make-index-flags", fatArchiveFlags("/tmp/camount.caidx", "/tmp/camount.castr", false), "the --with=fat-attrs index holds each file's hidden, system and archive attribute")
	if haveCasync == nil {
		var err error
		for _, f := range []string{".catar", ".caidx"} {
			a, _ := os.ReadFile("/tmp/camount" + f)
			b, _ := os.ReadFile("/tmp/casync" + f)
			if len(a) == 0 || !bytes.Equal(a, b) {
				err = fmt.Errorf("camount%s (%d bytes) differs from casync%s (%d bytes)", f, len(a), f, len(b))
				break
			}
		}
		r.check("fat-make-casync", err, "camount make's .catar and --with=fat-attrs .caidx equal casync's, byte for byte")
	}

	// Extract onto a fresh vfat: the attributes come back.
	for _, tool := range tools {
		name := "fat-extract"
		if tool == "casync" {
			name = "fat-extract-casync"
		}
		out := "/fat/" + tool
		if err := vmMountVFAT("/vm/fat-"+tool+".img", out); err != nil {
			r.fail(name, "%v", err)
			continue
		}
		err := vmRun(tool, "extract", "/tmp/"+tool+".catar", out)
		if err == nil {
			err = fatCompare(out, fatAll)
		}
		r.check(name, err, "%s extract onto vfat restores every attribute (FAT_IOCTL_GET_ATTRIBUTES)", tool)
		syscall.Unmount(out, 0)
	}

	// Through a mount of the index.
	mnt := "/fat/mnt"
	os.MkdirAll(mnt, 0o755)
	cmd := exec.Command("/bin/camount", "mount", "--store=/tmp/camount.castr", "/tmp/camount.caidx", mnt)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		r.fail("fat-mount", "%v", err)
		return
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(stdout.String(), "mounted") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	err = nil
	if !strings.Contains(stdout.String(), "mounted") {
		err = fmt.Errorf("camount mount not ready after 60 s: %s", stderr.String())
	} else {
		err = fatCompare(mnt, fatHidden|fatSys|fatArch)
	}
	r.check("fat-mount", err, "FAT_IOCTL_GET_ATTRIBUTES through camount mount gives the attributes")
	cmd.Process.Signal(syscall.SIGTERM)
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case <-waited:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
	}
}

// fatArchiveFlags checks the FAT attributes an archive (or an index with
// its store) records for the test files. withRO: the read-only attribute
// is recorded as a mode without write bits.
func fatArchiveFlags(path, store string, withRO bool) error {
	if store != "" {
		// An index: camount stat shows each path's FAT attributes.
		var bad []string
		for _, f := range vmFATFiles {
			out, err := exec.Command("/bin/camount", "stat", "--store="+store, path, f.name).CombinedOutput()
			if err != nil {
				return fmt.Errorf("camount stat %s %s: %v: %s", path, f.name, err, out)
			}
			got := fatStatAttrs(string(out))
			if want := fatAttrNames(f.attr & (fatHidden | fatSys | fatArch)); got != want {
				bad = append(bad, fmt.Sprintf("%s: FATAttr %q, want %q", f.name, got, want))
			}
		}
		if bad != nil {
			return errors.New(strings.Join(bad, "; "))
		}
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	a, err := catar.Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return err
	}
	var bad []string
	for _, f := range vmFATFiles {
		en, err := a.LookupPath(f.name)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", path, f.name, err)
		}
		got := uint32(catar.FatAttrsFromFlags(en.Flags))
		if withRO && en.Mode&0o222 == 0 {
			got |= fatRO
		}
		mask := uint32(fatHidden | fatSys | fatArch)
		if withRO {
			mask |= fatRO
		}
		if got != f.attr&mask {
			bad = append(bad, fmt.Sprintf("%s: %#x (flags %#x, mode %o), want %#x", f.name, got, en.Flags, en.Mode, f.attr&mask))
		}
	}
	if bad != nil {
		return fmt.Errorf("%s: %s", path, strings.Join(bad, "; "))
	}
	return nil
}

// fatStatAttrs returns the FATAttr line's value of casync-style stat output.
func fatStatAttrs(out string) string {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "FATAttr:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// fatAttrNames is how casync stat shows FAT attributes.
func fatAttrNames(a uint32) string {
	return string([]byte{
		map[bool]byte{true: 'h', false: '-'}[a&fatHidden != 0],
		map[bool]byte{true: 's', false: '-'}[a&fatSys != 0],
		map[bool]byte{true: 'a', false: '-'}[a&fatArch != 0],
	})
}

// vmStartMkdev starts camount mkdev and returns the device it prints (or
// its error output if it exits first) and a stop function.
func vmStartMkdev(args ...string) (string, func() error, error) {
	return vmStartMkdevArgs(append([]string{"--store=/vm/disk.castr", "/vm/disk.caibx"}, args...)...)
}

func vmStartMkdevArgs(args ...string) (string, func() error, error) {
	cmd := exec.Command("/bin/camount", append([]string{"mkdev"}, args...)...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	lines := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		done <- cmd.Wait()
	}()
	stop := func() error {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			return errors.New("camount mkdev still running 30 s after SIGTERM")
		}
	}
	select {
	case dev := <-lines:
		return dev, stop, nil
	case err := <-done:
		return "", nil, fmt.Errorf("camount mkdev exited: %v: %s", err, strings.TrimSpace(stderr.String()))
	case <-time.After(90 * time.Second):
		cmd.Process.Kill()
		return "", nil, errors.New("camount mkdev: no device after 90 s")
	}
}

func vmMkdevDeviceChecks(r *vmReport) {
	dev, stop, err := vmStartMkdev("--device=/dev/nbd3")
	if err == nil && dev != "/dev/nbd3" {
		err = fmt.Errorf("mkdev --device=/dev/nbd3 printed %q", dev)
	}
	if err == nil {
		_, err = fatHashDev("/dev/nbd3")
	}
	if !r.check("mkdev-choose-device", err, "--device=/dev/nbd3 serves /dev/nbd3") {
		if stop != nil {
			stop()
		}
	} else {
		// The same device again: busy, and said so.
		_, stop2, err := vmStartMkdev("--device=/dev/nbd3")
		if err == nil {
			stop2()
			err = errors.New("a second mkdev --device=/dev/nbd3 succeeded")
		} else if !strings.Contains(err.Error(), "/dev/nbd3") || !strings.Contains(err.Error(), "in use") {
			err = fmt.Errorf("want an error naming /dev/nbd3 in use, got: %v", err)
		} else {
			msg := err.Error()
			for _, l := range strings.Split(msg, "\n") {
				if strings.Contains(l, "in use") {
					msg = l
				}
			}
			r.ok("mkdev-device-busy", "%s", msg)
			err = nil
		}
		if err != nil {
			r.fail("mkdev-device-busy", "%v", err)
		}
		if err := stop(); err != nil {
			r.fail("mkdev-choose-device", "stopping: %v", err)
		}
	}
	// casync's NODE spelling: a /dev/nbdN to use.
	dev, stop, err = vmStartMkdev("/dev/nbd5")
	if err == nil {
		if dev != "/dev/nbd5" {
			err = fmt.Errorf("mkdev INDEX /dev/nbd5 printed %q", dev)
		}
		if serr := stop(); err == nil {
			err = serr
		}
	}
	r.check("mkdev-node-nbd", err, "NODE /dev/nbd5 serves /dev/nbd5")
	// A NODE elsewhere under /dev: a name for the device there.
	dev, stop, err = vmStartMkdev("/dev/camount-disk")
	if err == nil {
		target, lerr := os.Readlink("/dev/camount-disk")
		if lerr != nil || target != dev {
			err = fmt.Errorf("/dev/camount-disk -> %q (%v), want %s", target, lerr, dev)
		}
		if serr := stop(); err == nil {
			err = serr
		}
		if _, lerr := os.Lstat("/dev/camount-disk"); err == nil && lerr == nil {
			err = errors.New("/dev/camount-disk left after mkdev ended")
		}
	}
	r.check("mkdev-node-dev-name", err, "NODE /dev/camount-disk links to the device while it serves")

	// A plain image file (casync mkdev BLOB): served over NBD.
	var exp vmExpect
	b, err := os.ReadFile("/vm/expect.json")
	if err == nil {
		err = json.Unmarshal(b, &exp)
	}
	if err == nil {
		err = vmRun("/bin/camount", "extract", "--store=/vm/disk.castr", "/vm/disk.caibx", "/tmp/disk.img")
	}
	if err == nil {
		dev, stop, err = vmStartMkdevArgs("/tmp/disk.img")
		if err == nil {
			var sum string
			var n int64
			sum, n, err = vmHashFile(dev)
			if err == nil && (!strings.HasPrefix(dev, "/dev/nbd") || sum != exp.SHA256 || n != exp.Size) {
				err = fmt.Errorf("mkdev /tmp/disk.img: %s has %d bytes with sha256 %s, want an NBD device with %d bytes and %s", dev, n, sum, exp.Size, exp.SHA256)
			}
			if serr := stop(); err == nil {
				err = serr
			}
		}
	}
	os.Remove("/tmp/disk.img")
	r.check("mkdev-plain-blob", err, "mkdev of a plain image file serves it as %s", dev)
}

func fatHashDev(p string) (string, error) {
	sum, _, err := vmHashFile(p)
	return sum, err
}
