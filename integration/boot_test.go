package integration

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Booting a real Debian with systemd from lazily fetched images
// (docs/BOOT.md): scripts/bootimage.sh builds the root file system image
// once per test run (mmdebstrap, mkfs.ext4 -d), camount make turns it into
// os.caibx and os.castr, nginx serves them, and qemu (TCG) boots Debian's
// kernel from it, either through qemu's own NBD client talking to camount nbd
// on the host, or from /dev/nbd0 attached by camount mkdev in an initramfs
// made by mkinitramfs with contrib/initramfs-tools. The image's marker unit
// prints "CAMOUNT-BOOT-MARKER uptime=S root=SRC" once multi-user.target is
// reached and powers the machine off.

// bootImage is the Debian image as camount serves it.
type bootImage struct {
	dir        string // holds os.caibx and os.castr/ (served by nginx)
	img        string // the raw ext4 image
	caibx      string
	store      string
	storeBytes int64
	chunks     int // distinct chunks in the index
}

var bootImg struct {
	once sync.Once
	img  *bootImage
	err  error
}

// debianBootImage builds the image once per test run, under the directory
// of the test binary's camount build (TestMain removes it at exit).
// mmdebstrap's tarball (most of the build's time) is kept between runs in
// $XDG_CACHE_HOME/camount-test/boot (bootimage.sh names it by a digest of
// its mmdebstrap line and rebuilds it after 7 days); CAMOUNT_BOOT_CACHE=DIR
// puts it elsewhere, CAMOUNT_BOOT_CACHE=none builds it afresh. The image
// itself (with this build's camount in it) is always made anew.
func debianBootImage(t *testing.T) *bootImage {
	t.Helper()
	needRoot(t)
	needCmd(t, "mmdebstrap", "mkfs.ext4", "qemu-system-x86_64")
	bootImg.once.Do(func() {
		dir := filepath.Join(filepath.Dir(camountBin), "boot")
		os.MkdirAll(dir, 0o755)
		extra := filepath.Join(dir, "extra")
		if bootImg.err = guestExtras(extra); bootImg.err != nil {
			return
		}
		img := filepath.Join(dir, "os.img")
		start := time.Now()
		cmd := exec.Command("../scripts/bootimage.sh", img, extra)
		cmd.Env = os.Environ()
		cache := os.Getenv("CAMOUNT_BOOT_CACHE")
		if cache == "" {
			if d, err := os.UserCacheDir(); err == nil {
				cache = filepath.Join(d, "camount-test", "boot")
			}
		}
		if cache != "" && cache != "none" {
			cmd.Env = append(cmd.Env, "BOOTIMAGE_ROOTFS_CACHE="+cache)
		}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			bootImg.err = fmt.Errorf("scripts/bootimage.sh: %v\n%s", err, tail(out.String(), 3000))
			return
		}
		b := &bootImage{dir: dir, img: img, caibx: filepath.Join(dir, "os.caibx"), store: filepath.Join(dir, "os.castr")}
		if _, err := tryCamount("make", "--store="+b.store, b.caibx, img); err != nil {
			bootImg.err = err
			return
		}
		_, b.storeBytes = dirSize(t, b.store)
		b.chunks = len(storeChunks(t, b.store))
		st, _ := os.Stat(img)
		t.Logf("Debian image: %d MiB raw, store %d chunks, %.1f MiB (built in %.0fs)",
			st.Size()>>20, b.chunks, float64(b.storeBytes)/(1<<20), time.Since(start).Seconds())
		bootImg.img = b
	})
	if bootImg.err != nil {
		t.Fatal(bootImg.err)
	}
	return bootImg.img
}

var static struct {
	once sync.Once
	bin  string
	err  error
}

// staticCamount builds camount without cgo (for the guest and the
// initramfs) once per test run, beside the test's camount build.
func staticCamount() (string, error) {
	static.once.Do(func() {
		bin := filepath.Join(filepath.Dir(camountBin), "camount-static")
		build := exec.Command("go", "build", "-o", bin, "../cmd/camount")
		build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
		if out, err := build.CombinedOutput(); err != nil {
			static.err = fmt.Errorf("go build (static): %v\n%s", err, out)
			return
		}
		static.bin = bin
	})
	return static.bin, static.err
}

