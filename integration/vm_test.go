package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pmorjan/kmod"
	"golang.org/x/sys/unix"
)

// The kernel NBD path (/dev/nbdN) cannot run on a host without the nbd
// driver, so TestVMNBD boots the Debian kernel under qemu (TCG) with an
// initramfs whose /init is this test binary, built static. Started as pid
// 1 it runs vmGuest instead of the tests: it loads nbd.ko (and ext4), runs
// the camount binary in the initramfs (`camount mkdev`, `camount rmdev`)
// and the blockdev kernel tests, reports each check on the serial console
// as "VMTEST ok|FAIL name: detail", and powers off through isa-debug-exit.

func init() {
	if os.Getpid() == 1 && os.Args[0] == "/init" {
		vmGuest()
	}
	if os.Getpid() == 1 && os.Args[0] == "/sbin/init" {
		vmStage2()
	}
}

// vmExpect is what the host tells the guest to check (/vm/expect.json).
type vmExpect struct {
	Size       int64             `json:"size"`
	SHA256     string            `json:"sha256"`
	PartOffset int64             `json:"part_offset"`
	Files      map[string]string `json:"files"`
	BootFiles  map[string]string `json:"boot_files"` // of the disk the guest boots from
	Long       bool              `json:"long"`
}

// TestVMNBD boots a VM and checks /dev/nbdN made by camount mkdev: the
// device is /dev/nbdN, read-only, its bytes equal the image, the kernel
// sees the partition, the ext4 partition mounts read-only with the right
// files, writes fail, and rmdev and SIGTERM detach it (netlink and ioctl).
// Then the guest boots from a disk image served lazily by 'camount nbd' on
// the host as a read-only virtio disk: it mounts the disk's ext4 partition
// as its root and runs its /sbin/init from there.
// With CAMOUNT_TEST_LONG (make test-long) the guest also runs mkdev with
// four connections.
func TestVMNBD(t *testing.T) {
	vm := newVMEnv(t)
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o644)
	// unread.bin is never read by the guest's boot: the NBD server must not
	// fetch it.
	unread := filepath.Join(dir, "unread")
	os.WriteFile(unread, randomBytes(16<<20, 99), 0o644)
	boot := makeDiskImage(t, mkdirT(t, dir, "boot"), 48, map[string]string{
		"sbin/init": vm.initBin, "proc/.keep": empty, "sys/.keep": empty, "dev/.keep": empty,
		"unread.bin": unread,
	})
	// A smaller image (in the initramfs) for camount mkdev in the guest.
	d := makeDiskImage(t, mkdirT(t, dir, "small"), 16, nil)
	exp := vmExpect{Size: d.size, SHA256: d.sha256(t), PartOffset: d.partOffset, Files: d.files,
		BootFiles: boot.files, Long: os.Getenv("CAMOUNT_TEST_LONG") != ""}
	root := filepath.Join(dir, "root")
	vm.populate(t, root)
	parityChecks := vmPrepareParity(t, root) // vm_parity_test.go
	copyTree(t, d.store, filepath.Join(root, "vm", "disk.castr"))
	copyFile(t, d.caibx, filepath.Join(root, "vm", "disk.caibx"))
	b, _ := json.Marshal(exp)
	os.WriteFile(filepath.Join(root, "vm", "expect.json"), b, 0o644)
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := writeCpio(initrd, root); err != nil {
		t.Fatal(err)
	}
	sock, stopNBD := startNBDServer(t, dir, boot)
	out := vm.boot(t, initrd, vmGuestTimeout+90*time.Second,
		"-drive", "file=nbd+unix:///disk?socket="+sock+",format=raw,if=virtio,readonly=on")
	// The boot fetched only what it read: not unread.bin.
	fetched := stopNBD()
	total := int64(len(storeChunks(t, boot.store)))
	t.Logf("booting from camount nbd fetched %d of the image's %d stored chunks", fetched, total)
	if fetched <= 0 || fetched > total*3/5 {
		t.Errorf("booting from camount nbd fetched %d of %d chunks; want some, and not the 16 MiB file it never read", fetched, total)
	}
	want := []string{
		"blockdev-kernel-tests", "mkdev-device", "mkdev-ro", "mkdev-size", "mkdev-bytes",
		"mkdev-partition", "mkdev-write-refused", "mkdev-ext4", "rmdev", "mkdev-exit-after-rmdev",
		"mkdev-ioctl-device", "mkdev-ioctl-bytes", "mkdev-ioctl-sigterm",
		"mkdev-kill9-new-read", "mkdev-kill9-reader", "mkdev-kill9-cache-verify", "mkdev-kill9-restart-bytes", "mkdev-kill9-cache-after-restart",
		"mkdev-loop-device", "mkdev-loop-bytes", "mkdev-loop-sigterm",
		"nbd-drive-ro", "boot-from-nbd", "boot-from-nbd-files",
	}
	if exp.Long {
		want = append(want, "mkdev-multiconn-device", "mkdev-multiconn-bytes", "mkdev-multiconn-sigterm")
	}
	want = append(want, parityChecks...)
	checkVMReport(t, out, want)
}

