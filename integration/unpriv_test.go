package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// asNobody returns a command running name as the unprivileged user nobody
// (setpriv: no capabilities, no supplementary groups).
func asNobody(name string, args ...string) *exec.Cmd {
	return exec.Command("setpriv", append([]string{"--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all", name}, args...)...)
}

// TestUnprivileged mounts, reads and unmounts an image as the user nobody
// (FUSE through the setuid fusermount3, no root), and checks that mkdev
// as nobody says in one line that it needs root (issue 15.4).
func TestUnprivileged(t *testing.T) {
	needRoot(t) // to become nobody
	needFUSE(t)
	needCmd(t, "setpriv", "casync")
	if _, err := exec.Command("id", "nobody").Output(); err != nil {
		t.Skip("no user nobody")
	}
	// Everything nobody touches must be reachable by it: a world-readable
	// directory outside the test's private temp dirs.
	base, err := os.MkdirTemp("", "camount-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	bin := filepath.Join(base, "camount")
	runCmd(t, "cp", camountBin, bin)
	data := randomBytes(3<<20, 5)
	src := filepath.Join(base, "img.raw")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	index := filepath.Join(base, "img.caibx")
	runCmd(t, "casync", "make", "--store="+filepath.Join(base, "default.castr"), index, src)
	runCmd(t, "chmod", "-R", "a+rX", base)
	mnt := filepath.Join(base, "mnt")
	os.Mkdir(mnt, 0o755)
	runCmd(t, "chown", "nobody", mnt)

	m := asNobody(bin, "mount", index, mnt)
	var stderr syncBuffer
	m.Stderr = &stderr
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Wait() }()
	t.Cleanup(func() {
		if isMounted(mnt) {
			exec.Command("fusermount3", "-uz", mnt).Run()
		}
		m.Process.Kill()
	})
	deadline := time.Now().Add(30 * time.Second)
	for !isMounted(mnt) {
		select {
		case err := <-done:
			t.Fatalf("camount mount as nobody exited: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no mount as nobody after 30s:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Without allow_other only nobody can read the mount.
	got, err := asNobody("cat", filepath.Join(mnt, "img")).Output()
	if err != nil {
		t.Fatalf("reading the mount as nobody: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("WRONG DATA read as nobody")
	}
	if out, err := asNobody(bin, "umount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("camount umount as nobody: %v\n%s", err, out)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("camount mount as nobody: %v\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("camount mount did not exit after the unmount")
	}
	if isMounted(mnt) {
		t.Fatal("still mounted")
	}

	// mkdev cannot work without CAP_SYS_ADMIN: one clear line, at once.
	out, err := asNobody(bin, "mkdev", index).CombinedOutput()
	if err == nil {
		t.Fatal("mkdev as nobody succeeded")
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "needs root (CAP_SYS_ADMIN)") {
		t.Fatalf("mkdev as nobody: want one line saying it needs root (CAP_SYS_ADMIN), got:\n%s", out)
	}
}
