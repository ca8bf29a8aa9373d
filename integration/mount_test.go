package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/camount/camount/catar"
	"github.com/camount/camount/chunker"
)

// needFUSE skips a test on a machine without FUSE.
func needFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("/dev/fuse is absent: no FUSE on this machine")
	}
	needCmd(t, "fusermount3")
}

// syncBuffer is a bytes.Buffer safe for a process writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// mountProc is a running "camount mount".
type mountProc struct {
	cmd            *exec.Cmd
	mnt            string
	stdout, stderr *syncBuffer
	done           chan struct{}
	err            error // exit status, valid after done
}

// isMounted reports whether path is a mount point.
func isMounted(path string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.ReplaceAll(f[4], `\040`, " ") == path {
			return true
		}
	}
	return false
}

// mntOptions returns the mount options of the mount at path (from
// /proc/self/mounts).
func mntOptions(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 3 && f[1] == path {
			return f[3]
		}
	}
	t.Fatalf("%s is not in /proc/self/mounts", path)
	return ""
}

// startMount runs camount mount with args (the mountpoint last) and
// env, and waits until the kernel has the mount. The mount is always
// taken down in cleanup.
func startMount(t *testing.T, env []string, args ...string) *mountProc {
	t.Helper()
	m := &mountProc{mnt: args[len(args)-1], stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	m.cmd = exec.Command(camountBin, append([]string{"mount"}, args...)...)
	m.cmd.Stdout, m.cmd.Stderr = m.stdout, m.stderr
	m.cmd.Env = append(os.Environ(), env...)
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.err = m.cmd.Wait(); close(m.done) }()
	t.Cleanup(func() { m.kill(t) })
	deadline := time.Now().Add(30 * time.Second)
	// Ready: the kernel has the mount and camount printed its ready line.
	for !isMounted(m.mnt) || !strings.Contains(m.stdout.String(), "mounted") {
		select {
		case <-m.done:
			t.Fatalf("camount mount exited before mounting: %v\nstderr: %s", m.err, m.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no mount at %s after 30s; stderr: %s", m.mnt, m.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return m
}

// kill ends the mount whatever state it is in: SIGTERM, then a lazy
// unmount and SIGKILL if that does not work.
func (m *mountProc) kill(t *testing.T) {
	select {
	case <-m.done:
	default:
		m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(10 * time.Second):
			t.Errorf("camount mount did not exit within 10s of SIGTERM")
			exec.Command("fusermount3", "-uz", m.mnt).Run()
			m.cmd.Process.Kill()
			<-m.done
		}
	}
	if isMounted(m.mnt) {
		t.Errorf("%s still mounted after camount exited; detaching", m.mnt)
		exec.Command("fusermount3", "-uz", m.mnt).Run()
	}
}

// wait waits for the mount process to exit by itself and checks that it
// succeeded and left nothing mounted.
func (m *mountProc) wait(t *testing.T) {
	t.Helper()
	select {
	case <-m.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("camount mount still running 15s after unmount; stderr: %s", m.stderr)
	}
	if m.err != nil {
		t.Errorf("camount mount: %v\nstderr: %s", m.err, m.stderr)
	}
	if isMounted(m.mnt) {
		t.Errorf("%s is still mounted", m.mnt)
	}
}

// mntSetTime sets a path's mtime (and atime) without following symlinks.
func mntSetTime(t *testing.T, p string, ns int64) {
	t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(ns), unix.NsecToTimespec(ns)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

func mntRandom(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 99))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// mntFixture builds a tree with every entry type and exact metadata:
// files of several sizes and modes (setuid, setgid, 0000), directories
// (sticky, private, large, deep), symlinks (relative, absolute, dangling),
// a fifo, a socket, char and block devices, user xattrs, owners other than
// root and nanosecond mtimes.
func mntFixture(t *testing.T, root string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	w := func(p string, data []byte, mode os.FileMode) {
		t.Helper()
		must(os.WriteFile(filepath.Join(root, p), data, 0o644))
		must(os.Chmod(filepath.Join(root, p), mode))
	}
	for _, d := range []string{"dir", "dir/sub", "sticky", "private", "big", "devs", "names"} {
		must(os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	deep := root
	for i := 0; i < 20; i++ {
		deep = filepath.Join(deep, fmt.Sprintf("d%02d", i))
	}
	must(os.MkdirAll(deep, 0o755))
	must(os.WriteFile(filepath.Join(deep, "leaf"), []byte("deep leaf\n"), 0o644))
	w("empty", nil, 0o644)
	w("hello", []byte("hello\n"), 0o644)
	w("dir/random3m", mntRandom(3<<20+4321, 1), 0o640)
	w("dir/sub/200k", mntRandom(200000, 2), 0o600)
	w("setuid", []byte("#!/bin/sh\n"), 0o755|os.ModeSetuid)
	w("setgid", []byte("x"), 0o755|os.ModeSetgid)
	w("nothing", []byte("no permissions"), 0)
	w("private/secret", []byte("s3cret"), 0o600)
	must(os.Chmod(filepath.Join(root, "private"), 0o700))
	must(os.Chmod(filepath.Join(root, "sticky"), 0o777|os.ModeSticky))
	w("sticky/owned", []byte("owned by 1000"), 0o644)
	must(os.Lchown(filepath.Join(root, "sticky/owned"), 1000, 1001))
	must(os.Lchown(filepath.Join(root, "sticky"), 65534, 65534))
	for i := 0; i < 300; i++ {
		w(fmt.Sprintf("big/f%03d", i), []byte(strconv.Itoa(i*i)), 0o644)
	}
	w("names/with space", []byte("1"), 0o644)
	w("names/ünïcödé ✓", []byte("2"), 0o644)
	w("names/"+strings.Repeat("L", 255), []byte("3"), 0o644)
	w("names/-dash", []byte("4"), 0o644)
	must(os.Symlink("hello", filepath.Join(root, "link-rel")))
	must(os.Symlink("/etc/hostname", filepath.Join(root, "link-abs")))
	must(os.Symlink("does/not/exist", filepath.Join(root, "link-dangling")))
	must(os.Symlink("dir/sub", filepath.Join(root, "link-dir")))
	must(os.Lchown(filepath.Join(root, "link-rel"), 1000, 1000))
	must(unix.Mkfifo(filepath.Join(root, "devs/fifo"), 0o640))
	must(unix.Mknod(filepath.Join(root, "devs/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(filepath.Join(root, "devs/bigminor"), unix.S_IFCHR|0o600, int(unix.Mkdev(240, 300000))))
	must(unix.Mknod(filepath.Join(root, "devs/loop"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 200))))
	l, err := net.Listen("unix", filepath.Join(root, "devs/socket"))
	must(err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	must(unix.Setxattr(filepath.Join(root, "hello"), "user.greeting", []byte("bonjour"), 0))
	must(unix.Setxattr(filepath.Join(root, "hello"), "user.binary", []byte{0, 1, 2, 255}, 0))
	must(unix.Setxattr(filepath.Join(root, "dir"), "user.dir", []byte("a directory"), 0))
	must(unix.Setxattr(filepath.Join(root, "dir/sub"), "user.empty", nil, 0))
	// POSIX ACLs: a file with named entries (mask in the group bits), a
	// directory with an access and a default ACL.
	w("acl-file", []byte("acl"), 0o640)
	must(os.MkdirAll(filepath.Join(root, "acl-dir"), 0o750))
	runCmd(t, "setfacl", "-m", "u:1000:rw,g:1001:r", filepath.Join(root, "acl-file"))
	runCmd(t, "setfacl", "-m", "u:1002:rx", "-d", "-m", "u:1000:rwx,g::rx,o::-", filepath.Join(root, "acl-dir"))
	// mtimes last, deepest first, so creating children does not change them.
	var paths []string
	filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			paths = append(paths, p)
		}
		return nil
	})
	for i := len(paths) - 1; i >= 0; i-- {
		mntSetTime(t, paths[i], 1600000000_123456789+int64(i)*1_000_000_007)
	}
	mntSetTime(t, filepath.Join(root, "empty"), -1_500_000_001) // before 1970
}

// mntMeta describes every entry below root, one line each: path, type and
// mode, owner, size (not for directories), mtime in ns, device number,
// link count and st_blocks (not for directories: catar stores neither,
// see vfs), symlink target and user xattrs.
func mntMeta(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		line := fmt.Sprintf("%s mode=%o uid=%d gid=%d mtime=%d.%09d", rel, st.Mode, st.Uid, st.Gid, st.Mtim.Sec, st.Mtim.Nsec)
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			line += fmt.Sprintf(" size=%d nlink=%d", st.Size, st.Nlink)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			line += fmt.Sprintf(" blocks=%d", st.Blocks)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR, unix.S_IFBLK:
			line += fmt.Sprintf(" rdev=%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + target
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			sz, err := unix.Listxattr(p, nil)
			if err != nil {
				return fmt.Errorf("listxattr %s: %w", p, err)
			}
			buf := make([]byte, sz)
			sz, _ = unix.Listxattr(p, buf)
			names := strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00")
			sort.Strings(names)
			for _, n := range names {
				if !strings.HasPrefix(n, "user.") {
					continue
				}
				v := make([]byte, 256)
				vn, err := unix.Getxattr(p, n, v)
				if err != nil {
					return fmt.Errorf("getxattr %s %s: %w", p, n, err)
				}
				line += fmt.Sprintf(" %s=%q", n, v[:vn])
			}
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// mntDiff runs diff -r; fifos and sockets, which diff cannot compare,
// must only be reported as being of the same kind on both sides.
func mntDiff(t *testing.T, a, b string, exclude ...string) {
	t.Helper()
	args := []string{"-r", "--no-dereference"}
	for _, x := range exclude {
		args = append(args, "-x", x)
	}
	out, err := exec.Command("diff", append(args, a, b)...).CombinedOutput()
	if err == nil {
		return
	}
	same := regexp.MustCompile(`^File .* is a (fifo|socket|character special file|block special file) while file .* is a (fifo|socket|character special file|block special file)$`)
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		m := same.FindStringSubmatch(l)
		if m == nil || m[1] != m[2] {
			t.Fatalf("diff -r %s %s:\n%s", a, b, out)
		}
	}
}

// mntPackDigest packs dir with casync make --with=fuse (or camount make)
// into a .catar and returns the digest it prints.
func mntPackDigest(t *testing.T, bin, dir, out string) string {
	t.Helper()
	o := runCmd(t, bin, "make", "--with=fuse", out, dir)
	return strings.TrimSpace(o)
}

func TestMountTreeExact(t *testing.T) {
	needFUSE(t)
	needRoot(t)
	needCmd(t, "casync", "diff", "getfattr", "getfacl", "setfacl")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	mntFixture(t, src)
	store := filepath.Join(dir, "store.castr")
	runCmd(t, "casync", "make", "--store="+store, filepath.Join(dir, "tree.caidx"), src)
	runCmd(t, "casync", "make", filepath.Join(dir, "tree.catar"), src)

	for _, index := range []string{"tree.caidx", "tree.catar"} {
		t.Run(index, func(t *testing.T) {
			mnt := filepath.Join(dir, "mnt-"+index)
			startMount(t, nil, "--store="+store, filepath.Join(dir, index), mnt)
			mntDiff(t, src, mnt)
			want, got := mntMeta(t, src), mntMeta(t, mnt)
			if strings.Join(want, "\n") != strings.Join(got, "\n") {
				t.Errorf("metadata differs:\n%s", lineDiff(want, got))
			}
			// getfattr -d lists the user xattrs.
			out := runCmd(t, "getfattr", "-d", filepath.Join(mnt, "hello"))
			if !strings.Contains(out, `user.greeting="bonjour"`) {
				t.Errorf("getfattr -d: %s", out)
			}
			// Packing the mounted tree gives the source's digest.
			d1 := mntPackDigest(t, "casync", src, filepath.Join(dir, "src-"+index+".catar"))
			d2 := mntPackDigest(t, "casync", mnt, filepath.Join(dir, "mnt-"+index+".catar"))
			if d1 == "" || d1 != d2 {
				t.Errorf("casync make --with=fuse: source %q, mount %q", d1, d2)
			}
			d3 := mntPackDigest(t, camountBin, mnt, filepath.Join(dir, "camount-"+index+".catar"))
			if d3 != d1 {
				t.Errorf("camount make --with=fuse of the mount: %q, casync of the source %q", d3, d1)
			}
			// With casync's default features (ACLs, xattrs, chattr flags,
			// file capabilities...) too.
			d4 := strings.TrimSpace(runCmd(t, "casync", "make", filepath.Join(dir, "srcbest-"+index+".catar"), src))
			d5 := strings.TrimSpace(runCmd(t, "casync", "make", filepath.Join(dir, "mntbest-"+index+".catar"), mnt))
			if d4 != d5 {
				t.Errorf("casync make (default features): source %q, mount %q", d4, d5)
			}
			// getfacl shows the same ACLs.
			acl := func(d string) string {
				cmd := exec.Command("getfacl", "-R", "-P", "-n", "-p", "--skip-base", ".")
				cmd.Dir = d
				out, _ := cmd.Output()
				blocks := strings.Split(strings.TrimSpace(string(out)), "\n\n")
				sort.Strings(blocks) // walk order differs
				return strings.Join(blocks, "\n\n")
			}
			if a, b := acl(src), acl(mnt); a != b || !strings.Contains(a, "user:1000:rw-") || !strings.Contains(a, "default:user:1000:rwx") {
				t.Errorf("getfacl: source\n%s\nmount\n%s", a, b)
			}
			mntCheckReadOnly(t, mnt)
			mntCheckInodes(t, mnt)
			if _, err := os.Lstat(filepath.Join(mnt, "no-such-file")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("lstat of a missing name: %v", err)
			}
		})
	}
}

// lineDiff shows the lines only in want (-) or got (+).
func lineDiff(want, got []string) string {
	in := func(l []string) map[string]bool {
		m := map[string]bool{}
		for _, s := range l {
			m[s] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var b strings.Builder
	for _, s := range want {
		if !g[s] {
			fmt.Fprintln(&b, "-", s)
		}
	}
	for _, s := range got {
		if !w[s] {
			fmt.Fprintln(&b, "+", s)
		}
	}
	return b.String()
}

// mntCheckReadOnly checks that statfs says read-only and every kind of
// write fails with EROFS.
func mntCheckReadOnly(t *testing.T, mnt string) {
	t.Helper()
	var sfs unix.Statfs_t
	if err := unix.Statfs(mnt, &sfs); err != nil {
		t.Fatal(err)
	}
	if sfs.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("statfs flags %#x lack ST_RDONLY", sfs.Flags)
	}
	p := func(s string) string { return filepath.Join(mnt, s) }
	checks := map[string]error{
		"create":   func() error { f, err := os.Create(p("new")); f.Close(); return err }(),
		"open rw":  func() error { f, err := os.OpenFile(p("hello"), os.O_RDWR, 0); f.Close(); return err }(),
		"truncate": os.Truncate(p("hello"), 0),
		"mkdir":    os.Mkdir(p("newdir"), 0o755),
		"remove":   os.Remove(p("hello")),
		"rmdir":    os.Remove(p("big")),
		"rename":   os.Rename(p("hello"), p("hello2")),
		"chmod":    os.Chmod(p("hello"), 0o600),
		"chown":    os.Lchown(p("hello"), 1, 1),
		"symlink":  os.Symlink("x", p("newlink")),
		"link":     os.Link(p("hello"), p("hardlink")),
		"mknod":    unix.Mknod(p("fifo2"), unix.S_IFIFO|0o644, 0),
		"setxattr": unix.Setxattr(p("hello"), "user.new", []byte("v"), 0),
		"rmxattr":  unix.Removexattr(p("hello"), "user.greeting"),
		"utimes":   os.Chtimes(p("hello"), time.Now(), time.Now()),
	}
	for what, err := range checks {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", what, err)
		}
	}
}

// mntCheckInodes checks that inode numbers are unique within the mount.
func mntCheckInodes(t *testing.T, mnt string) {
	t.Helper()
	seen := map[uint64]string{}
	filepath.Walk(mnt, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		ino := info.Sys().(*syscall.Stat_t).Ino
		if prev, dup := seen[ino]; dup {
			t.Errorf("inode %d for both %s and %s", ino, prev, p)
		}
		seen[ino] = p
		return nil
	})
}

// TestMountLargeTree checks that inode numbers survive a remount and that
// mounting a large tree and a deep stat are immediate: they fetch the
// chunks of the records on the path, not the archive (no scan). Counted
// in chunks, not timed, so a loaded machine cannot fail it.
func TestMountLargeTree(t *testing.T) {
	needFUSE(t)
	needCmd(t, "casync")
	n := 20000
	if os.Getenv("CAMOUNT_TEST_LONG") != "" {
		n = 100000
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for i := 0; i < n; i++ {
		d := filepath.Join(src, fmt.Sprintf("a%02d", i%50), fmt.Sprintf("b%03d", (i/50)%200))
		if i < 50*200 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%06d", i)), []byte(strconv.Itoa(i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	store, index := casyncMakeTree(t, dir, src)
	idx := readIndex(t, index)
	probe := filepath.Join("a17", "b123", fmt.Sprintf("f%06d", 17+123*50))
	var inos []uint64
	for round := 0; round < 2; round++ {
		mnt := filepath.Join(dir, fmt.Sprintf("mnt%d", round))
		start := time.Now()
		sj := filepath.Join(dir, fmt.Sprintf("stats%d.json", round))
		m := startMount(t, nil, "--store="+store, "--stats-json="+sj, index, mnt)
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(mnt, probe), &st); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		b, err := os.ReadFile(filepath.Join(mnt, probe))
		if err != nil || string(b) != strconv.Itoa(17+123*50) {
			t.Fatalf("read %s: %q, %v", probe, b, err)
		}
		inos = append(inos, st.Ino)
		runCmd(t, camountBin, "umount", mnt)
		m.wait(t)
		// Immediate means no scan: the mount, the stat and the read
		// fetch the chunks of the records on the path, not the archive.
		stats := readStats(t, sj)
		if all := len(idx.Chunks); stats.FetchedChunks == 0 || stats.FetchedChunks > int64(all)/4 {
			t.Errorf("mount, stat and read of one path in a %d-entry tree fetched %d of the archive's %d chunks", n, stats.FetchedChunks, all)
		}
		t.Logf("%d entries: mount + deep stat in %v, %d of %d chunks fetched", n, took, stats.FetchedChunks, len(idx.Chunks))
	}
	if inos[0] != inos[1] {
		t.Errorf("inode of %s changed across mounts: %d, %d", probe, inos[0], inos[1])
	}
}

// TestMountBigDirectory lists a directory too big for one READDIRPLUS
// reply: camount serves directories without OPENDIR handles (vfs
// noOpendir), each reply resuming at the kernel's offset, so a listing in
// many parts, a rewound one and the kernel's cached one must all be the
// whole directory, each name once, with the right types.
func TestMountBigDirectory(t *testing.T) {
	needFUSE(t)
	needCmd(t, "casync")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	big := filepath.Join(src, "big")
	want := map[string]bool{}
	if err := os.MkdirAll(big, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3000; i++ {
		name := fmt.Sprintf("%04d-%s", i, strings.Repeat("n", 100+i%100))
		want[name] = i%7 == 0
		var err error
		if i%7 == 0 {
			err = os.Mkdir(filepath.Join(big, name), 0o755)
		} else {
			err = os.WriteFile(filepath.Join(big, name), []byte(name), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	store, index := casyncMakeTree(t, dir, src)
	mnt := filepath.Join(dir, "mnt")
	startMount(t, nil, "--store="+store, index, mnt)
	check := func(what string, ents []os.DirEntry) {
		t.Helper()
		seen := map[string]bool{}
		for _, e := range ents {
			isDir, ok := want[e.Name()]
			switch {
			case !ok:
				t.Fatalf("%s: unexpected entry %q", what, e.Name())
			case seen[e.Name()]:
				t.Fatalf("%s: %q listed twice", what, e.Name())
			case e.IsDir() != isDir:
				t.Fatalf("%s: %q is a directory: %v, want %v", what, e.Name(), e.IsDir(), isDir)
			}
			seen[e.Name()] = true
		}
		if len(seen) != len(want) {
			t.Fatalf("%s: %d entries, want %d", what, len(seen), len(want))
		}
	}
	f, err := os.Open(filepath.Join(mnt, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// In small parts: many getdents calls, each resuming where the last
	// one ended.
	var parts []os.DirEntry
	rewound := false
	for {
		ents, err := f.ReadDir(37)
		parts = append(parts, ents...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(parts) >= 100 && !rewound {
			// Rewind part way through: the listing starts over.
			rewound = true
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			parts = nil
		}
	}
	check("read in parts", parts)
	for round := 0; round < 2; round++ { // the second from the kernel's cache
		ents, err := os.ReadDir(filepath.Join(mnt, "big"))
		if err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("listing %d", round+1), ents)
	}
	// ls -f: getdents order, with . and ..
	out := strings.Fields(runCmd(t, "ls", "-f", filepath.Join(mnt, "big")))
	if len(out) != len(want)+2 {
		t.Fatalf("ls -f: %d names, want %d", len(out), len(want)+2)
	}
}

// TestMountWalkAttrs: a walk that only descends (find) gets attributes in
// READDIRPLUS replies for subdirectories only, so the kernel builds no
// inode per file; the first stat of a file in a listed directory costs a
// LOOKUP and switches the mount to attributes for every entry, after which
// listing a directory answers the stats of its files without LOOKUPs. The
// attributes are exact either way.
func TestMountWalkAttrs(t *testing.T) {
	needFUSE(t)
	needCmd(t, "casync")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for _, d := range []string{"d1/sub1", "d2/sub2", "d3/sub3"} {
		if err := os.MkdirAll(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ {
			f := filepath.Join(src, filepath.Dir(d), fmt.Sprintf("f%02d", i))
			if err := os.WriteFile(f, bytes.Repeat([]byte{'x'}, i*100), os.FileMode(0o600+i%2*0o44)); err != nil {
				t.Fatal(err)
			}
		}
	}
	store, index := casyncMakeTree(t, dir, src)
	mnt := filepath.Join(dir, "mnt")
	m := startMount(t, nil, "--fuse-debug", "--verbose", "--store="+store, index, mnt)
	// lookups counts the LOOKUPs camount logged so far, but for its own
	// probes. camount logs a request before it answers it, but the log
	// reaches the test through a pipe: lookups first stats a new missing
	// name and waits for that LOOKUP to show, so every request answered
	// before it shows too.
	probes := 0
	lookups := func() int {
		t.Helper()
		probes++
		probe := fmt.Sprintf(".probe-%d", probes)
		unix.Lstat(filepath.Join(mnt, probe), new(unix.Stat_t)) // ENOENT
		for start := time.Now(); !strings.Contains(m.stderr.String(), probe); time.Sleep(time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("the LOOKUP of %s did not show in the log", probe)
			}
		}
		n := 0
		for _, line := range strings.Split(m.stderr.String(), "\n") {
			if strings.Contains(line, ": LOOKUP ") && !strings.Contains(line, ".probe-") {
				n++
			}
		}
		return n
	}
	checkStat := func(rel string) {
		t.Helper()
		var a, b unix.Stat_t
		if err := unix.Lstat(filepath.Join(src, rel), &a); err != nil {
			t.Fatal(err)
		}
		if err := unix.Lstat(filepath.Join(mnt, rel), &b); err != nil {
			t.Fatal(err)
		}
		if a.Mode&unix.S_IFMT == unix.S_IFDIR {
			a.Size = 0 // catar records no directory sizes
		}
		if a.Mode != b.Mode || a.Size != b.Size || a.Mtim != b.Mtim || a.Uid != b.Uid {
			t.Fatalf("%s: mode %o size %d mtime %v uid %d, want %o %d %v %d", rel, b.Mode, b.Size, b.Mtim, b.Uid, a.Mode, a.Size, a.Mtim, a.Uid)
		}
	}
	out := runCmd(t, "find", filepath.Join(mnt, "d1"), filepath.Join(mnt, "d2"))
	if n := strings.Count(out, "\n"); n != 2*(1+1+20) {
		t.Fatalf("find listed %d paths, want %d:\n%s", n, 2*22, out)
	}
	before := lookups()
	checkStat("d2/sub2") // a subdirectory came with its attributes
	if n := lookups() - before; n != 0 {
		t.Errorf("stat of a subdirectory the walk listed sent %d LOOKUPs, want 0", n)
	}
	checkStat("d1/f07") // a file did not: LOOKUP, and every entry from now on
	if n := lookups() - before; n != 1 {
		t.Errorf("stat of a file the walk listed sent %d LOOKUPs, want 1", n)
	}
	ents, err := os.ReadDir(filepath.Join(mnt, "d3"))
	if err != nil || len(ents) != 21 {
		t.Fatalf("d3: %d entries, %v", len(ents), err)
	}
	before = lookups()
	for i := 0; i < 20; i++ {
		checkStat(fmt.Sprintf("d3/f%02d", i))
	}
	if n := lookups() - before; n != 0 {
		t.Errorf("stats of the files of a directory listed after the switch sent %d LOOKUPs, want 0", n)
	}
}

// mntDiskImage builds a GPT disk image with one ext4 partition holding
// src, and returns the image path and the partition's byte offset and size.
func mntDiskImage(t *testing.T, dir, src string) (string, int64, int64) {
	t.Helper()
	img := filepath.Join(dir, "disk.img")
	runCmd(t, "truncate", "-s", "80M", img)
	cmd := exec.Command("sfdisk", "-q", img)
	cmd.Stdin = strings.NewReader("label: gpt\n,,L\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	dump := runCmd(t, "sfdisk", "-d", img)
	m := regexp.MustCompile(`start=\s*(\d+), size=\s*(\d+)`).FindStringSubmatch(dump)
	if m == nil {
		t.Fatalf("no partition in sfdisk -d output:\n%s", dump)
	}
	start, _ := strconv.ParseInt(m[1], 10, 64)
	size, _ := strconv.ParseInt(m[2], 10, 64)
	off, n := start*512, size*512
	// mkfs.ext4 -d populates the file system without a loop device; it
	// writes at an offset of the image with -E offset.
	runCmd(t, "mkfs.ext4", "-q", "-F", "-E", "offset="+strconv.FormatInt(off, 10)+",root_owner=0:0", "-d", src, img, strconv.FormatInt(n/1024, 10)+"k")
	return img, off, n
}

func TestMountBlobDisk(t *testing.T) {
	needFUSE(t)
	needRoot(t)
	needCmd(t, "casync", "sfdisk", "fdisk", "mkfs.ext4", "losetup", "mount", "umount", "diff")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "big"), mntRandom(5<<20, 3), 0o644)
	os.WriteFile(filepath.Join(src, "sub", "small"), []byte("small file\n"), 0o600)
	os.Symlink("sub/small", filepath.Join(src, "link"))
	img, off, size := mntDiskImage(t, dir, src)
	store := filepath.Join(dir, "store.castr")
	index := filepath.Join(dir, "disk.caibx")
	runCmd(t, "casync", "make", "--store="+store, index, img)
	mnt := filepath.Join(dir, "mnt")
	m := startMount(t, nil, "--store="+store, index, mnt)
	file := filepath.Join(mnt, "disk")

	want, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != int64(len(want)) || st.Mode().Perm() != 0o444 {
		t.Errorf("%s: size %d mode %v, want %d -r--r--r--", file, st.Size(), st.Mode(), len(want))
	}
	// fdisk sees the partition table.
	out := runCmd(t, "fdisk", "-l", file)
	if !strings.Contains(out, file+"1") || !strings.Contains(out, "Linux filesystem") {
		t.Errorf("fdisk -l %s:\n%s", file, out)
	}
	// The partition mounts read-only through a loop device.
	loop := strings.TrimSpace(runCmd(t, "losetup", "-r", "-f", "--show", "-o", strconv.FormatInt(off, 10), "--sizelimit", strconv.FormatInt(size, 10), file))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	fsdir := filepath.Join(dir, "ext4")
	os.Mkdir(fsdir, 0o755)
	runCmd(t, "mount", "-o", "ro", loop, fsdir)
	t.Cleanup(func() { exec.Command("umount", fsdir).Run() })
	mntDiff(t, src, fsdir, "lost+found")
	runCmd(t, "umount", fsdir)
	runCmd(t, "losetup", "-d", loop)

	// 32 goroutines reading random ranges get the right bytes.
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			f, err := os.Open(file)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			r := rand.New(rand.NewPCG(uint64(g), 5))
			buf := make([]byte, 2<<20)
			for i := 0; i < 40; i++ {
				n := 1 + r.IntN(len(buf))
				o := r.Int64N(int64(len(want)))
				k, err := f.ReadAt(buf[:n], o)
				if err != nil && err != io.EOF {
					errs <- fmt.Errorf("goroutine %d: read %d at %d: %v", g, n, o, err)
					return
				}
				if k != min(n, len(want)-int(o)) || !bytes.Equal(buf[:k], want[o:o+int64(k)]) {
					errs <- fmt.Errorf("goroutine %d: read %d at %d: wrong bytes (%d read)", g, n, o, k)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Writes are refused.
	if f, err := os.OpenFile(file, os.O_WRONLY, 0); !errors.Is(err, syscall.EROFS) {
		f.Close()
		t.Errorf("open for writing: %v, want EROFS", err)
	}
	runCmd(t, camountBin, "umount", mnt)
	m.wait(t)

	// --name chooses the file name; mount -o loop,ro of the whole image
	// (as a file system) works on the file.
	m = startMount(t, nil, "--store="+store, "--name=other.img", index, mnt)
	if _, err := os.Stat(filepath.Join(mnt, "other.img")); err != nil {
		t.Error(err)
	}
	runCmd(t, "mount", "-o", "loop,ro,offset="+strconv.FormatInt(off, 10)+",sizelimit="+strconv.FormatInt(size, 10), filepath.Join(mnt, "other.img"), fsdir)
	b, err := os.ReadFile(filepath.Join(fsdir, "sub", "small"))
	if err != nil || string(b) != "small file\n" {
		t.Errorf("file in the loop-mounted partition: %q, %v", b, err)
	}
	runCmd(t, "umount", fsdir)
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.wait(t)
}

// TestMountTreeBadChunks: in a tree mount whose store lost one chunk and
// has another corrupt, every directory lists completely or fails with EIO,
// every file reads its exact bytes or fails with EIO, the failures are
// logged with the chunk, and the mount keeps serving everything else
// (the crawl ahead of the walk, batch decoding and handle-less directory
// reads all meet the bad chunks on the way).
func TestMountTreeBadChunks(t *testing.T) {
	needFUSE(t)
	needCmd(t, "casync")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for d := 0; d < 12; d++ {
		sub := filepath.Join(src, fmt.Sprintf("d%02d", d), "sub")
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := 0; f < 30; f++ {
			p := filepath.Join(filepath.Dir(sub), fmt.Sprintf("f%02d", f))
			if f%3 == 0 {
				p = filepath.Join(sub, fmt.Sprintf("g%02d", f))
			}
			if err := os.WriteFile(p, mntRandom(1000+(d*30+f)*97%9000, uint64(d*100+f)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Fixed times: the same archive, hence the same chunks, every run.
	stamp := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			err = os.Chtimes(p, stamp, stamp)
		}
		return err
	})
	store, index := casyncMakeTree(t, dir, src, "--chunk-size=16384")
	// The chunk holding the record of d05/sub/g15, which listing d05/sub
	// reads, goes corrupt: that listing must fail.
	cat := filepath.Join(dir, "tree.catar")
	runCmd(t, "casync", "make", cat, src)
	cf, err := os.Open(cat)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	cst, _ := cf.Stat()
	arc, err := catar.Open(cf, cst.Size())
	if err != nil {
		t.Fatal(err)
	}
	g15, err := arc.LookupPath("d05/sub/g15")
	if err != nil {
		t.Fatal(err)
	}
	x := readIndex(t, index)
	if len(x.Chunks) < 20 {
		t.Fatalf("only %d chunks", len(x.Chunks))
	}
	corrupt, missing := x.Chunks[x.Find(g15.Offset)], x.Chunks[len(x.Chunks)/5]
	if corrupt.ID == missing.ID {
		missing = x.Chunks[len(x.Chunks)/5+1]
	}
	damageChunk(t, store, corrupt)
	os.Remove(chunkFile(store, missing))

	mnt := filepath.Join(dir, "mnt")
	m := startMount(t, nil, "--store="+store, index, mnt)
	if _, err := os.ReadDir(filepath.Join(mnt, "d05", "sub")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("listing d05/sub, whose records are in a corrupt chunk: %v, want EIO", err)
	}
	var good, failed int
	var walk func(rel string)
	walk = func(rel string) {
		ents, err := os.ReadDir(filepath.Join(mnt, rel))
		if err != nil {
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("listing %s: %v, want success or EIO", rel, err)
			}
			failed++
			return
		}
		want, err := os.ReadDir(filepath.Join(src, rel))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != len(want) {
			t.Fatalf("%s lists %d entries, the source %d", rel, len(ents), len(want))
		}
		for i, e := range ents {
			p := filepath.Join(rel, e.Name())
			if e.Name() != want[i].Name() || e.IsDir() != want[i].IsDir() {
				t.Fatalf("%s: entry %d is %s (dir %v), want %s (dir %v)", rel, i, e.Name(), e.IsDir(), want[i].Name(), want[i].IsDir())
			}
			if e.IsDir() {
				walk(p)
				continue
			}
			got, err := os.ReadFile(filepath.Join(mnt, p))
			switch {
			case errors.Is(err, syscall.EIO):
				failed++
			case err != nil:
				t.Fatalf("reading %s: %v, want its bytes or EIO", p, err)
			default:
				exp, _ := os.ReadFile(filepath.Join(src, p))
				if !bytes.Equal(got, exp) {
					t.Fatalf("%s: %d bytes differ from the source's %d", p, len(got), len(exp))
				}
				good++
			}
		}
	}
	walk(".")
	if failed == 0 || good < 100 {
		t.Fatalf("%d good files, %d failures: want some of each", good, failed)
	}
	t.Logf("%d files read exactly, %d reads or listings failed with EIO", good, failed)
	log := m.stderr.String()
	for _, c := range []chunker.Chunk{corrupt, missing} {
		if !strings.Contains(log, c.ID.String()) {
			t.Errorf("the log does not name bad chunk %s:\n%s", c.ID, log)
		}
	}
	// Still serving: a file read before reads again.
	if _, err := os.Stat(filepath.Join(mnt, "d00")); err != nil {
		t.Fatal(err)
	}
}

// TestMountBadChunks checks that a corrupt and a missing chunk fail only
// the reads that need them, with EIO, and are logged by chunk and store.
func TestMountBadChunks(t *testing.T) {
	needFUSE(t)
	needCmd(t, "casync")
	dir := t.TempDir()
	data := mntRandom(12<<20, 4)
	in := filepath.Join(dir, "data.bin")
	os.WriteFile(in, data, 0o644)
	store := filepath.Join(dir, "store.castr")
	index := filepath.Join(dir, "data.caibx")
	runCmd(t, "casync", "make", "--store="+store, index, in)
	x := readIndex(t, index)
	if len(x.Chunks) < 40 {
		t.Fatalf("only %d chunks", len(x.Chunks))
	}
	corrupt, missing := x.Chunks[len(x.Chunks)/3], x.Chunks[2*len(x.Chunks)/3]
	damageChunk(t, store, corrupt)
	os.Remove(chunkFile(store, missing))

	mnt := filepath.Join(dir, "mnt")
	m := startMount(t, nil, "--store="+store, index, mnt)
	file := filepath.Join(mnt, "data")
	// O_DIRECT reads reach camount exactly as asked (no page cache, no
	// kernel readahead widening them into a bad chunk).
	fd, err := os.OpenFile(file, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	bad := func(c chunker.Chunk) bool { return c.ID == corrupt.ID || c.ID == missing.ID }
	for _, c := range x.Chunks {
		buf := make([]byte, c.Size)
		n, err := fd.ReadAt(buf, int64(c.Start))
		if bad(c) {
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("chunk at %d (bad): %d bytes, %v; want EIO", c.Start, n, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(buf[:n], data[c.Start:c.Start+c.Size]) {
			t.Errorf("chunk at %d: %d bytes, %v", c.Start, n, err)
		}
	}
	fd.Close()
	// A buffered read of the whole file fails with EIO; one of the start
	// (far from the bad chunks) works.
	if _, err := os.ReadFile(file); !errors.Is(err, syscall.EIO) {
		t.Errorf("reading the whole file: %v, want EIO", err)
	}
	g, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 1<<20)
	if n, err := io.ReadFull(g, head); err != nil || !bytes.Equal(head[:n], data[:n]) {
		t.Errorf("reading the first MiB: %d, %v", n, err)
	}
	g.Close()
	logs := m.stderr.String()
	for _, c := range []chunker.Chunk{corrupt, missing} {
		if !strings.Contains(logs, c.ID.String()) {
			t.Errorf("the log does not name chunk %s:\n%s", c.ID, logs)
		}
	}
	if !strings.Contains(logs, store) {
		t.Errorf("the log does not name the store %s:\n%s", store, logs)
	}
	runCmd(t, camountBin, "umount", mnt)
	m.wait(t)
}

func TestMountLifecycle(t *testing.T) {
	needFUSE(t)
	needCmd(t, "casync")
	dir := t.TempDir()
	in := filepath.Join(dir, "img.bin")
	os.WriteFile(in, mntRandom(300000, 5), 0o644)
	store := filepath.Join(dir, "store.castr")
	index := filepath.Join(dir, "img.caibx")
	runCmd(t, "casync", "make", "--store="+store, index, in)

	t.Run("sigterm", func(t *testing.T) {
		mnt := filepath.Join(dir, "created", "by", "mount") // missing: created
		m := startMount(t, nil, "--store="+store, index, mnt)
		m.cmd.Process.Signal(syscall.SIGTERM)
		m.wait(t)
	})
	t.Run("sigint", func(t *testing.T) {
		mnt := filepath.Join(dir, "m-int")
		m := startMount(t, nil, "--store="+store, index, mnt)
		m.cmd.Process.Signal(syscall.SIGINT)
		m.wait(t)
	})
	t.Run("umount", func(t *testing.T) {
		mnt := filepath.Join(dir, "m-umount")
		m := startMount(t, nil, "--store="+store, index, mnt)
		runCmd(t, camountBin, "umount", mnt)
		m.wait(t)
		if _, err := tryCamount("umount", mnt); err == nil || !strings.Contains(err.Error(), "not mounted") {
			t.Errorf("umount of an unmounted directory: %v", err)
		}
	})
	t.Run("fusermount", func(t *testing.T) {
		mnt := filepath.Join(dir, "m-fusermount")
		m := startMount(t, nil, "--store="+store, index, mnt)
		runCmd(t, "fusermount3", "-u", mnt)
		m.wait(t)
	})
	t.Run("busy-sigterm", func(t *testing.T) {
		// An open file does not keep the process (or the mount) alive.
		mnt := filepath.Join(dir, "m-busy")
		m := startMount(t, nil, "--store="+store, index, mnt)
		f, err := os.Open(filepath.Join(mnt, "img"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		m.cmd.Process.Signal(syscall.SIGTERM)
		m.wait(t)
	})
	t.Run("over-a-mount", func(t *testing.T) {
		mnt := filepath.Join(dir, "m-twice")
		startMount(t, nil, "--store="+store, index, mnt)
		_, err := tryCamount("mount", "--store="+store, index, mnt)
		if err == nil || !strings.Contains(err.Error(), "already a mount point") {
			t.Errorf("mounting over a mount: %v", err)
		}
	})
	t.Run("dead-mount", func(t *testing.T) {
		// A mount whose server was killed is named as such, and camount
		// umount clears it.
		mnt := filepath.Join(dir, "m-dead")
		m := startMount(t, nil, "--store="+store, index, mnt)
		m.cmd.Process.Kill()
		<-m.done
		_, err := tryCamount("mount", "--store="+store, index, mnt)
		if err == nil || !strings.Contains(err.Error(), "dead FUSE mount") {
			t.Errorf("mounting over a dead mount: %v", err)
		}
		runCmd(t, camountBin, "umount", mnt)
		if isMounted(mnt) {
			t.Error("camount umount left the dead mount")
		}
	})
	t.Run("allow-other", func(t *testing.T) {
		// allow_other only when asked; always read-only.
		for _, other := range []bool{false, true} {
			mnt := filepath.Join(dir, fmt.Sprintf("m-other-%v", other))
			args := []string{"--store=" + store, index, mnt}
			if other {
				args = append([]string{"--allow-other"}, args...)
			}
			m := startMount(t, nil, args...)
			opts := mntOptions(t, mnt)
			if strings.Contains(opts, "allow_other") != other || !strings.Contains(opts, "ro") {
				t.Errorf("--allow-other=%v: mount options %q", other, opts)
			}
			m.cmd.Process.Signal(syscall.SIGTERM)
			m.wait(t)
		}
	})
	t.Run("mkdir-no", func(t *testing.T) {
		mnt := filepath.Join(dir, "absent")
		_, err := tryCamount("mount", "--mkdir=no", "--store="+store, index, mnt)
		if err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("--mkdir=no with a missing mountpoint: %v", err)
		}
		if _, err := os.Stat(mnt); err == nil {
			t.Error("--mkdir=no created the mountpoint")
		}
	})
	t.Run("notify", func(t *testing.T) {
		sock := filepath.Join(dir, "notify.sock")
		conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		mnt := filepath.Join(dir, "m-notify")
		m := startMount(t, []string{"NOTIFY_SOCKET=" + sock}, "--store="+store, index, mnt)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		if err != nil || !strings.Contains(string(buf[:n]), "READY=1") {
			t.Errorf("notify socket got %q, %v", buf[:n], err)
		}
		m.cmd.Process.Signal(syscall.SIGTERM)
		m.wait(t)
	})
	t.Run("bad-input", func(t *testing.T) {
		garbage := filepath.Join(dir, "garbage.caidx")
		os.WriteFile(garbage, []byte("not an index at all, just text\n"), 0o644)
		badcatar := filepath.Join(dir, "bad.catar")
		os.WriteFile(badcatar, bytes.Repeat([]byte{0xff}, 200), 0o644)
		file := filepath.Join(dir, "plainfile")
		os.WriteFile(file, nil, 0o644)
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{filepath.Join(dir, "missing.caibx"), filepath.Join(dir, "m-bad1")}, "no such file"},
			{[]string{garbage, filepath.Join(dir, "m-bad2")}, "garbage.caidx"},
			{[]string{badcatar, filepath.Join(dir, "m-bad3")}, "bad.catar"},
			{[]string{"--store=" + store, index, file}, "not a directory"},
			{[]string{"--store=" + store, filepath.Join(dir, "img.bin"), filepath.Join(dir, "m-bad4")}, ".caibx, .caidx or .catar"},
			{[]string{"--store=" + store, index}, "usage"},
			{[]string{"--store=" + store, "--mkdir=maybe", index, filepath.Join(dir, "m-bad5")}, "--mkdir"},
			{[]string{"--store=" + filepath.Join(dir, "nostore"), index, filepath.Join(dir, "m-bad6")}, "nostore"},
		} {
			out, err := tryCamount(append([]string{"mount"}, c.args...)...)
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(c.want)) {
				t.Errorf("camount mount %v: %v (stdout %q), want an error mentioning %q", c.args, err, out, c.want)
			}
			if mp := c.args[len(c.args)-1]; isMounted(mp) {
				exec.Command("fusermount3", "-uz", mp).Run()
				t.Errorf("%v left a mount", c.args)
			}
		}
	})
}

// TestMountACLEnforced: with --allow-other, the kernel enforces the
// archive's POSIX ACLs on other users, not just the mode bits — the mount
// grants and denies access as the source directory does.
func TestMountACLEnforced(t *testing.T) {
	needRoot(t)
	needFUSE(t)
	needCmd(t, "setfacl", "setpriv")
	// Other users must be able to reach the mountpoint: t.TempDir is 0700.
	dir, err := os.MkdirTemp("", "camount-acl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, src} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const nobody = "65534"
	files := []struct {
		name string
		mode os.FileMode
		acl  string
		read bool // nobody may read it
	}{
		{"mode-denies-acl-grants", 0o640, "u:" + nobody + ":r", true},
		{"mode-grants-acl-denies", 0o644, "u:" + nobody + ":-,m::r", false},
		{"plain-readable", 0o644, "", true},
		{"plain-private", 0o600, "", false},
	}
	for _, f := range files {
		p := filepath.Join(src, f.name)
		if err := os.WriteFile(p, []byte(f.name), f.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, f.mode)
		if f.acl != "" {
			runCmd(t, "setfacl", "-m", f.acl, p)
		}
	}
	store := filepath.Join(dir, "store.castr")
	index := filepath.Join(dir, "acl.caidx")
	camount(t, "make", "--store="+store, index, src)
	asNobody := func(p string) error {
		out, err := exec.Command("setpriv", "--reuid="+nobody, "--regid="+nobody, "--clear-groups", "cat", p).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
		}
		return nil
	}
	mnt := filepath.Join(dir, "mnt")
	startMount(t, nil, "--allow-other", "--store="+store, index, mnt)
	for _, f := range files {
		// The source decides what nobody may do; the mount must agree.
		if err := asNobody(filepath.Join(src, f.name)); (err == nil) != f.read {
			t.Fatalf("fixture: nobody reading source %s: %v, want read=%v", f.name, err, f.read)
		}
		err := asNobody(filepath.Join(mnt, f.name))
		if (err == nil) != f.read {
			t.Errorf("nobody reading mounted %s: %v, want read=%v (as the source)", f.name, err, f.read)
		}
	}
}

// TestMountDaemon: `camount mount --daemon` returns once the mount is up,
// leaving it served by a background process that outlives the command,
// logs to --log-file, and exits when unmounted; a mount that cannot start
// fails the command itself, with the reason.
func TestMountDaemon(t *testing.T) {
	needRoot(t)
	needFUSE(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "hello"), []byte("hello, daemon\n"), 0o644)
	store := filepath.Join(dir, "store.castr")
	index := filepath.Join(dir, "t.caidx")
	camount(t, "make", "--store="+store, index, src)
	mnt := filepath.Join(dir, "mnt")
	logFile := filepath.Join(dir, "log")
	t.Cleanup(func() {
		if isMounted(mnt) {
			exec.Command("fusermount3", "-uz", mnt).Run()
		}
	})
	start := time.Now()
	out, err := tryCamount("mount", "--daemon", "--log-file="+logFile, "--store="+store, index, mnt)
	if err != nil {
		t.Fatalf("mount --daemon: %v\n%s", err, out)
	}
	if !strings.Contains(out, "mounted") || !strings.Contains(out, "background process") {
		t.Errorf("mount --daemon printed %q", out)
	}
	if !isMounted(mnt) {
		t.Fatalf("mount --daemon returned after %v but %s is not mounted", time.Since(start), mnt)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "hello")); err != nil || string(b) != "hello, daemon\n" {
		t.Fatalf("reading through the daemon's mount: %q, %v", b, err)
	}
	var pid int
	if _, err := fmt.Sscanf(out[strings.LastIndex(out, "background process ")+len("background process "):], "%d", &pid); err != nil {
		t.Fatalf("no background process id in %q", out)
	}
	camount(t, "umount", mnt)
	for deadline := time.Now().Add(10 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("background process %d still running 10s after umount", pid)
		}
	}
	if _, err := os.Stat(logFile); err != nil {
		t.Errorf("--log-file: %v", err)
	}
	// A mount that cannot start: the command fails and says why.
	out, err = tryCamount("mount", "--daemon", "--store="+store, filepath.Join(dir, "missing.caidx"), filepath.Join(dir, "mnt2"))
	if err == nil || !strings.Contains(err.Error()+out, "missing.caidx") {
		t.Errorf("mount --daemon of a missing index: out %q, err %v", out, err)
	}
}