// guestTreeFiles are the files of the tree image the guest mounts at boot.
var guestTreeFiles = map[string]string{"a.txt": "mounted by systemd from fstab\n", "d/b.txt": strings.Repeat("camount ", 5000)}

// guestExtras fills dir with what the image gets on top of Debian for the
// fstab and unit checks (docs/BOOT.md): a static camount as
// /usr/local/bin/camount and /usr/sbin/mount.camount, fusermount3, fuse.ko
// for the host's kernel, a tree image and a blob image with their store in
// /srv, an fstab line mounting the tree at /srv/tree, contrib/systemd's
// units (camount-mount@tree2 mounting it again at /srv/tree2,
// camount-nbd@blob serving the blob) enabled, and a boot check printing
// "CAMOUNT-CHECK unit NAME STATE" and "CAMOUNT-CHECK file PATH SHA256".
func guestExtras(dir string) error {
	os.RemoveAll(dir)
	k := ""
	if kernels, _ := filepath.Glob("/boot/vmlinuz-*"); len(kernels) > 0 {
		sort.Strings(kernels)
		k = strings.TrimPrefix(filepath.Base(kernels[len(kernels)-1]), "vmlinuz-")
	}
	mk := func(p string, b []byte, mode os.FileMode) error {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, b, mode)
	}
	static, err := staticCamount()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(static)
	if err != nil {
		return err
	}
	if err := mk("usr/local/bin/camount", b, 0o755); err != nil {
		return err
	}
	os.MkdirAll(filepath.Join(dir, "usr/sbin"), 0o755)
	if err := os.Symlink("/usr/local/bin/camount", filepath.Join(dir, "usr/sbin/mount.camount")); err != nil {
		return err
	}
	if fm, err := exec.LookPath("fusermount3"); err == nil {
		b, _ := os.ReadFile(fm)
		if err := mk("usr/bin/fusermount3", b, 0o4755); err != nil {
			return err
		}
	}
	if k != "" {
		mod := filepath.Join("/lib/modules", k)
		if b, err := os.ReadFile(filepath.Join(mod, "kernel/fs/fuse/fuse.ko")); err == nil {
			mk("usr/lib/modules/"+k+"/kernel/fs/fuse/fuse.ko", b, 0o644)
			for _, f := range []string{"modules.builtin", "modules.order", "modules.builtin.modinfo"} {
				if b, err := os.ReadFile(filepath.Join(mod, f)); err == nil {
					mk("usr/lib/modules/"+k+"/"+f, b, 0o644)
				}
			}
			if out, err := exec.Command("depmod", "-b", filepath.Join(dir, "usr"), k).CombinedOutput(); err != nil {
				return fmt.Errorf("depmod: %v\n%s", err, out)
			}
		}
	}
	src := filepath.Join(filepath.Dir(dir), "tree-src")
	os.RemoveAll(src)
	for n, body := range guestTreeFiles {
		p := filepath.Join(src, n)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(body), 0o644)
	}
	blob := filepath.Join(filepath.Dir(dir), "blob.img")
	os.WriteFile(blob, randomBytes(1<<20, 77), 0o644)
	srv := filepath.Join(dir, "srv")
	for _, a := range [][]string{
		{"make", "--store=" + filepath.Join(srv, "tree.castr"), filepath.Join(srv, "tree.caidx"), src},
		{"make", "--store=" + filepath.Join(srv, "tree.castr"), filepath.Join(srv, "blob.caibx"), blob},
	} {
		if _, err := tryCamount(a...); err != nil {
			return err
		}
	}
	os.MkdirAll(filepath.Join(srv, "tree"), 0o755)
	os.MkdirAll(filepath.Join(srv, "tree2"), 0o755)
	if err := mk("etc/fstab", []byte("LABEL=camountroot / ext4 ro 0 0\n/srv/tree.caidx /srv/tree camount ro,nofail,x-systemd.mount-timeout=10min,store=/srv/tree.castr 0 0\n"+
		// The units' CacheDirectory= and PrivateTmp= (the root is read-only).
		"tmpfs /var/cache tmpfs mode=0755 0 0\ntmpfs /var/tmp tmpfs mode=1777 0 0\n"), 0o644); err != nil {
		return err
	}
	mk("etc/camount/tree2.conf", []byte("INDEX=/srv/tree.caidx\nMOUNTPOINT=/srv/tree2\nCAMOUNT_ARGS=--store=/srv/tree.castr\n"), 0o644)
	mk("etc/camount/blob.conf", []byte("INDEX=/srv/blob.caibx\nCAMOUNT_ARGS=--store=/srv/tree.castr\n"), 0o644)
	units, _ := filepath.Glob("../contrib/systemd/*.service")
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			return err
		}
		if err := mk("usr/local/lib/systemd/system/"+filepath.Base(u), bytes.ReplaceAll(b, []byte("@BINDIR@"), []byte("/usr/local/bin")), 0o644); err != nil {
			return err
		}
	}
	wants := filepath.Join(dir, "etc/systemd/system/multi-user.target.wants")
	os.MkdirAll(wants, 0o755)
	os.Symlink("/usr/local/lib/systemd/system/camount-mount@.service", filepath.Join(wants, "camount-mount@tree2.service"))
	os.Symlink("/usr/local/lib/systemd/system/camount-nbd@.service", filepath.Join(wants, "camount-nbd@blob.service"))
	return mk("etc/camount-boot-checks.d/20-units", []byte(`#!/bin/sh
for u in srv-tree.mount camount-mount@tree2.service camount-nbd@blob.service; do
	echo "CAMOUNT-CHECK unit $u $(systemctl is-active $u)"
done
for f in /srv/tree/a.txt /srv/tree2/d/b.txt; do
	echo "CAMOUNT-CHECK file $f $(sha256sum <$f | cut -d' ' -f1)"
done
systemctl --no-pager status srv-tree.mount camount-mount@tree2.service camount-nbd@blob.service 2>&1 | head -60
journalctl --no-pager -n 10 -u camount-nbd@blob.service 2>&1
`), 0o755)
}

