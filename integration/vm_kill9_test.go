package integration

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// vmKill9Checks runs in the VM guest (TestVMNBD): camount mkdev with a
// disk cache is killed with SIGKILL while a reader reads its /dev/nbdN and
// chunks are being written to the cache; then `camount cache verify` finds
// nothing corrupt, and a new mkdev on the same cache serves exact bytes
// (issue 15.6). The reader of the dead device gets an error (at the
// latest when camount rmdev disconnects it), it does not hang.
func vmKill9Checks(r *vmReport, exp *vmExpect) {
	const cdir = "/tmp/kill9-cache"
	dev, cmd, done, err := vmStartMkdevProc("--cache=" + cdir)
	if err != nil {
		r.fail("mkdev-kill9-device", "%v", err)
		return
	}
	read := make(chan error, 1)
	go func() {
		_, _, err := vmHashFile(dev)
		read <- err
	}()
	// Kill while the cache fills (a hang guard, not a timing check): the
	// image's data (the rest is zeros, never cached) is 23 chunks.
	for deadline := time.Now().Add(90 * time.Second); vmCountFiles(cdir) < 8; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			r.fail("mkdev-kill9-device", "%s holds %d files 90 s after mkdev made %s", cdir, vmCountFiles(cdir), dev)
			cmd.Process.Kill()
			return
		}
	}
	files := vmCountFiles(cdir)
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
	fmt.Printf("VMTEST info: killed camount mkdev (%s) with SIGKILL at %d files in the cache\n", dev, files)
	// New reads of the dead device fail at once; reads the kernel had
	// already sent stay queued until the device is disconnected (the nbd
	// driver without a request timeout, which camount does not set: a
	// timeout would kill the device under a slow store), and rmdev then
	// fails them.
	// A read sent after the kill fails at once.
	newRead := make(chan error, 1)
	go func() {
		fd, err := syscall.Open(dev, syscall.O_RDONLY|syscall.O_DIRECT, 0)
		if err != nil {
			newRead <- err
			return
		}
		defer syscall.Close(fd)
		buf, _ := syscall.Mmap(-1, 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
		_, err = syscall.Pread(fd, buf, exp.Size/2&^4095)
		newRead <- err
	}()
	select {
	case err := <-newRead:
		if err == nil {
			r.fail("mkdev-kill9-new-read", "a read of %s after mkdev was killed succeeded", dev)
		} else {
			r.ok("mkdev-kill9-new-read", "a read of the dead %s fails: %v", dev, err)
		}
	case <-time.After(10 * time.Second):
		r.fail("mkdev-kill9-new-read", "a read of %s sent after mkdev was killed waits 10 s", dev)
	}
	var rerr error
	finished := false
	select {
	case rerr = <-read:
		finished = true
	case <-time.After(10 * time.Second):
		fmt.Printf("VMTEST info: a read of the dead %s waits 10 s after the kill; camount rmdev must release it\n", dev)
	}
	if out, err := exec.Command("/bin/camount", "rmdev", dev).CombinedOutput(); err != nil {
		fmt.Printf("VMTEST info: camount rmdev %s after kill -9: %v: %s\n", dev, err, out)
	}
	if !finished {
		select {
		case rerr = <-read:
			finished = true
		case <-time.After(60 * time.Second):
			r.fail("mkdev-kill9-reader", "a read of %s still hangs 60 s after mkdev was killed and camount rmdev %s", dev, dev)
		}
	}
	switch {
	case finished && rerr == nil:
		r.ok("mkdev-kill9-reader", "the read of %s finished before the kill took effect", dev)
	case finished:
		r.ok("mkdev-kill9-reader", "the read of the dead %s failed: %v", dev, rerr)
	}
	out, err := exec.Command("/bin/camount", "cache", "verify", cdir).CombinedOutput()
	if err == nil && !strings.Contains(string(out), " 0 corrupt") {
		err = fmt.Errorf("camount cache verify: %s", out)
	}
	r.check("mkdev-kill9-cache-verify", err, "%s", strings.TrimSpace(string(out)))

	// A new mkdev on the same cache serves the image exactly.
	dev2, cmd2, done2, err := vmStartMkdevProc("--cache=" + cdir)
	if err != nil {
		r.fail("mkdev-kill9-restart-bytes", "mkdev on the same cache: %v", err)
		return
	}
	sum, n, err := vmHashFile(dev2)
	if err == nil && (sum != exp.SHA256 || n != exp.Size) {
		err = fmt.Errorf("%s: %d bytes with sha256 %s, want %d bytes with %s", dev2, n, sum, exp.Size, exp.SHA256)
	}
	r.check("mkdev-kill9-restart-bytes", err, "%s on the same cache: %d bytes, sha256 %s", dev2, n, sum)
	cmd2.Process.Signal(syscall.SIGTERM)
	select {
	case <-done2:
	case <-time.After(30 * time.Second):
		cmd2.Process.Kill()
	}
	out, err = exec.Command("/bin/camount", "cache", "verify", cdir).CombinedOutput()
	if err == nil && !strings.Contains(string(out), " 0 corrupt") {
		err = fmt.Errorf("camount cache verify: %s", out)
	}
	r.check("mkdev-kill9-cache-after-restart", err, "%s", strings.TrimSpace(string(out)))
}

// vmStartMkdevProc starts camount mkdev --via=nbd of the guest's image with
// extra flags and returns the device it printed and the process (for
// SIGKILL; vmStartMkdev only stops it with SIGTERM); done is closed when the
// process has exited.
func vmStartMkdevProc(extra ...string) (string, *exec.Cmd, chan struct{}, error) {
	args := append([]string{"mkdev", "--via=nbd", "--store=/vm/disk.castr", "/vm/disk.caibx"}, extra...)
	cmd := exec.Command("/bin/camount", args...)
	cmd.Stderr = os.Stdout
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, nil, err
	}
	done := make(chan struct{})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		io.Copy(io.Discard, stdout)
		cmd.Wait()
		close(done)
	}()
	select {
	case dev := <-lines:
		if !regexp.MustCompile(`^/dev/nbd[0-9]+$`).MatchString(dev) {
			cmd.Process.Kill()
			return "", nil, nil, fmt.Errorf("camount mkdev printed %q, want /dev/nbdN", dev)
		}
		return dev, cmd, done, nil
	case <-done:
		return "", nil, nil, fmt.Errorf("camount mkdev %s exited: %v", strings.Join(extra, " "), cmd.ProcessState)
	case <-time.After(90 * time.Second):
		cmd.Process.Kill()
		return "", nil, nil, fmt.Errorf("no device 90 s after camount mkdev %s", strings.Join(extra, " "))
	}
}

// vmCountFiles counts the regular files under dir.
func vmCountFiles(dir string) int {
	n := 0
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n++
		}
		return nil
	})
	return n
}
