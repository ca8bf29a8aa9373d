package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMountHelper runs camount as mount.camount through the real mount(8):
// `mount -t camount -o store=URL,allow_other INDEX DIR` and an fstab line
// (mount -T FSTAB DIR) return once the tree is mounted, the files read
// right, umount(8) unmounts and the background process exits; a bad option
// fails naming it. mount(8) finds helpers only in /sbin (util-linux ignores
// $PATH for them), so the test runs mount(8) in a private mount namespace
// whose /sbin has the binary under test on top as mount.camount (see
// helperNamespace): it always tests this build, whatever is installed, and
// never touches the host's /sbin.
func TestMountHelper(t *testing.T) {
	needRoot(t)
	needCmd(t, "mount", "umount", "fusermount3", "unshare", "nsenter")
	ns := helperNamespace(t)

	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	files := map[string][]byte{"a.txt": []byte("hello from fstab\n"), "sub/big.bin": randomBytes(3<<20, 5)}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(src, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv := filepath.Join(dir, "srv")
	os.MkdirAll(srv, 0o755)
	index := filepath.Join(srv, "tree.caidx")
	camount(t, "make", "--store="+filepath.Join(srv, "tree.castr"), index, src)
	ng := startNginx(t, srv, nil)
	store := ng.URL + "/tree.castr"

	check := func(mnt string) {
		t.Helper()
		if !ns.mounted(mnt) {
			t.Fatalf("%s is not a mount point after mount returned", mnt)
		}
		for n, want := range files {
			got, err := os.ReadFile(ns.path(filepath.Join(mnt, n)))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s/%s: %d bytes, %v; want %d bytes", mnt, n, len(got), err, len(want))
			}
		}
		if err := os.WriteFile(ns.path(filepath.Join(mnt, "new")), nil, 0o644); err == nil {
			t.Errorf("creating a file in %s succeeded", mnt)
		}
		if exe, want := servingExe(mnt), evalPath(camountBin); exe != want {
			t.Errorf("%s is served by %q (%s), not the binary under test %s", mnt, exe, servingProcess(mnt), want)
		}
	}
	unmount := func(mnt string) {
		t.Helper()
		ns.run(t, "umount", mnt)
		deadline := time.Now().Add(20 * time.Second)
		for servingProcess(mnt) != "" {
			if time.Now().After(deadline) {
				t.Fatalf("the camount process serving %s still runs 20 s after umount: %s", mnt, servingProcess(mnt))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// mount -t camount -o ...
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	t.Cleanup(func() { ns.cmd("umount", "-l", mnt).Run() })
	ns.run(t, "mount", "-t", "camount", "-o", "ro,store="+store+",allow_other,cache-size=64M", index, mnt)
	check(mnt)
	unmount(mnt)

	// An fstab line.
	mnt2 := filepath.Join(dir, "fstab-mnt")
	os.Mkdir(mnt2, 0o755)
	t.Cleanup(func() { ns.cmd("umount", "-l", mnt2).Run() })
	fstab := filepath.Join(dir, "fstab")
	line := index + " " + mnt2 + " camount ro,_netdev,nofail,store=" + store + " 0 0\n"
	os.WriteFile(fstab, []byte(line), 0o644)
	ns.run(t, "mount", "-T", fstab, mnt2)
	check(mnt2)
	unmount(mnt2)

	// A bad option: mount fails and says which.
	out, err := ns.cmd("mount", "-t", "camount", "-o", "store="+store+",no_such_option=1", index, mnt).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no-such-option") {
		t.Errorf("mount with a bad option: %v, %q; want a failure naming no-such-option", err, out)
	}
	if ns.mounted(mnt) {
		t.Errorf("%s mounted despite the bad option", mnt)
	}
}

// servingProcess returns the command line of a camount process whose
// arguments name mnt, or "".
func servingProcess(mnt string) string {
	ps, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range ps {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) > 1 && args[len(args)-1] == mnt && strings.Contains(args[0], "camount") {
			return strings.Join(args, " ")
		}
	}
	return ""
}
