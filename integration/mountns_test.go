package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// mountNS is a private mount namespace held open by a sleeping process, in
// which mount(8)'s helper directory (/sbin, symlinks resolved) has the
// binary under test on top as mount.camount (a read-only overlay: the
// rest of /sbin stays as it is). Commands run in it through nsenter; the
// test reads its mounts through /proc/PID/root. Mounts made in it are
// invisible to the host and vanish with it.
type mountNS struct{ pid int }

// helperNamespace makes the namespace and removes it at the end of the test
// (unmounting what is left lazily, then ending the holder).
func helperNamespace(t *testing.T) *mountNS {
	t.Helper()
	sbin, err := filepath.EvalSymlinks("/sbin")
	if err != nil {
		t.Skipf("no /sbin: %v", err)
	}
	top := t.TempDir()
	if err := os.Symlink(camountBin, filepath.Join(top, "mount.camount")); err != nil {
		t.Fatal(err)
	}
	// unshare execs sh, and sh execs sleep: the holder's pid is the one
	// exec.Cmd started, inside the namespace.
	holder := exec.Command("unshare", "--mount", "--propagation=private", "sh", "-c",
		`mount -t overlay camount-test -o "lowerdir=$1:$2" "$2" || mount --bind "$3" "$2/mount.camount" || exit 1
echo ready
exec sleep 3600`, "sh", top, sbin, camountBin)
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	holder.Stderr = &stderr
	if err := holder.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ready <- sc.Scan() && sc.Text() == "ready"
	}()
	select {
	case ok := <-ready:
		if !ok {
			holder.Wait()
			// Neither overlayfs nor an existing helper to bind over.
			t.Skipf("cannot put mount.camount into %s in a private mount namespace (no overlayfs?): %s", sbin, stderr.String())
		}
	case <-time.After(30 * time.Second):
		holder.Process.Kill()
		holder.Wait()
		t.Fatalf("unshare did not set up the namespace within 30 s: %s", stderr.String())
	}
	ns := &mountNS{pid: holder.Process.Pid}
	t.Cleanup(func() {
		holder.Process.Kill()
		holder.Wait()
	})
	if got, err := os.Readlink(ns.path(filepath.Join(sbin, "mount.camount"))); err != nil && !ns.mounted(filepath.Join(sbin, "mount.camount")) {
		t.Fatalf("no mount.camount in the namespace's %s: %v", sbin, err)
	} else if err == nil && got != camountBin {
		t.Fatalf("the namespace's mount.camount is %q, want %q", got, camountBin)
	}
	return ns
}

// cmd returns a command running name in the namespace.
func (n *mountNS) cmd(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--mount=/proc/" + strconv.Itoa(n.pid) + "/ns/mnt", "--", name}, args...)...)
}

// run runs name in the namespace and fails the test on error.
func (n *mountNS) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	c := n.cmd(name, args...)
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s (in the test's mount namespace): %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// path is p as seen in the namespace, for the test's own reads.
func (n *mountNS) path(p string) string {
	return fmt.Sprintf("/proc/%d/root%s", n.pid, p)
}

// mounted reports whether p is a mount point in the namespace.
func (n *mountNS) mounted(p string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", n.pid))
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.ReplaceAll(f[4], `\040`, " ") == p {
			return true
		}
	}
	return false
}

// servingExe returns the executable of the camount process serving mnt
// (servingProcess), or "".
func servingExe(mnt string) string {
	ps, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range ps {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) > 1 && args[len(args)-1] == mnt && strings.Contains(args[0], "camount") {
			exe, _ := os.Readlink(filepath.Join(filepath.Dir(p), "exe"))
			return exe
		}
	}
	return ""
}

// evalPath is p with symlinks resolved (p itself if that fails).
func evalPath(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}