// checkGuestUnits checks the fstab mount and the units the image enables.
func checkGuestUnits(t *testing.T, console string) {
	t.Helper()
	defer func() {
		if t.Failed() {
			if i := strings.Index(console, "CAMOUNT-CHECK unit"); i >= 0 {
				j := strings.Index(console[i:], "CAMOUNT-BOOT-MARKER")
				if j < 0 {
					j = len(console) - i
				}
				t.Logf("the guest's unit checks:\n%s", console[i:i+j])
			}
		}
	}()
	for _, u := range []string{"srv-tree.mount", "camount-mount@tree2.service", "camount-nbd@blob.service"} {
		if !strings.Contains(console, "CAMOUNT-CHECK unit "+u+" active") {
			t.Errorf("in the guest, %s is not active; console:\n%s", u, tail(console, 6000))
		}
	}
	for p, n := range map[string]string{"/srv/tree/a.txt": "a.txt", "/srv/tree2/d/b.txt": "d/b.txt"} {
		sum := sha256.Sum256([]byte(guestTreeFiles[n]))
		if want := "CAMOUNT-CHECK file " + p + " " + hex.EncodeToString(sum[:]); !strings.Contains(console, want) {
			t.Errorf("in the guest, %s does not read right (want %q)", p, want)
		}
	}
}

// bootKernel is the newest /boot/vmlinuz-* with its initrd and an nbd
// module in /lib/modules.
type bootKernel struct{ kver, kernel, initrd string }