// startNBDServer runs 'camount nbd' (no prefetching) on a unix socket for
// the disk image (export "disk") and returns the socket path and a stop
// function returning how many chunks the server fetched.
func startNBDServer(t *testing.T, dir string, d *diskImage) (string, func() int64) {
	t.Helper()
	sock := filepath.Join(dir, "nbd.sock")
	stats := filepath.Join(dir, "nbd-stats.json")
	cmd := exec.Command(camountBin, "nbd", "--listen=unix://"+sock, "--name=disk", "--prefetch=none",
		"--stats-json="+stats, "--store="+d.store, d.caibx)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	uri := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			uri <- sc.Text()
		}
		io.Copy(io.Discard, stdout)
		done <- cmd.Wait()
	}()
	var waitErr error
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case waitErr = <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			waitErr = fmt.Errorf("did not exit 10 s after SIGTERM (%v)", <-done)
		}
	}
	t.Cleanup(stop)
	select {
	case u := <-uri:
		t.Logf("camount nbd serves %s", u)
	case err := <-done:
		t.Fatalf("camount nbd exited: %v\n%s", err, stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("camount nbd printed no URI within 30 s\n%s", stderr)
	}
	return sock, func() int64 {
		stop()
		if waitErr != nil {
			t.Errorf("camount nbd: %v\n%s", waitErr, stderr)
		}
		var st struct {
			Fetched int64 `json:"fetched_chunks"`
		}
		b, err := os.ReadFile(stats)
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		if err != nil {
			t.Errorf("camount nbd --stats-json: %v", err)
			return -1
		}
		return st.Fetched
	}
}

// vmEnv is what a VM test needs from the host.
type vmEnv struct {
	kver, kernel, modDir string
	camount, initBin     string
	blockdevTest         string
}

