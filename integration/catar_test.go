package integration

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// treeOpts selects what the fixture tree holds. casync 2 cannot extract
// named ACLs on this kernel (EOPNOTSUPP) nor set times before 1970, so the
// tree casync extracts leaves those out.
type treeOpts struct {
	namedACLs bool
	pre1970   bool
}

var (
	fixtureOnce sync.Map // treeOpts → *fixture
)

type fixture struct {
	once sync.Once
	dir  string
	err  error
}

// treeTempDir is a temporary directory whose cleanup first clears
// immutable and append-only attributes (extracted trees carry them).
func treeTempDir(t testing.TB) string {
	d := t.TempDir()
	t.Cleanup(func() { exec.Command("chattr", "-R", "-i", "-a", d).Run() })
	return d
}

var fixtureRoot string
var fixtureRootOnce sync.Once

// fixtureTree builds (once per test binary) a tree with every entry type,
// metadata casync stores, awkward names, sparse and large files, deep
// nesting and a directory of 10,000 entries.
func fixtureTree(t *testing.T, o treeOpts) string {
	t.Helper()
	needRoot(t)
	needCmd(t, "casync", "chattr", "setfacl")
	v, _ := fixtureOnce.LoadOrStore(o, &fixture{})
	f := v.(*fixture)
	f.once.Do(func() {
		fixtureRootOnce.Do(func() {
			fixtureRoot, _ = os.MkdirTemp("", "camount-tree-fixture-")
		})
		f.dir = filepath.Join(fixtureRoot, fmt.Sprintf("tree-acl%v-old%v", o.namedACLs, o.pre1970))
		f.err = buildTree(f.dir, o)
	})
	if f.err != nil {
		t.Fatalf("building the fixture tree: %v", f.err)
	}
	return f.dir
}