func findBootKernel(t *testing.T) *bootKernel {
	t.Helper()
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Strings(kernels)
	for i := len(kernels) - 1; i >= 0; i-- {
		kver := strings.TrimPrefix(filepath.Base(kernels[i]), "vmlinuz-")
		initrd := "/boot/initrd.img-" + kver
		if _, err := os.Stat(filepath.Join("/lib/modules", kver, "kernel/drivers/block/nbd.ko")); err != nil {
			continue
		}
		if _, err := os.Stat(initrd); err != nil {
			continue
		}
		return &bootKernel{kver: kver, kernel: kernels[i], initrd: initrd}
	}
	t.Skip("no /boot/vmlinuz-* with its initrd.img and an nbd.ko in /lib/modules (install linux-image-amd64)")
	return nil
}

// bootResult is what a boot printed.
type bootResult struct {
	console string
	wall    time.Duration // qemu start to the marker line
	uptime  float64       // guest uptime at the marker
	root    string        // the root mount at the marker: SOURCE,TYPE,OPTIONS
}

var bootMarker = regexp.MustCompile(`CAMOUNT-BOOT-MARKER uptime=([0-9.]+) root=(\S*)`)

// bootQemu runs qemu (TCG) until the guest powers off or timeout passes,
// and returns the console. With wantMarker it fails the test unless the
// marker appeared and qemu exited by itself.
func bootQemu(t *testing.T, k *bootKernel, initrd, cmdline string, timeout time.Duration, wantMarker bool, extra ...string) *bootResult {
	t.Helper()
	// A virtio-rng device, as cloud VMs have (bench/boot.sh says why).
	args := append([]string{"-accel", "tcg", "-smp", "2", "-m", "1024",
		"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio", "-device", "virtio-rng-pci",
		"-kernel", k.kernel, "-initrd", initrd, "-append", "console=ttyS0 no_timer_check " + cmdline}, extra...)
	var ctx context.Context
	var out *markerWriter
	var err error
	for attempt := 1; ; attempt++ {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
		cmd.WaitDelay = 5 * time.Second
		out = &markerWriter{start: time.Now()}
		cmd.Stdout, cmd.Stderr = out, out
		// The guest kernel must start the initramfs within earlyStall.
		var stalled atomic.Bool
		watch := time.AfterFunc(earlyStall, func() {
			if !strings.Contains(out.String(), initStarted) {
				stalled.Store(true)
				cancel()
			}
		})
		err = cmd.Run()
		watch.Stop()
		if !stalled.Load() {
			break
		}
		if attempt == 2 {
			t.Fatalf("the guest kernel did not start the initramfs within %v, twice; console:\n%s", earlyStall, tail(out.String(), 3000))
		}
		t.Logf("the guest kernel stalled before starting the initramfs (no %q within %v; nothing of camount had run), booting again; its console ended:\n%s",
			initStarted, earlyStall, tail(out.String(), 600))
	}
	r := &bootResult{console: out.String(), wall: out.at}
	if p := os.Getenv("CAMOUNT_VM_CONSOLE"); p != "" {
		os.WriteFile(fmt.Sprintf("%s.%s.%d", p, strings.ReplaceAll(t.Name(), "/", "-"), time.Now().Unix()), []byte(r.console), 0o644)
	}
	m := bootMarker.FindStringSubmatch(r.console)
	if m != nil {
		r.uptime, _ = strconv.ParseFloat(m[1], 64)
		r.root = m[2]
	}
	if !wantMarker {
		if ctx.Err() != nil {
			t.Fatalf("VM still running after %v; console:\n%s", timeout, tail(r.console, 6000))
		}
		return r
	}
	switch {
	case ctx.Err() != nil:
		t.Fatalf("VM did not power off within %v; console:\n%s", timeout, tail(r.console, 6000))
	case err != nil:
		t.Fatalf("qemu: %v; console:\n%s", err, tail(r.console, 6000))
	case m == nil:
		t.Fatalf("no boot marker on the console:\n%s", tail(r.console, 6000))
	}
	if !strings.Contains(r.console, "reboot: Power down") {
		t.Errorf("the guest did not power off cleanly; console:\n%s", tail(r.console, 4000))
	}
	return r
}