func newVMEnv(t *testing.T) *vmEnv {
	t.Helper()
	needCmd(t, "qemu-system-x86_64", "depmod")
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Strings(kernels)
	var vm *vmEnv
	for i := len(kernels) - 1; i >= 0; i-- {
		kver := strings.TrimPrefix(filepath.Base(kernels[i]), "vmlinuz-")
		mod := filepath.Join("/lib/modules", kver)
		if _, err := os.Stat(filepath.Join(mod, "kernel/drivers/block/nbd.ko")); err == nil {
			vm = &vmEnv{kver: kver, kernel: kernels[i], modDir: mod}
			break
		}
	}
	if vm == nil {
		t.Skip("no /boot/vmlinuz-* with an uncompressed nbd.ko in /lib/modules (install linux-image-amd64)")
	}
	if f, err := os.Open(vm.kernel); err != nil {
		t.Skipf("cannot read the kernel: %v", err)
	} else {
		f.Close()
	}
	bin := t.TempDir()
	vm.camount = filepath.Join(bin, "camount")
	vm.initBin = filepath.Join(bin, "init")
	vm.blockdevTest = filepath.Join(bin, "blockdev.test")
	for _, args := range [][]string{
		{"build", "-o", vm.camount, "../cmd/camount"},
		{"test", "-c", "-o", vm.initBin, "."},
		{"test", "-c", "-o", vm.blockdevTest, "../blockdev"},
	} {
		cmd := exec.Command("go", args...)
		// Static binaries for the guest's initramfs; GOFLAGS (-race, say)
		// may ask for what a static build cannot have.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return vm
}

// guestModules are the modules the guest loads (with their dependencies).
var guestModules = append([]string{"nbd", "ext4", "crc32c_generic", "virtio_pci", "virtio_blk", "loop", "fuse"}, vmGuestParityModules...)

// populate fills root with the initramfs contents: the binaries, the
// modules and what depmod makes of them.
func (vm *vmEnv) populate(t *testing.T, root string) {
	t.Helper()
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "mnt", "vm", "etc"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	copyFile(t, vm.initBin, filepath.Join(root, "init"))
	copyFile(t, vm.camount, filepath.Join(root, "bin", "camount"))
	copyFile(t, vm.blockdevTest, filepath.Join(root, "bin", "blockdev.test"))
	deps := map[string]bool{}
	depFile, err := os.ReadFile(filepath.Join(vm.modDir, "modules.dep"))
	if err != nil {
		t.Skipf("no modules.dep for %s: %v", vm.kver, err)
	}
	depOf := map[string][]string{}
	for _, l := range strings.Split(string(depFile), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		m := strings.TrimSuffix(f[0], ":")
		depOf[strings.TrimSuffix(filepath.Base(m), ".ko")] = append([]string{m}, f[1:]...)
	}
	for _, m := range guestModules {
		paths, ok := depOf[m]
		if !ok {
			t.Skipf("kernel %s has no module %s", vm.kver, m)
		}
		for _, p := range paths {
			deps[p] = true
		}
	}
	modRoot := filepath.Join(root, "lib", "modules", vm.kver)
	for p := range deps {
		copyFile(t, filepath.Join(vm.modDir, p), filepath.Join(modRoot, p))
	}
	for _, f := range []string{"modules.builtin", "modules.order", "modules.builtin.modinfo"} {
		if _, err := os.Stat(filepath.Join(vm.modDir, f)); err == nil {
			copyFile(t, filepath.Join(vm.modDir, f), filepath.Join(modRoot, f))
		}
	}
	runCmd(t, "depmod", "-b", root, vm.kver)
	// go-fuse mounts through fusermount3 (with the libraries it links).
	if fm, err := exec.LookPath("fusermount3"); err == nil {
		copyFile(t, fm, filepath.Join(root, "bin", "fusermount3"))
		out, _ := exec.Command("ldd", fm).Output()
		for _, f := range strings.Fields(string(out)) {
			if strings.HasPrefix(f, "/") {
				if real, err := filepath.EvalSymlinks(f); err == nil {
					copyFile(t, real, filepath.Join(root, f))
				}
			}
		}
		os.Symlink("/proc/self/mounts", filepath.Join(root, "etc", "mtab"))
	}
}

// boot runs the VM and returns its serial console output.
func (vm *vmEnv) boot(t *testing.T, initrd string, timeout time.Duration, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", append([]string{
		"-accel", "tcg", "-smp", "2", "-m", "768",
		"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
		"-kernel", vm.kernel, "-initrd", initrd,
		"-append", "console=ttyS0 no_timer_check panic=5 loglevel=4 rdinit=/init",
		"-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"}, extra...)...)
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("VM ran %.1fs", time.Since(start).Seconds())
	if p := os.Getenv("CAMOUNT_VM_CONSOLE"); p != "" {
		os.WriteFile(p, out.Bytes(), 0o644) // for debugging: the whole console
	}
	if ctx.Err() != nil {
		t.Fatalf("VM did not finish within %v; console:\n%s", timeout, tail(out.String(), 6000))
	}
	// isa-debug-exit: the guest writes 0 for success → exit status 1.
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() != 1 {
		t.Errorf("VM exit status %d (want 1, the guest's success code)", ee.ExitCode())
	} else if err != nil && !errors.As(err, &ee) {
		t.Fatalf("qemu: %v\n%s", err, tail(out.String(), 4000))
	}
	return out.String()
}

var vmLine = regexp.MustCompile(`VMTEST (ok|FAIL|RESULT) ([^\s:]+)(?::\s?(.*))?`)