func treeRandom(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for k := 0; k < 8; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

func buildTree(root string, o treeOpts) error {
	var firstErr error
	check := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	p := func(rel string) string { return filepath.Join(root, rel) }
	write := func(rel string, data []byte, mode os.FileMode) {
		check(os.MkdirAll(filepath.Dir(p(rel)), 0o755))
		check(os.WriteFile(p(rel), data, mode))
		check(os.Chmod(p(rel), mode))
	}
	run := func(name string, args ...string) {
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			check(fmt.Errorf("%s %v: %v: %s", name, args, err, out))
		}
	}
	check(os.MkdirAll(root, 0o755))
	// Regular files: empty, small, large, sparse, hard link, odd modes.
	write("empty", nil, 0o644)
	write("hello.txt", []byte("hello\n"), 0o644)
	write("large.bin", treeRandom(6<<20+12345, 1), 0o600)
	f, err := os.Create(p("sparse.img"))
	check(err)
	if f != nil {
		f.WriteAt([]byte("start"), 0)
		f.WriteAt([]byte("end"), 24<<20)
		f.Close()
	}
	check(os.Link(p("hello.txt"), p("hardlink")))
	write("setuid", []byte("#!/bin/sh\n"), 0o4755)
	write("setgid-noexec", []byte("x"), 0o2640)
	check(os.Chmod(p("setgid-noexec"), 0o2640))
	check(os.Mkdir(p("sticky"), 0o1777))
	check(os.Chmod(p("sticky"), 0o1777))
	check(os.Mkdir(p("ro-dir"), 0o555))
	write("ro-dir/ro-file", []byte("r"), 0o444)
	check(os.Chmod(p("ro-dir"), 0o555))
	// Special files.
	check(os.Symlink("hello.txt", p("link")))
	check(os.Symlink("/nonexistent/target with spaces", p("dangling")))
	check(os.Symlink(strings.Repeat("x/", 500)+"y", p("longlink")))
	check(syscall.Mkfifo(p("fifo"), 0o640))
	check(syscall.Mknod(p("null"), syscall.S_IFCHR|0o666, 1<<8|3))
	check(syscall.Mknod(p("loop0"), syscall.S_IFBLK|0o660, 7<<8|0))
	check(syscall.Mknod(p("bigdev"), syscall.S_IFCHR|0o600, int(mkdev(300, 70000))))
	if l, err := net.Listen("unix", p("socket")); err == nil {
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
	} else {
		check(err)
	}
	// Ownership: a named user, and ids without names.
	write("owned-1000", []byte("u"), 0o644)
	check(os.Lchown(p("owned-1000"), 1000, 1000))
	write("owned-unnamed", []byte("n"), 0o644)
	check(os.Lchown(p("owned-unnamed"), 12345, 54321))
	check(os.Lchown(p("link"), 1000, 1000))
	// Extended attributes, ACLs, file capabilities.
	write("xattrs", []byte("x"), 0o644)
	check(syscall.Setxattr(p("xattrs"), "user.b", []byte("second"), 0))
	check(syscall.Setxattr(p("xattrs"), "user.a", []byte{}, 0))
	check(syscall.Setxattr(p("xattrs"), "user.bin", []byte{0, 1, 2, 255}, 0))
	check(syscall.Setxattr(p("xattrs"), "trusted.t", []byte("trusted"), 0))
	write("acl-mask", []byte("m"), 0o640)
	run("setfacl", "-m", "m::rwx", p("acl-mask"))
	if o.namedACLs {
		write("acl-named", []byte("a"), 0o640)
		run("setfacl", "-m", "u:1000:rw,u:54321:r,g:1000:r,g:0:rwx", p("acl-named"))
		check(os.Mkdir(p("acl-dir"), 0o755))
		run("setfacl", "-m", "u:1000:rwx,d:u:1000:rx,d:g:100:r,d:m::rx", p("acl-dir"))
	}
	check(os.Mkdir(p("acl-default-only"), 0o750))
	run("setfacl", "-d", "-m", "o::r", p("acl-default-only"))
	write("fcaps", []byte("#!/bin/true\n"), 0o755)
	// struct vfs_cap_data, revision 2: cap_net_raw (13) permitted+effective.
	capv2 := []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	check(syscall.Setxattr(p("fcaps"), "security.capability", capv2, 0))
	// chattr flags: stored ones, and nodump (excluded by default).
	write("append-only", []byte("log\n"), 0o644)
	write("immutable", []byte("fixed\n"), 0o644)
	write("noatime", []byte("n"), 0o644)
	run("chattr", "+A", p("noatime"))
	write("nodump-file", []byte("skip me"), 0o644)
	run("chattr", "+d", p("nodump-file"))
	check(os.Mkdir(p("nodump-dir"), 0o755))
	write("nodump-dir/inner", []byte("skip"), 0o644)
	run("chattr", "+d", p("nodump-dir"))
	// .caexclude patterns.
	write("excl/.caexclude", []byte("# excluded\n*.o\n!keep.o\nbuild/\n/top-only\nsub/inner\n"), 0o644)
	for _, rel := range []string{"a.o", "keep.o", "build/x", "top-only", "nested/top-only", "nested/b.o", "nested/keep.o", "sub/inner", "sub/other", "x.c"} {
		write("excl/"+rel, []byte(rel), 0o644)
	}
	// Awkward names.
	for _, n := range []string{"é", "日本語", "sp ace", " lead", "tab\tname", "new\nline", `back\slash`, "#hash", "-dash", "Zeta", "_under",
		"\x01ctl", "latin1-\xe9", strings.Repeat("L", longName(o)), "a.b.c", "..dots", ".hidden"} {
		write("names/"+n, []byte(n), 0o644)
	}
	// Deep nesting (casync handles 64 levels in all).
	deep := "deep"
	for i := 0; i < 40; i++ {
		deep = filepath.Join(deep, fmt.Sprintf("l%02d", i))
	}
	write(filepath.Join(deep, "leaf"), []byte("leaf"), 0o644)
	// A directory of 10,000 entries.
	check(os.Mkdir(p("many"), 0o755))
	for i := 0; i < 10000; i++ {
		fd, err := syscall.Open(p(fmt.Sprintf("many/%05d", i)), syscall.O_CREAT|syscall.O_WRONLY|syscall.O_CLOEXEC, 0o644)
		if err != nil {
			check(err)
			break
		}
		if i%1000 == 0 {
			syscall.Write(fd, []byte(fmt.Sprint(i)))
		}
		syscall.Close(fd)
	}
	// Times: nanoseconds everywhere, one before 1970.
	base := time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)
	var paths []string
	filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
		if err == nil {
			paths = append(paths, path)
		}
		return nil
	})
	sort.Sort(sort.Reverse(sort.StringSlice(paths))) // children before parents
	for i, path := range paths {
		ts := base.Add(time.Duration(i) * 1000003 * time.Nanosecond)
		if o.pre1970 && strings.HasSuffix(path, "hello.txt") {
			ts = time.Date(1969, 12, 31, 23, 59, 59, 500000000, time.UTC)
		}
		tv := []syscall.Timespec{syscall.NsecToTimespec(ts.UnixNano()), syscall.NsecToTimespec(ts.UnixNano())}
		check(lutimes(path, tv))
	}
	// Flags that forbid changes go last.
	run("chattr", "+a", p("append-only"))
	run("chattr", "+i", p("immutable"))
	return firstErr
}