// markerWriter collects the console and notes when the marker appeared.
type markerWriter struct {
	mu    sync.Mutex
	b     bytes.Buffer
	start time.Time
	at    time.Duration
}

func (w *markerWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if w.at == 0 && bytes.Contains(w.b.Bytes(), []byte("CAMOUNT-BOOT-MARKER")) {
		w.at = time.Since(w.start)
	}
	return len(p), nil
}

func (w *markerWriter) String() string { w.mu.Lock(); defer w.mu.Unlock(); return w.b.String() }

// initStarted is what the guest kernel prints as it starts the
// initramfs (~5 s of guest time, a few seconds of wall time under TCG).
// earlyStall bounds the wait for it: once in CI the guest kernel hung at
// 1.9 s of uptime (the last console line "IP idents hash table entries")
// until bootTimeout, before any of camount ran. A boot stalled so is
// tried once more, and said in the test's log.
const (
	initStarted = "Run /init as init process"
	earlyStall  = 2 * time.Minute
)

// bootTimeout bounds one TCG boot on a loaded machine (a hang guard, not a
// timing assertion).
const bootTimeout = 8 * time.Minute

// TestBootDebianNBDClient boots the Debian image as qemu's root disk
// through qemu's NBD client, served by camount nbd from nginx, recording a
// profile; the guest must reach multi-user.target with /dev/vda as its
// read-only root, and the boot must fetch only part of the store. With
// CAMOUNT_TEST_LONG it boots again with that profile.
func TestBootDebianNBDClient(t *testing.T) {
	k := findBootKernel(t)
	img := debianBootImage(t)
	ng := startNginx(t, img.dir, nil)
	work := t.TempDir()
	prof := filepath.Join(work, "boot.profile")
	boot := func(name string, extra ...string) (*bootResult, statsJSON) {
		stats := filepath.Join(work, name+".stats.json")
		s := startNBD(t, "tcp", append([]string{"--name=os", "--store=" + ng.URL + "/os.castr", "--stats-json=" + stats}, extra...), ng.URL+"/os.caibx")
		r := bootQemu(t, k, k.initrd, "root=/dev/vda ro panic=-1", bootTimeout, true,
			"-drive", "file="+s.uris[0]+",format=raw,if=virtio,readonly=on")
		s.stop(t)
		st := readStats(t, stats)
		t.Logf("%s: marker at uptime %.1fs, %.1fs wall; fetched %d chunks, %.1f MiB of the store's %d chunks, %.1f MiB (foreground %d)",
			name, r.uptime, r.wall.Seconds(), st.FetchedChunks, float64(st.FetchedBytes)/(1<<20), img.chunks, float64(img.storeBytes)/(1<<20), st.Priorities["foreground"].Chunks)
		if !strings.HasPrefix(r.root, "/dev/vda,ext4,ro") {
			t.Errorf("%s: the guest's root is %q, want /dev/vda,ext4,ro", name, r.root)
		}
		checkGuestUnits(t, r.console)
		if st.FetchedChunks <= 0 || st.FetchedBytes > img.storeBytes/2 {
			t.Errorf("%s: fetched %d chunks, %d bytes of a %d-byte store; want some, and less than half", name, st.FetchedChunks, st.FetchedBytes, img.storeBytes)
		}
		return r, st
	}
	boot("first", "--record-profile="+prof)
	b, err := os.ReadFile(prof)
	if err != nil || len(b) == 0 {
		t.Fatalf("--record-profile wrote no profile: %v", err)
	}
	if os.Getenv("CAMOUNT_TEST_LONG") == "" {
		return
	}
	_, st := boot("profiled", "--prefetch-profile="+prof)
	if st.PrefetchUsed == 0 {
		t.Errorf("the profiled boot used no prefetched chunk")
	}
}

// initramfsConf is the mkinitramfs configuration of the camount boots: a
// small module list (the virtio devices qemu gives, ext4, nbd).
const initramfsConf = `MODULES=list
BUSYBOX=y
COMPRESS=gzip
COMPRESSLEVEL=1
`

