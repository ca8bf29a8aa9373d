package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// ownersOf lists path, uid, gid and mode of every entry under dir, and its
// ACLs by number.
func ownersOf(t *testing.T, dir string) string {
	t.Helper()
	out := runCmd(t, "find", dir, "-printf", "%P %U %G %m\n")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	acl, _ := tryCmd("getfacl", "-R", "-n", "-p", dir)
	return strings.Join(sorted(lines), "\n") + "\n" + strings.ReplaceAll(acl, dir, "")
}

func sorted(l []string) []string {
	c := append([]string(nil), l...)
	sort.Strings(c)
	return c
}

// TestUIDShiftMatchesCasync: make with --uid-shift/--uid-range writes the
// archive casync writes, extract gives the owners (and ACL ids) casync
// gives, and a mount shows the shifted owners (casync cannot).
func TestUIDShiftMatchesCasync(t *testing.T) {
	needRoot(t)
	needCmd(t, "casync", "setfacl", "getfacl")
	dir := t.TempDir()
	src := filepath.Join(dir, "t")
	os.MkdirAll(filepath.Join(src, "d"), 0o755)
	os.WriteFile(filepath.Join(src, "a"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(src, "d", "b"), []byte("b"), 0o600)
	os.Symlink("a", filepath.Join(src, "l"))
	runCmd(t, "chown", "-R", "-h", "100000:100000", src)
	os.Lchown(filepath.Join(src, "a"), 100033, 100034)
	os.Lchown(filepath.Join(src, "d", "b"), 101000, 100005)
	runCmd(t, "setfacl", "-m", "u:101234:r,g:100007:w", filepath.Join(src, "a"))

	for i, flags := range [][]string{
		{"--uid-shift=100000"},
		{"--uid-shift=100000", "--uid-range=70000"},
		{"--uid-shift=100000", "--with=16bit-uids"},
		{"--uid-shift=100000", "--without=user-names"},
		{"--uid-shift=yes"},
	} {
		c, m := filepath.Join(dir, "c.catar"), filepath.Join(dir, "m.catar")
		runCmd(t, "casync", append(append([]string{"make"}, flags...), c, src)...)
		camount(t, append(append([]string{"make"}, flags...), m, src)...)
		cb, _ := os.ReadFile(c)
		mb, _ := os.ReadFile(m)
		if !bytes.Equal(cb, mb) {
			t.Errorf("make %q: archive differs from casync's", flags)
		}
		if i > 0 {
			continue
		}
		// A shift below an owner is refused by both.
		if _, err := tryCmd("casync", "make", "--uid-shift=100040", filepath.Join(dir, "x.catar"), src); err == nil {
			t.Fatal("casync accepted owners below the shift")
		}
		if _, err := tryCamount("make", "--uid-shift=100040", filepath.Join(dir, "y.catar"), src); err == nil || !strings.Contains(err.Error(), "uid-shift") {
			t.Errorf("owners below the shift: %v", err)
		}
	}

	arc := filepath.Join(dir, "s.catar")
	runCmd(t, "casync", "make", "--uid-shift=100000", arc, src)
	for _, flags := range [][]string{{"--uid-shift=200000"}, {"--uid-shift=200000", "--uid-range=1000"}, {"--uid-range=65536"}} {
		xc, xm := filepath.Join(dir, "xc"), filepath.Join(dir, "xm")
		os.RemoveAll(xc)
		os.RemoveAll(xm)
		runCmd(t, "casync", append(append([]string{"extract"}, flags...), arc, xc)...)
		camount(t, append(append([]string{"extract"}, flags...), arc, xm)...)
		want, got := ownersOf(t, xc), ownersOf(t, xm)
		if want != got {
			t.Errorf("extract %q: owners differ\ncasync:\n%s\ncamount:\n%s", flags, want, got)
		}
		if flags[0] == "--uid-shift=200000" && len(flags) == 1 && !strings.Contains(got, "a 200033 200034") {
			t.Errorf("extract %q: a not owned by 200033:200034:\n%s", flags, got)
		}
	}

	// The mount shows the owners extract would give.
	needFUSE(t)
	mnt := filepath.Join(dir, "mnt")
	startMount(t, nil, "--uid-shift=300000", arc, mnt)
	for p, want := range map[string][2]uint32{"": {300000, 300000}, "a": {300033, 300034}, "d/b": {301000, 300005}, "l": {300000, 300000}} {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(mnt, p), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != want[0] || st.Gid != want[1] {
			t.Errorf("mounted %q owned by %d:%d, want %d:%d", p, st.Uid, st.Gid, want[0], want[1])
		}
	}
	if acl := runCmd(t, "getfacl", "-n", "-p", filepath.Join(mnt, "a")); !strings.Contains(acl, "user:301234:r--") {
		t.Errorf("mounted ACL not shifted:\n%s", acl)
	}
}