// longName is the length of the longest name: 255, except in the tree
// casync extracts (it creates ".#NAME<random>" temporary files, which must
// fit 255 bytes too).
func longName(o treeOpts) int {
	if o.namedACLs {
		return 255
	}
	return 200
}

func mkdev(major, minor uint64) uint64 {
	return (minor & 0xff) | ((major & 0xfff) << 8) | ((minor &^ 0xff) << 12) | ((major &^ 0xfff) << 32)
}

func lutimes(path string, ts []syscall.Timespec) error {
	// utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) via os.Chtimes is
	// not possible for symlinks; use the syscall through /proc-free path.
	return utimensatNoFollow(path, ts)
}

func fileSHA(t *testing.T, path string) [32]byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func storeNames(t *testing.T, store string) []string {
	var out []string
	filepath.Walk(store, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			out = append(out, strings.TrimSuffix(filepath.Base(p), ".cacnk"))
		}
		return nil
	})
	sort.Strings(out)
	return out
}

var flagSets = []struct {
	name string
	args []string
}{
	{"default", nil},
	{"unix", []string{"--with=unix"}},
	{"none", []string{"--without=all"}},
	{"fuse", []string{"--with=fuse"}},
	{"nodump-kept", []string{"--exclude-nodump=no", "--with=unix", "--with=chattr"}},
}

// TestTreeMakeMatchesCasync: camount make writes the same .catar bytes and
// the same .caidx (and chunks) as casync make, and prints the same digest.
func TestTreeMakeMatchesCasync(t *testing.T) {
	src := fixtureTree(t, treeOpts{namedACLs: true, pre1970: true})
	for _, fs := range flagSets {
		t.Run(fs.name, func(t *testing.T) {
			dir := t.TempDir()
			out := func(n string) string { return filepath.Join(dir, n) }
			want := runCmd(t, "casync", append(append([]string{"make"}, fs.args...), out("c.catar"), src)...)
			got := camount(t, append(append([]string{"make"}, fs.args...), out("m.catar"), src)...)
			if got != want {
				t.Errorf(".catar digest: camount %q, casync %q", got, want)
			}
			if fileSHA(t, out("c.catar")) != fileSHA(t, out("m.catar")) {
				t.Fatalf(".catar files differ (casync %s, camount %s)", out("c.catar"), out("m.catar"))
			}
			want = runCmd(t, "casync", append(append([]string{"make", "--store=" + out("cs")}, fs.args...), out("c.caidx"), src)...)
			got = camount(t, append(append([]string{"make", "--store=" + out("ms")}, fs.args...), out("m.caidx"), src)...)
			if got != want {
				t.Errorf(".caidx digest: camount %q, casync %q", got, want)
			}
			if fileSHA(t, out("c.caidx")) != fileSHA(t, out("m.caidx")) {
				t.Errorf(".caidx files differ")
			}
			if c, m := storeNames(t, out("cs")), storeNames(t, out("ms")); strings.Join(c, " ") != strings.Join(m, " ") {
				t.Errorf("stores differ: casync %d chunks, camount %d", len(c), len(m))
			}
			// casync reads what camount wrote.
			if d := runCmd(t, "casync", "digest", "--store="+out("ms"), out("m.caidx")); d != want {
				t.Errorf("casync digest of camount's .caidx: %q, want %q", d, want)
			}
		})
	}
}

// TestTreeDigest: camount digest of a directory, a .catar and a .caidx
// equals casync digest.
func TestTreeDigest(t *testing.T) {
	src := fixtureTree(t, treeOpts{namedACLs: true, pre1970: true})
	dir := t.TempDir()
	for _, fs := range flagSets[:3] { // default, unix, none
		want := runCmd(t, "casync", append(append([]string{"digest"}, fs.args...), src)...)
		if got := camount(t, append(append([]string{"digest"}, fs.args...), src)...); got != want {
			t.Errorf("%s: digest of the directory: camount %q, casync %q", fs.name, got, want)
		}
		cat := filepath.Join(dir, fs.name+".catar")
		idx := filepath.Join(dir, fs.name+".caidx")
		runCmd(t, "casync", append(append([]string{"make"}, fs.args...), cat, src)...)
		runCmd(t, "casync", append(append([]string{"make"}, fs.args...), idx, src)...)
		for _, in := range []string{cat, idx} {
			w := runCmd(t, "casync", "digest", in)
			if w != want {
				t.Errorf("casync digest %s = %q, of the directory %q", in, w, want)
			}
			if got := camount(t, "digest", in); got != want {
				t.Errorf("%s: digest of %s: camount %q, casync %q", fs.name, filepath.Base(in), got, want)
			}
		}
		// A file's payload digest and a subtree's digest.
		for _, sub := range []string{"hello.txt", "deep/l00", "names/é"} {
			w := runCmd(t, "casync", "digest", cat, sub)
			if got := camount(t, "digest", idx, sub); got != w {
				t.Errorf("%s: digest of %s in the archive: camount %q, casync %q", fs.name, sub, got, w)
			}
		}
	}
}