// makeCamountInitramfs runs mkinitramfs with contrib/initramfs-tools and a
// static camount, and returns the initrd path.
func makeCamountInitramfs(t *testing.T, k *bootKernel) string {
	t.Helper()
	return makeCamountInitramfsWith(t, k, true)
}

// makeCamountInitramfsWith: withNBD false leaves nbd.ko out (the hook's
// manual_add_modules line removed), for the missing-module failure.
func makeCamountInitramfsWith(t *testing.T, k *bootKernel, withNBD bool) string {
	t.Helper()
	needCmd(t, "mkinitramfs")
	dir := t.TempDir()
	bin, err := staticCamount()
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "conf")
	for _, d := range []string{"conf.d", "hooks", "scripts/local-top"} {
		os.MkdirAll(filepath.Join(conf, d), 0o755)
	}
	os.WriteFile(filepath.Join(conf, "initramfs.conf"), []byte(initramfsConf), 0o644)
	os.WriteFile(filepath.Join(conf, "conf.d", "camount"), []byte("CAMOUNT=y\n"), 0o644)
	copyFile(t, "../contrib/initramfs-tools/hooks/camount", filepath.Join(conf, "hooks", "camount"))
	// The machine's own drivers, as a user lists them; nbd and virtio_rng
	// come from the hook alone, as they do for a user.
	modules := "virtio_pci\nvirtio_net\nvirtio_blk\next4\ncrc32c_generic\n"
	if !withNBD {
		hook := filepath.Join(conf, "hooks", "camount")
		b, _ := os.ReadFile(hook)
		os.WriteFile(hook, []byte(strings.ReplaceAll(string(b), "manual_add_modules nbd", ":")), 0o755)
	}
	os.WriteFile(filepath.Join(conf, "modules"), []byte(modules), 0o644)
	copyFile(t, "../contrib/initramfs-tools/scripts/local-top/camount", filepath.Join(conf, "scripts", "local-top", "camount"))
	initrd := filepath.Join(dir, "initrd.img")
	cmd := exec.Command("mkinitramfs", "-d", conf, "-o", initrd, k.kver)
	cmd.Env = append(os.Environ(), "CAMOUNT_BINARY="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkinitramfs: %v\n%s", err, out)
	}
	out := runCmd(t, "lsinitramfs", initrd)
	for _, want := range []string{"bin/camount", "bin/@camount", "scripts/local-top/camount", "/nbd.ko", "/virtio-rng.ko"} {
		if !strings.Contains(out, want) && (withNBD || want != "/nbd.ko") {
			t.Fatalf("the initramfs has no %s", want)
		}
	}
	if !withNBD && strings.Contains(out, "/nbd.ko") {
		t.Fatalf("the initramfs has nbd.ko")
	}
	return initrd
}

// guestNet is qemu's user networking: the host's 127.0.0.1 is 10.0.2.2.
var guestNet = []string{"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"}

// guestURL is what the guest calls the host's loopback URL u.
func guestURL(u string) string { return strings.Replace(u, "127.0.0.1", "10.0.2.2", 1) }