// checkVMReport turns the guest's report lines into test results.
func checkVMReport(t *testing.T, out string, want []string) {
	t.Helper()
	seen := map[string]bool{}
	result := ""
	for _, l := range strings.Split(out, "\n") {
		m := vmLine.FindStringSubmatch(strings.TrimRight(l, "\r"))
		if m == nil {
			continue
		}
		switch m[1] {
		case "ok":
			seen[m[2]] = true
			t.Logf("guest: ok %s %s", m[2], m[3])
		case "FAIL":
			seen[m[2]] = true
			t.Errorf("guest: %s: %s", m[2], m[3])
		case "RESULT":
			result = m[2]
		}
	}
	for _, w := range want {
		if !seen[w] {
			t.Errorf("guest did not report check %s", w)
		}
	}
	if result != "PASS" || t.Failed() {
		t.Errorf("guest result %q; console:\n%s", result, tail(out, 8000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func mkdirT(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(from)
	os.MkdirAll(filepath.Dir(to), 0o755)
	if err := os.WriteFile(to, b, st.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		copyFile(t, p, filepath.Join(to, rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// writeCpio writes dir as an initramfs: a newc cpio archive of its
// directories, regular files and symlinks (owned by root), plus
// /dev/console, which the kernel opens for init's stdio.
func writeCpio(path, dir string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	ino := uint32(1)
	entry := func(name string, mode uint32, rdevMajor, rdevMinor uint32, data []byte) {
		hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
			ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
		ino++
		w.WriteString(hdr)
		w.WriteString(name)
		w.WriteByte(0)
		for n := 110 + len(name) + 1; n%4 != 0; n++ {
			w.WriteByte(0)
		}
		w.Write(data)
		for n := len(data); n%4 != 0; n++ {
			w.WriteByte(0)
		}
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		perm := uint32(info.Mode().Perm())
		switch {
		case d.IsDir():
			entry(rel, syscall.S_IFDIR|perm, 0, 0, nil)
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			entry(rel, syscall.S_IFLNK|0o777, 0, 0, []byte(l))
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			entry(rel, syscall.S_IFREG|perm, 0, 0, b)
		}
		return nil
	})
	if err != nil {
		f.Close()
		return err
	}
	entry("dev/console", syscall.S_IFCHR|0o600, 5, 1, nil)
	entry("TRAILER!!!", 0, 0, 0, nil)
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ---- the guest side: runs as /init inside the VM ----

type vmReport struct{ failed bool }

func (r *vmReport) ok(name, format string, a ...any) {
	fmt.Printf("VMTEST ok %s: %s\n", name, fmt.Sprintf(format, a...))
}

func (r *vmReport) fail(name, format string, a ...any) {
	r.failed = true
	fmt.Printf("VMTEST FAIL %s: %s\n", name, fmt.Sprintf(format, a...))
}

func (r *vmReport) check(name string, err error, format string, a ...any) bool {
	if err != nil {
		r.fail(name, "%v", err)
		return false
	}
	r.ok(name, format, a...)
	return true
}

// vmGuestTimeout bounds the guest's run (the host waits longer).
const vmGuestTimeout = 6 * time.Minute

func vmGuest() {
	r := &vmReport{}
	// A hung device must not hang the VM until the host's timeout.
	time.AfterFunc(vmGuestTimeout, func() {
		r.fail("guest-watchdog", "the guest did not finish within %v", vmGuestTimeout)
		vmPowerOff(true)
	})
	defer func() {
		if p := recover(); p != nil {
			r.fail("guest-panic", "%v", p)
		}
		vmPowerOff(r.failed)
	}()
	for _, m := range []struct{ src, dst, typ string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"}, {"tmpfs", "/tmp", "tmpfs"},
	} {
		if err := syscall.Mount(m.src, m.dst, m.typ, 0, ""); err != nil {
			r.fail("guest-setup", "mount %s: %v", m.dst, err)
			return
		}
	}
	os.Setenv("PATH", "/bin")
	os.Setenv("TMPDIR", "/tmp")
	var exp vmExpect
	b, err := os.ReadFile("/vm/expect.json")
	if err == nil {
		err = json.Unmarshal(b, &exp)
	}
	if err != nil {
		r.fail("guest-setup", "expect.json: %v", err)
		return
	}
	fmt.Println("VMTEST info: guest up")
	k, err := kmod.New()
	if err != nil {
		r.fail("guest-setup", "kmod: %v", err)
		return
	}
	for _, m := range []string{"crc32c_generic", "ext4", "loop", "fuse"} {
		if err := k.Load(m, "", 0); err != nil {
			fmt.Printf("VMTEST info: loading %s: %v\n", m, err)
		}
	}

	// The blockdev package's kernel tests (netlink and ioctl attach).
	out, err := exec.Command("/bin/blockdev.test", "-test.run", "^TestAttachNBDKernel$|^TestLoop", "-test.v", "-test.count=1").CombinedOutput()
	fmt.Printf("%s", out)
	if err == nil && bytes.Contains(out, []byte("--- SKIP: TestAttachNBDKernel")) {
		err = errors.New("TestAttachNBDKernel skipped in the VM")
	}
	r.check("blockdev-kernel-tests", err, "passed")

	// camount mkdev over netlink, detached by camount rmdev.
	vmMkdevChecks(r, &exp, "", nil, true)
	// and over the ioctls, detached by SIGTERM.
	vmMkdevChecks(r, &exp, "ioctl", []string{"--nbd-method=ioctl"}, false)
	// kill -9 during reads and disk-cache writes (vm_kill9_test.go).
	vmKill9Checks(r, &exp)
	if exp.Long {
		vmMkdevChecks(r, &exp, "multiconn", []string{"--connections=4"}, false)
	}
	// The fallback on this kernel: a loop device over FUSE.
	vmMkdevChecks(r, &exp, "loop", nil, false)
	// FAT attributes on vfat, mkdev --device (vm_parity_test.go).
	vmParityChecks(r)
	// Last: boot from the disk camount nbd serves on the host. On success
	// this does not return: /sbin/init of that disk takes over as pid 1.
	vmBootFromNBD(r, b)
}

// vmMkdevChecks runs camount mkdev in the guest and checks the device.
func vmMkdevChecks(r *vmReport, exp *vmExpect, label string, extra []string, full bool) {
	pre := "mkdev-"
	if label != "" {
		pre = "mkdev-" + label + "-"
	}
	via := "--via=nbd"
	if label == "loop" {
		via = "--via=loop"
	}
	args := append([]string{"mkdev", via, "--store=/vm/disk.castr", "/vm/disk.caibx"}, extra...)
	cmd := exec.Command("/bin/camount", args...)
	cmd.Stderr = os.Stdout
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		r.fail(pre+"device", "start: %v", err)
		return
	}
	done := make(chan error, 1)
	lines := make(chan string, 1)
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
	var dev string
	select {
	case dev = <-lines:
	case err := <-done:
		r.fail(pre+"device", "camount mkdev exited: %v", err)
		return
	case <-time.After(90 * time.Second):
		cmd.Process.Kill()
		r.fail(pre+"device", "no device after 90 s")
		return
	}
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	}()
	name := filepath.Base(dev)
	wantDev := `^/dev/nbd[0-9]+$`
	if label == "loop" {
		wantDev = `^/dev/loop[0-9]+$`
	}
	if !regexp.MustCompile(wantDev).MatchString(dev) {
		r.fail(pre+"device", "camount mkdev printed %q, want %s", dev, wantDev)
		return
	}
	r.ok(pre+"device", "%s", dev)
	sysfs := func(f string) string {
		b, _ := os.ReadFile("/sys/block/" + name + "/" + f)
		return strings.TrimSpace(string(b))
	}
	if full {
		if v := sysfs("ro"); v != "1" {
			r.fail(pre+"ro", "/sys/block/%s/ro = %q", name, v)
		} else {
			r.ok(pre+"ro", "/sys/block/%s/ro = 1", name)
		}
		if v := sysfs("size"); v != strconv.FormatInt(exp.Size/512, 10) {
			r.fail(pre+"size", "/sys/block/%s/size = %q sectors, want %d", name, v, exp.Size/512)
		} else {
			r.ok(pre+"size", "%s sectors", v)
		}
	}
	sum, n, err := vmHashFile(dev)
	if err == nil && (sum != exp.SHA256 || n != exp.Size) {
		err = fmt.Errorf("%s: %d bytes with sha256 %s, want %d bytes with %s", dev, n, sum, exp.Size, exp.SHA256)
	}
	r.check(pre+"bytes", err, "%d bytes, sha256 %s", n, sum)
	if full {
		part := dev + "p1"
		start := sysfs(name + "p1/start")
		if _, serr := os.Stat(part); serr != nil || start != strconv.FormatInt(exp.PartOffset/512, 10) {
			r.fail(pre+"partition", "%s: %v, start %q (want %d); /proc/partitions:\n%s", part, serr, start, exp.PartOffset/512, vmRead("/proc/partitions"))
		} else {
			r.ok(pre+"partition", "%s starts at sector %s", part, start)
		}
		if f, err := os.OpenFile(dev, os.O_WRONLY, 0); err != nil {
			r.ok(pre+"write-refused", "open for writing: %v", err)
		} else {
			_, werr := f.WriteAt(make([]byte, 4096), 0)
			if werr == nil {
				werr = f.Sync()
			}
			f.Close()
			if werr == nil {
				r.fail(pre+"write-refused", "a write to %s succeeded", dev)
			} else {
				r.ok(pre+"write-refused", "%v", werr)
			}
		}
		r.check(pre+"ext4", vmMountCheck(part, exp), "files match")
		// camount rmdev from another process; mkdev must exit by itself.
		out, err := exec.Command("/bin/camount", "rmdev", dev).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%v: %s", err, out)
		}
		r.check("rmdev", err, "%s", dev)
		select {
		case err := <-done:
			if err == nil && vmConnected(name) {
				err = fmt.Errorf("%s still connected", dev)
			}
			r.check("mkdev-exit-after-rmdev", err, "exit 0, %s released", dev)
		case <-time.After(30 * time.Second):
			r.fail("mkdev-exit-after-rmdev", "camount mkdev still running 30 s after rmdev")
		}
		return
	}
	fmt.Printf("VMTEST info: SIGTERM to camount mkdev (pid %d)\n", cmd.Process.Pid)
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err == nil && vmConnected(name) {
			err = fmt.Errorf("%s still connected", dev)
		}
		r.check(pre+"sigterm", err, "exit 0, %s released", dev)
	case <-time.After(30 * time.Second):
		r.fail(pre+"sigterm", "camount mkdev still running 30 s after SIGTERM")
	}
}

// vmBootFromNBD mounts the ext4 partition of the virtio disk (the NBD
// export of the host's camount nbd) as the new root and executes its
// /sbin/init (this test binary again, which runs vmStage2). It returns
// only on failure.
func vmBootFromNBD(r *vmReport, expect []byte) {
	k, err := kmod.New()
	if err == nil {
		for _, m := range []string{"virtio_pci", "virtio_blk"} {
			if err = k.Load(m, "", 0); err != nil {
				err = fmt.Errorf("loading %s: %w", m, err)
				break
			}
		}
	}
	if err != nil {
		r.fail("nbd-drive-ro", "%v", err)
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat("/dev/vda1"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			r.fail("nbd-drive-ro", "no /dev/vda1 30 s after loading virtio_blk; /proc/partitions:\n%s", vmRead("/proc/partitions"))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ro := strings.TrimSpace(vmRead("/sys/block/vda/ro")); ro != "1" {
		r.fail("nbd-drive-ro", "/sys/block/vda/ro = %q", ro)
	} else {
		r.ok("nbd-drive-ro", "/dev/vda (camount nbd on the host) is read-only")
	}
	os.Mkdir("/newroot", 0o755)
	if err := syscall.Mount("/dev/vda1", "/newroot", "ext4", syscall.MS_RDONLY, ""); err != nil {
		r.fail("boot-from-nbd", "mount /dev/vda1: %v", err)
		return
	}
	for _, m := range []string{"/proc", "/sys", "/dev"} {
		if err := syscall.Mount(m, "/newroot"+m, "", syscall.MS_MOVE, ""); err != nil {
			r.fail("boot-from-nbd", "moving %s: %v", m, err)
			return
		}
	}
	if err := syscall.Chroot("/newroot"); err != nil {
		r.fail("boot-from-nbd", "chroot: %v", err)
		return
	}
	os.Chdir("/")
	env := []string{"CAMOUNT_VM_EXPECT=" + string(expect)}
	if r.failed {
		env = append(env, "CAMOUNT_VM_FAILED=1")
	}
	fmt.Println("VMTEST info: executing /sbin/init of the NBD disk")
	err = syscall.Exec("/sbin/init", []string{"/sbin/init"}, env)
	r.fail("boot-from-nbd", "exec /sbin/init: %v", err)
}

// vmStage2 is /sbin/init of the disk image, started by vmBootFromNBD.
func vmStage2() {
	r := &vmReport{failed: os.Getenv("CAMOUNT_VM_FAILED") != ""}
	time.AfterFunc(time.Minute, func() {
		r.fail("guest-watchdog", "stage 2 did not finish within a minute")
		vmPowerOff(true)
	})
	defer func() {
		if p := recover(); p != nil {
			r.fail("guest-panic", "%v", p)
		}
		vmPowerOff(r.failed)
	}()
	var exp vmExpect
	if err := json.Unmarshal([]byte(os.Getenv("CAMOUNT_VM_EXPECT")), &exp); err != nil {
		r.fail("boot-from-nbd", "expectations: %v", err)
		return
	}
	root := ""
	for _, l := range strings.Split(vmRead("/proc/self/mounts"), "\n") {
		if f := strings.Fields(l); len(f) >= 4 && f[1] == "/" {
			root = l
		}
	}
	f := strings.Fields(root)
	if len(f) < 4 || f[0] != "/dev/vda1" || f[2] != "ext4" || !strings.HasPrefix(f[3], "ro") {
		r.fail("boot-from-nbd", "root is %q, want /dev/vda1 ext4 ro", root)
	} else {
		r.ok("boot-from-nbd", "pid %d runs /sbin/init from %s", os.Getpid(), root)
	}
	var err error
	for name, want := range exp.BootFiles {
		sum, _, herr := vmHashFile("/" + name)
		if herr == nil && sum != want {
			herr = fmt.Errorf("/%s: sha256 %s, want %s", name, sum, want)
		}
		if herr != nil {
			err = herr
			break
		}
	}
	r.check("boot-from-nbd-files", err, "%d files match", len(exp.BootFiles))
}

func vmConnected(name string) bool {
	if strings.HasPrefix(name, "loop") {
		return strings.TrimSpace(vmRead("/sys/block/"+name+"/loop/backing_file")) != ""
	}
	_, err := os.Stat("/sys/block/" + name + "/pid")
	return err == nil
}

func vmRead(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func vmHashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// vmMountCheck mounts the ext4 partition read-only and compares files.
func vmMountCheck(part string, exp *vmExpect) error {
	if err := syscall.Mount(part, "/mnt", "ext4", syscall.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount -o ro %s: %w", part, err)
	}
	defer syscall.Unmount("/mnt", 0)
	for name, want := range exp.Files {
		sum, _, err := vmHashFile(filepath.Join("/mnt", name))
		if err != nil {
			return err
		}
		if sum != want {
			return fmt.Errorf("%s: sha256 %s, want %s", name, sum, want)
		}
	}
	return nil
}

// vmPowerOff reports the result and ends the VM: through isa-debug-exit
// (qemu exits with status (v<<1)|1), else by powering off.
func vmPowerOff(failed bool) {
	res, code := "PASS", byte(0)
	if failed {
		res, code = "FAIL", 1
	}
	fmt.Printf("VMTEST RESULT %s\n", res)
	// Let the serial console drain before qemu exits (tcdrain), no
	// sync(2): it could block on a hung device.
	unix.IoctlSetInt(1, unix.TCSBRK, 1)
	time.Sleep(300 * time.Millisecond)
	if f, err := os.OpenFile("/dev/port", os.O_WRONLY, 0); err == nil {
		f.WriteAt([]byte{code}, 0xf4)
		f.Close()
	}
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	for {
		time.Sleep(time.Hour)
	}
}