func diffLines(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d:\n  casync:  %q\n  camount: %q", i+1, al[i], bl[i])
		}
	}
	return fmt.Sprintf("line counts %d vs %d", len(al), len(bl))
}

// TestTreeListMtree: list and mtree print what casync prints for a
// directory, a .catar and a .caidx.
func TestTreeListMtree(t *testing.T) {
	src := fixtureTree(t, treeOpts{namedACLs: true, pre1970: true})
	dir := t.TempDir()
	cat := filepath.Join(dir, "t.catar")
	idx := filepath.Join(dir, "t.caidx")
	runCmd(t, "casync", "make", cat, src)
	runCmd(t, "casync", "make", idx, src)
	for _, verb := range []string{"list", "mtree"} {
		for _, in := range []string{src, cat, idx} {
			want := runCmd(t, "casync", verb, in)
			got := camount(t, verb, in)
			if got != want {
				t.Errorf("%s %s differs: %s", verb, filepath.Base(in), diffLines(want, got))
			}
		}
	}
	// A subtree, and other feature sets.
	for _, args := range [][]string{{"list", cat, "deep/l00/l01"}, {"list", idx, "names"}, {"mtree", cat, "excl"},
		{"mtree", "--with=unix", src}, {"mtree", "--without=all", src}, {"list", "--with=unix", src}} {
		want := runCmd(t, "casync", args...)
		if got := camount(t, args...); got != want {
			t.Errorf("%v differs: %s", args, diffLines(want, got))
		}
	}
}

// TestTreeExtractCasyncArchives: camount extract of casync's .catar and
// .caidx reproduces the tree: casync encodes the result to the same digest.
func TestTreeExtractCasyncArchives(t *testing.T) {
	src := fixtureTree(t, treeOpts{namedACLs: true, pre1970: true})
	dir := treeTempDir(t)
	cat := filepath.Join(dir, "t.catar")
	idx := filepath.Join(dir, "t.caidx")
	want := runCmd(t, "casync", "make", cat, src)
	runCmd(t, "casync", "make", idx, src)
	for _, in := range []string{cat, idx} {
		out := filepath.Join(dir, "x-"+strings.ReplaceAll(filepath.Base(in), ".", "-"))
		camount(t, "extract", in, out)
		if got := runCmd(t, "casync", "digest", out); got != want {
			t.Errorf("extract %s: casync digest of the result %q, of the source %q\n%s", filepath.Base(in), got, want,
				diffLines(runCmd(t, "casync", "mtree", src), runCmd(t, "casync", "mtree", out)))
		}
	}
	// Extracting into an existing tree replaces what differs.
	out := filepath.Join(dir, "x-t-catar")
	exec.Command("chattr", "-R", "-i", "-a", out).Run()
	os.WriteFile(filepath.Join(out, "hello.txt"), []byte("changed"), 0o600)
	os.Remove(filepath.Join(out, "link"))
	camount(t, "extract", cat, out)
	if got := runCmd(t, "casync", "digest", out); got != want {
		t.Errorf("re-extract over a changed tree: digest %q, want %q", got, want)
	}
}

// TestTreeCasyncExtractsCamount: casync extract of camount's .catar and
// .caidx reproduces the tree.
func TestTreeCasyncExtractsCamount(t *testing.T) {
	src := fixtureTree(t, treeOpts{})
	dir := treeTempDir(t)
	cat := filepath.Join(dir, "t.catar")
	idx := filepath.Join(dir, "t.caidx")
	want := camount(t, "make", cat, src)
	camount(t, "make", idx, src)
	for _, in := range []string{cat, idx} {
		out := filepath.Join(dir, "x-"+strings.ReplaceAll(filepath.Base(in), ".", "-"))
		runCmd(t, "casync", "extract", in, out)
		if got := camount(t, "digest", out); got != want {
			t.Errorf("casync extract %s: digest of the result %q, of the source %q\n%s", filepath.Base(in), got, want,
				diffLines(runCmd(t, "casync", "mtree", src), runCmd(t, "casync", "mtree", out)))
		}
	}
}