// TestBootDebianNBD0 boots the Debian image from /dev/nbd0 in the guest:
// the kernel command line root=camount:URL makes the initramfs (Debian's
// initramfs-tools with contrib/initramfs-tools) bring up the network and
// run camount mkdev as @camount; systemd boots from /dev/nbd0, the serving
// process is still alive (argv[0] '@camount') when multi-user.target is
// reached, and the guest powers off cleanly without I/O errors on nbd0.
func TestBootDebianNBD0(t *testing.T) {
	k := findBootKernel(t)
	img := debianBootImage(t)
	initrd := makeCamountInitramfs(t, k)
	ng := startNginx(t, img.dir, nil)
	u := guestURL(ng.URL)
	r := bootQemu(t, k, initrd, "root=camount:"+u+"/os.caibx camount.store="+u+"/os.castr ip=dhcp panic=-1", bootTimeout, true, guestNet...)
	reqs := ng.chunkRequests(t)
	t.Logf("nbd0 boot: marker at uptime %.1fs, %.1fs wall; %d chunk requests to nginx (store: %d chunks, %.1f MiB)",
		r.uptime, r.wall.Seconds(), reqs, img.chunks, float64(img.storeBytes)/(1<<20))
	if !strings.HasPrefix(r.root, "/dev/nbd0,ext4,ro") {
		t.Errorf("the guest's root is %q, want /dev/nbd0,ext4,ro", r.root)
	}
	checkGuestUnits(t, r.console)
	if !strings.Contains(r.console, "CAMOUNT-CHECK root-daemon pid=") || !strings.Contains(r.console, "argv=@camount mkdev") {
		t.Errorf("no @camount mkdev process in the booted system; console:\n%s", tail(r.console, 6000))
	}
	for _, bad := range []string{"I/O error", "camount: cannot boot"} {
		if strings.Contains(r.console, bad) {
			t.Errorf("console shows %q:\n%s", bad, tail(r.console, 6000))
		}
	}
	if reqs <= 0 || reqs >= img.chunks {
		t.Errorf("%d chunk requests for a %d-chunk store; want some, and not all", reqs, img.chunks)
	}
}

