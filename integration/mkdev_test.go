package integration

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// diskImage is a GPT disk image with one ext4 partition, and its casync
// index and store.
type diskImage struct {
	img, caibx, store string
	size              int64
	partOffset        int64             // bytes
	partSize          int64             // bytes
	files             map[string]string // path in the file system → sha256 hex
}

// makeDiskImage builds a GPT+ext4 disk image of sizeMiB with sfdisk and
// mkfs.ext4 -d (no mount needed), and indexes it with casync make. extra
// maps paths in the file system to host files copied there.
func makeDiskImage(t testing.TB, dir string, sizeMiB int, extra map[string]string) *diskImage {
	t.Helper()
	needCmd(t, "sfdisk", "mkfs.ext4", "casync")
	src := filepath.Join(dir, "fs-src")
	d := &diskImage{
		img: filepath.Join(dir, "disk.img"), caibx: filepath.Join(dir, "disk.caibx"),
		store: filepath.Join(dir, "disk.castr"), size: int64(sizeMiB) << 20,
		partOffset: 1 << 20, files: map[string]string{},
	}
	d.partSize = d.size - 2<<20 // GPT backup at the end
	for name, n := range map[string]int{"big.bin": 1 << 20, "etc/hello.txt": 0, "sub/dir/small.bin": 70000} {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		data := randomBytes(n, uint64(len(name)))
		if n == 0 {
			data = []byte("hello from a lazily fetched disk\n")
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		d.files[name] = hex.EncodeToString(sum[:])
	}
	for name, from := range extra {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(d.img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(d.size)
	f.Close()
	sf := exec.Command("sfdisk", "-q", "--no-reread", "--no-tell-kernel", d.img)
	sf.Stdin = strings.NewReader(fmt.Sprintf("label: gpt\nstart=%d, size=%d, type=linux, name=root\n", d.partOffset/512, d.partSize/512))
	if out, err := sf.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	runCmd(t, "mkfs.ext4", "-q", "-F", "-L", "camount", "-E", fmt.Sprintf("root_owner=0:0,offset=%d", d.partOffset),
		"-d", src, d.img, strconv.FormatInt(d.partSize>>10, 10)+"k")
	runCmd(t, "casync", "make", "--store="+d.store, d.caibx, d.img)
	return d
}

func (d *diskImage) sha256(t *testing.T) string {
	t.Helper()
	s := fileSum(t, d.img)
	return hex.EncodeToString(s[:])
}

// mkdevProc is a running 'camount mkdev'.
type mkdevProc struct {
	cmd    *exec.Cmd
	dev    string
	stderr *syncBuffer
	done   chan error
}

// startMkdev runs camount mkdev and waits for the device path it prints.
func startMkdev(t *testing.T, args ...string) *mkdevProc {
	t.Helper()
	cmd := exec.Command(camountBin, append([]string{"mkdev"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &mkdevProc{cmd: cmd, stderr: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, out)
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() { p.stop(t) })
	select {
	case l, ok := <-lines:
		if !ok {
			err := <-p.done
			p.done <- err
			t.Fatalf("camount mkdev printed no device (exit %v)\nstderr: %s", err, p.stderr)
		}
		p.dev = strings.TrimSpace(l)
	case <-time.After(60 * time.Second):
		t.Fatalf("camount mkdev: no device after 60 s\nstderr: %s", p.stderr)
	}
	return p
}

// stop sends SIGTERM (if still running) and waits for the exit.
func (p *mkdevProc) stop(t *testing.T) error {
	if p.cmd.ProcessState != nil {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	return p.wait(t, 30*time.Second)
}

func (p *mkdevProc) wait(t *testing.T, d time.Duration) error {
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(d):
		p.cmd.Process.Kill()
		t.Errorf("camount mkdev did not exit within %v\nstderr: %s", d, p.stderr)
		return <-p.done
	}
}

func cmpFiles(t *testing.T, a, b string) {
	t.Helper()
	if out, err := exec.Command("cmp", a, b).CombinedOutput(); err != nil {
		t.Fatalf("cmp %s %s: %v\n%s", a, b, err, out)
	}
}

// needLoopOverFUSE skips a test on a machine where mkdev cannot put a loop
// device over a FUSE file: no /dev/fuse, or no loop driver.
func needLoopOverFUSE(t testing.TB) {
	t.Helper()
	needFUSE(t)
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("/dev/loop-control is absent: the loop module is not loaded")
	}
}

// TestMkdevLoop runs 'camount mkdev' on this host: the kernel here has no
// NBD, so it must fall back to a loop device over a private FUSE mount.
func TestMkdevLoop(t *testing.T) {
	needRoot(t)
	needCmd(t, "fdisk", "losetup", "mount", "cmp")
	needLoopOverFUSE(t)
	dir := t.TempDir()
	d := makeDiskImage(t, dir, 24, nil)
	p := startMkdev(t, "--via=auto", "--store="+d.store, d.caibx)
	hasNBD := false
	if _, err := os.Stat("/sys/module/nbd"); err == nil {
		hasNBD = true
	}
	want := "/dev/loop"
	if hasNBD {
		want = "/dev/nbd"
	}
	if !strings.HasPrefix(p.dev, want) {
		t.Fatalf("mkdev printed %q, want a %sN device\nstderr: %s", p.dev, want, p.stderr)
	}
	name := filepath.Base(p.dev)
	if ro, _ := os.ReadFile("/sys/block/" + name + "/ro"); strings.TrimSpace(string(ro)) != "1" {
		t.Errorf("/sys/block/%s/ro = %q, want 1", name, ro)
	}
	if sz, _ := os.ReadFile("/sys/block/" + name + "/size"); strings.TrimSpace(string(sz)) != strconv.FormatInt(d.size/512, 10) {
		t.Errorf("/sys/block/%s/size = %q sectors, want %d", name, sz, d.size/512)
	}
	out := runCmd(t, "fdisk", "-l", p.dev)
	if !strings.Contains(out, "Disklabel type: gpt") || !strings.Contains(out, p.dev) || !strings.Contains(out, " 2048 ") {
		t.Errorf("fdisk -l %s does not show the GPT partition at sector 2048:\n%s", p.dev, out)
	}
	cmpFiles(t, p.dev, d.img)
	if f, err := os.OpenFile(p.dev, os.O_WRONLY, 0); err == nil {
		_, werr := f.WriteAt(make([]byte, 4096), 0)
		if werr == nil {
			werr = f.Sync()
		}
		f.Close()
		if werr == nil {
			t.Errorf("writing to %s succeeded on a read-only device", p.dev)
		}
	}

	// Mount the ext4 partition read-only through a second loop device at
	// the partition's offset.
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	part := strings.TrimSpace(runCmd(t, "losetup", "-r", "-f", "--show", "-o", strconv.FormatInt(d.partOffset, 10),
		"--sizelimit", strconv.FormatInt(d.partSize, 10), p.dev))
	t.Cleanup(func() { exec.Command("losetup", "-d", part).Run() })
	runCmd(t, "mount", "-t", "ext4", "-o", "ro", part, mnt)
	mounted := true
	t.Cleanup(func() {
		if mounted {
			exec.Command("umount", mnt).Run()
		}
	})
	for name, sum := range d.files {
		s := fileSum(t, filepath.Join(mnt, name))
		if got := hex.EncodeToString(s[:]); got != sum {
			t.Errorf("%s in the mounted partition: sha256 %s, want %s", name, got, sum)
		}
	}
	runCmd(t, "umount", mnt)
	mounted = false
	runCmd(t, "losetup", "-d", part)

	// SIGTERM detaches the device and unmounts the FUSE file behind it.
	if err := p.stop(t); err != nil {
		t.Fatalf("camount mkdev after SIGTERM: %v\nstderr: %s", err, p.stderr)
	}
	checkDetached(t, p.dev)
}

// checkDetached checks that a device made by mkdev is gone and no
// camount FUSE mount is left.
func checkDetached(t *testing.T, dev string) {
	t.Helper()
	name := filepath.Base(dev)
	if b, err := os.ReadFile("/sys/block/" + name + "/loop/backing_file"); err == nil {
		t.Errorf("%s is still attached to %s", dev, strings.TrimSpace(string(b)))
	}
	if _, err := os.Stat("/sys/block/" + name + "/pid"); err == nil && strings.HasPrefix(name, "nbd") {
		t.Errorf("%s is still connected", dev)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, "camount-mkdev-") {
			t.Errorf("a mkdev FUSE mount is left: %s", l)
		}
	}
}

// TestMkdevRmdev detaches a device with 'camount rmdev' from another
// process; the mkdev process must then exit cleanly.
func TestMkdevRmdev(t *testing.T) {
	needRoot(t)
	needLoopOverFUSE(t)
	dir := t.TempDir()
	d := makeDiskImage(t, dir, 8, nil)
	p := startMkdev(t, "--via=loop", "--store="+d.store, d.caibx)
	if !strings.HasPrefix(p.dev, "/dev/loop") {
		t.Fatalf("mkdev --via=loop printed %q", p.dev)
	}
	cmpFiles(t, p.dev, d.img)
	camount(t, "rmdev", p.dev)
	if err := p.wait(t, 20*time.Second); err != nil {
		t.Fatalf("camount mkdev after rmdev: %v\nstderr: %s", err, p.stderr)
	}
	checkDetached(t, p.dev)
	// A device that is no longer attached, or is not ours, is an error.
	if _, err := tryCamount("rmdev", p.dev); err == nil {
		t.Errorf("rmdev of a detached %s succeeded", p.dev)
	}
	if _, err := tryCamount("rmdev", "/dev/null"); err == nil || !strings.Contains(err.Error(), "not a device made by camount mkdev") {
		t.Errorf("rmdev /dev/null: err = %v", err)
	}
}

// TestMkdevBadInput: clear errors, no device left behind.
func TestMkdevBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.caibx")
	os.WriteFile(bad, []byte("not an index"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"mkdev"}, "want one .caibx INDEX"},
		{[]string{"mkdev", filepath.Join(dir, "x.caidx")}, "want a .caibx index"},
		{[]string{"mkdev", "--via=floppy", bad}, "--via must be"},
		{[]string{"mkdev", filepath.Join(dir, "missing.caibx")}, "no such file"},
		{[]string{"mkdev", bad}, "bad.caibx"},
		{[]string{"rmdev"}, "want one DEVICE"},
		{[]string{"rmdev", "/dev/nbd99999"}, "no such NBD device"},
	} {
		_, err := tryCamount(c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("camount %s: err = %v, want %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}

// TestMkdevOddSize: an image whose size is not a multiple of 512 shows as
// a device padded with zeros to whole sectors (as the NBD export is).
func TestMkdevOddSize(t *testing.T) {
	needRoot(t)
	needCmd(t, "casync")
	needLoopOverFUSE(t)
	dir := t.TempDir()
	data := randomBytes(1000000, 7)
	img := filepath.Join(dir, "odd.img")
	os.WriteFile(img, data, 0o644)
	store := filepath.Join(dir, "odd.castr")
	caibx := filepath.Join(dir, "odd.caibx")
	runCmd(t, "casync", "make", "--store="+store, caibx, img)
	p := startMkdev(t, "--via=loop", "--store="+store, caibx)
	got, err := os.ReadFile(p.dev)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1000448 {
		t.Fatalf("%s is %d bytes, want 1000448 (1000000 padded to 512)", p.dev, len(got))
	}
	if !bytes.Equal(got[:len(data)], data) {
		t.Fatalf("%s differs from the image", p.dev)
	}
	if !bytes.Equal(got[len(data):], make([]byte, 448)) {
		t.Fatalf("%s padding is not zeros", p.dev)
	}
	if err := p.stop(t); err != nil {
		t.Fatalf("camount mkdev after SIGTERM: %v\nstderr: %s", err, p.stderr)
	}
	checkDetached(t, p.dev)
}

// startBusyLoop runs mkdev --via=loop on an 8 MiB disk image, opens the
// loop device (the caller closes it) and sends mkdev SIGTERM while it is open.
func startBusyLoop(t *testing.T) (*diskImage, *mkdevProc, *os.File) {
	t.Helper()
	needRoot(t)
	needLoopOverFUSE(t)
	d := makeDiskImage(t, t.TempDir(), 8, nil)
	p := startMkdev(t, "--via=loop", "--store="+d.store, d.caibx)
	f, err := os.Open(p.dev)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	return d, p, f
}

// TestMkdevBusy: SIGTERM while another program holds the loop device open
// keeps it served until that program closes it; then mkdev exits cleanly.
func TestMkdevBusy(t *testing.T) {
	d, p, f := startBusyLoop(t)
	defer f.Close()
	select {
	case err := <-p.done:
		p.done <- err
		t.Fatalf("camount mkdev exited (%v) while %s was open\nstderr: %s", err, p.dev, p.stderr)
	case <-time.After(3 * time.Second):
	}
	// Still served: the open descriptor reads the image.
	want, _ := os.ReadFile(d.img)
	got := make([]byte, len(want))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("reading the busy %s after SIGTERM: %v (equal %v)", p.dev, err, bytes.Equal(got, want))
	}
	if !strings.Contains(p.stderr.String(), "still in use") {
		t.Errorf("no 'still in use' warning; stderr: %s", p.stderr)
	}
	f.Close()
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Fatalf("camount mkdev after the last close: %v\nstderr: %s", err, p.stderr)
	}
	checkDetached(t, p.dev)
}

// TestMkdevNoNBD: where the kernel has no NBD, --via=nbd fails with the
// reason instead of falling back.
func TestMkdevNoNBD(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat("/sys/module/nbd"); err == nil {
		t.Skip("this kernel has NBD (the VM test covers the other case)")
	}
	dir := t.TempDir()
	d := makeDiskImage(t, dir, 8, nil)
	start := time.Now()
	out, err := tryCamount("mkdev", "--via=nbd", "--store="+d.store, d.caibx)
	if err == nil || !strings.Contains(err.Error(), "the kernel has no NBD support") {
		t.Fatalf("mkdev --via=nbd without NBD: out %q, err %v", out, err)
	}
	if out != "" {
		t.Errorf("mkdev printed a device without making one: %q", out)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("failing took %v", time.Since(start))
	}
}

// TestMkdevBusyForced: a second signal stops serving a busy loop device at
// once; the device is released when its last user closes it.
func TestMkdevBusyForced(t *testing.T) {
	_, p, f := startBusyLoop(t)
	defer f.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stderr.String(), "still in use") {
		if time.Now().After(deadline) {
			t.Fatalf("no 'still in use' warning 10 s after SIGTERM; stderr: %s", p.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	err := p.wait(t, 10*time.Second)
	if err == nil || !strings.Contains(p.stderr.String(), "reads from it now fail") {
		t.Errorf("forced stop: exit %v, want an error naming the failing reads; stderr: %s", err, p.stderr)
	}
	f.Close()
	deadline = time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile("/sys/block/" + filepath.Base(p.dev) + "/loop/backing_file")
		if err != nil || !strings.Contains(string(b), "camount-mkdev-") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still attached to %s 10 s after its last close", p.dev, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	checkDetached(t, p.dev)
}