// TestTreeBadInput: corrupt and truncated archives fail with a clear
// error (casync hangs on a truncated one), bad flags are refused.
func TestTreeBadInput(t *testing.T) {
	needCmd(t, "casync")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "sub", "f"), []byte("data"), 0o644)
	cat := filepath.Join(dir, "t.catar")
	camount(t, "make", cat, src)
	data, _ := os.ReadFile(cat)
	bad := map[string][]byte{
		"truncated": data[:len(data)-1],
		"trailing":  append(append([]byte(nil), data...), 1),
		"flipped":   func() []byte { c := bytes.Clone(data); c[len(c)/2] ^= 0x40; return c }(),
		"empty":     nil,
	}
	for name, b := range bad {
		p := filepath.Join(dir, name+".catar")
		os.WriteFile(p, b, 0o644)
		for _, verb := range []string{"mtree", "digest-check"} {
			if verb == "digest-check" {
				verb = "extract"
			}
			args := []string{verb, p}
			if verb == "extract" {
				args = append(args, filepath.Join(dir, "out-"+name))
			}
			out, err := tryCamount(args...)
			if err == nil && name != "trailing-list" {
				t.Errorf("%s %s: accepted (%q)", verb, name, out)
			} else if err != nil && !strings.Contains(err.Error(), "catar") && !strings.Contains(err.Error(), "archive") {
				t.Errorf("%s %s: unclear error: %v", verb, name, err)
			}
		}
	}
	if _, err := tryCamount("make", "--with=bogus", filepath.Join(dir, "x.catar"), src); err == nil {
		t.Error("unknown feature accepted")
	}
	if _, err := tryCamount("make", filepath.Join(dir, "x.catar"), filepath.Join(src, "sub", "f")); err == nil {
		t.Error("a file accepted as a tree")
	}
}

// TestTreeExtractAsUser: a normal user extracts what it can (contents,
// modes, times, symlinks, fifos, user xattrs) and skips what needs
// privileges (ownership, devices, trusted xattrs) instead of failing.
func TestTreeExtractAsUser(t *testing.T) {
	needRoot(t)
	needCmd(t, "setpriv", "casync")
	shared, err := os.MkdirTemp("", "camount-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	os.Chmod(shared, 0o777)
	bin := filepath.Join(shared, "camount")
	b, err := os.ReadFile(camountBin)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bin, b, 0o755)
	src := filepath.Join(shared, "src")
	os.MkdirAll(filepath.Join(src, "d/e"), 0o750)
	os.WriteFile(filepath.Join(src, "d/e/f"), []byte("content"), 0o640)
	os.WriteFile(filepath.Join(src, "x"), []byte("x"), 0o600)
	os.Symlink("d/e/f", filepath.Join(src, "link"))
	syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644)
	syscall.Mknod(filepath.Join(src, "null"), syscall.S_IFCHR|0o666, 1<<8|3)
	syscall.Setxattr(filepath.Join(src, "x"), "user.u", []byte("1"), 0)
	syscall.Setxattr(filepath.Join(src, "x"), "trusted.t", []byte("1"), 0)
	os.Lchown(filepath.Join(src, "x"), 1000, 1000)
	cat := filepath.Join(shared, "t.catar")
	camount(t, "make", cat, src)
	os.Chmod(cat, 0o644)
	out := filepath.Join(shared, "out")
	if o, err := tryCmd("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin, "extract", cat, out); err != nil {
		t.Fatalf("extract as nobody: %v %s", err, o)
	}
	var before syscall.Stat_t
	syscall.Lstat(src, &before)
	os.Remove(filepath.Join(src, "null")) // a normal user cannot create it
	utimensatNoFollow(src, []syscall.Timespec{before.Mtim, before.Mtim})
	args := []string{"mtree", "--with=permissions", "--with=nsec-time", "--with=symlinks", "--with=fifos", "--with=xattrs"}
	want := runCmd(t, "casync", append(args, src)...)
	got := runCmd(t, "casync", append(args, out)...)
	if got != want {
		t.Errorf("extracted as nobody differs: %s", diffLines(want, got))
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(out, "x"), &st); err != nil || st.Uid != 65534 {
		t.Errorf("x: uid %d, %v (want the extracting user's)", st.Uid, err)
	}
	v := make([]byte, 16)
	if n, err := syscall.Getxattr(filepath.Join(out, "x"), "user.u", v); err != nil || string(v[:n]) != "1" {
		t.Errorf("user xattr not restored: %v", err)
	}
}