// withFiles returns initrd with files appended as a second (newc cpio)
// archive, which the kernel unpacks over the first.
func withFiles(t *testing.T, initrd string, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for name, b := range files {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	extra := filepath.Join(dir, "extra.cpio")
	if err := writeCpio(extra, root); err != nil {
		t.Fatal(err)
	}
	a, err := os.ReadFile(initrd)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(extra)
	// Compressed, as the archive before it (after a compressed archive the
	// kernel reports an uncompressed one as "invalid magic").
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(b)
	zw.Close()
	out := filepath.Join(dir, "initrd.img")
	if err := os.WriteFile(out, append(a, z.Bytes()...), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

var profileLine = regexp.MustCompile(`^(camount-profile 1|index sha256:[0-9a-f]{64}|chunks [0-9]+|[0-9]+)$`)

var consoleProfile = regexp.MustCompile(`(?s)CAMOUNT-PROFILE-BEGIN\r?\n(.*?)CAMOUNT-PROFILE-END`)

// TestBootDebianNBD0Profile (make test-long) boots from /dev/nbd0 recording
// a profile in the guest (camount.args=--record-profile=...; the image's
// boot check has it written and prints it), then boots again with that
// profile in the initramfs (camount.profile=): the second boot must fetch
// at least the profile's chunks and reach the marker.
func TestBootDebianNBD0Profile(t *testing.T) {
	if os.Getenv("CAMOUNT_TEST_LONG") == "" {
		t.Skip("CAMOUNT_TEST_LONG (make test-long): two more TCG boots")
	}
	k := findBootKernel(t)
	img := debianBootImage(t)
	initrd := makeCamountInitramfs(t, k)
	ng := startNginx(t, img.dir, nil)
	u := guestURL(ng.URL)
	cmdline := "root=camount:" + u + "/os.caibx camount.store=" + u + "/os.castr ip=dhcp panic=-1"
	r := bootQemu(t, k, initrd, cmdline+" camount.args=--record-profile=/camount-boot.profile", bootTimeout, true, guestNet...)
	first := ng.chunkRequests(t)
	m := consoleProfile.FindStringSubmatch(r.console)
	if m == nil {
		t.Fatalf("the guest printed no profile; console:\n%s", tail(r.console, 6000))
	}
	// Keep the profile's lines (systemd may write status lines in between).
	var keep []string
	for _, l := range strings.Split(strings.ReplaceAll(m[1], "\r", ""), "\n") {
		if profileLine.MatchString(l) {
			keep = append(keep, l)
		}
	}
	prof := []byte(strings.Join(keep, "\n") + "\n")
	if err := os.WriteFile(filepath.Join(t.TempDir(), "boot.profile"), prof, 0o644); err != nil {
		t.Fatal(err)
	}
	n := strings.Count(string(prof), "\n") - 3
	t.Logf("first nbd0 boot: uptime %.1fs, %.1fs wall, %d chunk requests; profile of %d chunks", r.uptime, r.wall.Seconds(), first, n)
	if n <= 0 {
		t.Fatalf("empty profile:\n%s", prof)
	}
	withProf := withFiles(t, initrd, map[string][]byte{"etc/camount/boot.profile": prof})
	r2 := bootQemu(t, k, withProf, cmdline+" camount.profile=/etc/camount/boot.profile", bootTimeout, true, guestNet...)
	second := ng.chunkRequests(t) - first
	t.Logf("profiled nbd0 boot: uptime %.1fs, %.1fs wall, %d chunk requests", r2.uptime, r2.wall.Seconds(), second)
	if !strings.HasPrefix(r2.root, "/dev/nbd0,ext4,ro") {
		t.Errorf("the guest's root is %q, want /dev/nbd0,ext4,ro", r2.root)
	}
	if !strings.Contains(r2.console, "--prefetch-profile=/etc/camount/boot.profile") {
		t.Errorf("the root daemon did not get the profile; console:\n%s", tail(r2.console, 4000))
	}
	if second < n {
		t.Errorf("the profiled boot made %d chunk requests, fewer than the profile's %d chunks", second, n)
	}
}

// TestBootDebianNBD0BadInput (make test-long): what the initramfs does when
// it cannot boot from camount — a wrong index URL, an unreachable store, a
// corrupt chunk at the start of the file system, no nbd.ko: one line
// "camount: cannot boot from URL: CAUSE" on the console, then the
// initramfs's panic (with panic=-1: an immediate reboot, which ends qemu),
// never a silent hang.
func TestBootDebianNBD0BadInput(t *testing.T) {
	if os.Getenv("CAMOUNT_TEST_LONG") == "" {
		t.Skip("CAMOUNT_TEST_LONG (make test-long): four more TCG boots")
	}
	k := findBootKernel(t)
	img := debianBootImage(t)
	initrd := makeCamountInitramfs(t, k)
	noNBD := makeCamountInitramfsWith(t, k, false)
	// A copy of the store whose chunk holding the ext4 superblock is damaged.
	bad := t.TempDir()
	copyTree(t, img.store, filepath.Join(bad, "os.castr"))
	copyFile(t, img.caibx, filepath.Join(bad, "os.caibx"))
	x := readIndex(t, img.caibx)
	damageChunk(t, filepath.Join(bad, "os.castr"), x.Chunks[x.Find(1024)])
	ng := startNginx(t, img.dir, nil)
	ngBad := startNginx(t, bad, nil)
	u, ub := guestURL(ng.URL), guestURL(ngBad.URL)
	for _, c := range []struct {
		name, initrd, cmdline, want string
	}{
		{"wrong-url", initrd, "root=camount:" + u + "/nosuch.caibx camount.store=" + u + "/os.castr", "nosuch.caibx"},
		{"unreachable-store", initrd, "root=camount:http://10.0.2.2:1/os.caibx camount.args=--http-retries=1", "10.0.2.2:1"},
		{"corrupt-chunk", initrd, "root=camount:" + ub + "/os.caibx camount.store=" + ub + "/os.castr", "reading /dev/nbd"},
		{"no-nbd-module", noNBD, "root=camount:" + u + "/os.caibx camount.store=" + u + "/os.castr", "no NBD support"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := bootQemu(t, k, c.initrd, c.cmdline+" ip=dhcp panic=-1", 6*time.Minute, false, guestNet...)
			var line string
			for _, l := range strings.Split(r.console, "\n") {
				if strings.HasPrefix(strings.TrimSpace(l), "camount: cannot boot from") {
					line = strings.TrimSpace(l)
					break
				}
			}
			t.Logf("console: %s", line)
			if line == "" || !strings.Contains(line, c.want) {
				t.Errorf("want a line \"camount: cannot boot from ...\" naming %q; console:\n%s", c.want, tail(r.console, 5000))
			}
			if bootMarker.MatchString(r.console) {
				t.Errorf("the guest booted")
			}
		})
	}
}
