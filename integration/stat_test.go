package integration

import (
	"path/filepath"
	"testing"
)

// TestStatMatchesCasync byte-compares camount stat with casync stat on the
// fixture tree's archive (every entry type, owners with and without
// names, xattrs, chattr flags, hard links) through a .catar and a .caidx,
// and on the directory itself.
func TestStatMatchesCasync(t *testing.T) {
	src := fixtureTree(t, treeOpts{})
	dir := t.TempDir()
	cat := filepath.Join(dir, "t.catar")
	runCmd(t, "casync", "make", cat, src)
	store := filepath.Join(dir, "s.castr")
	idx := filepath.Join(dir, "t.caidx")
	runCmd(t, "casync", "make", "--store="+store, idx, src)
	// Times print in local time, as casync's do: pin a zone with an offset.
	t.Setenv("TZ", "Asia/Kolkata")
	paths := []string{"", "/", "hello.txt", "hardlink", "large.bin", "sparse.img", "empty", "link", "dangling",
		"fifo", "null", "loop0", "bigdev", "socket", "owned-1000", "owned-unnamed", "sticky", "ro-dir/",
		"ro-dir/ro-file", "setuid", "xattrs", "fcaps", "acl-mask", "append-only", "immutable", "noatime", "names"}
	n := 0
	for _, in := range []string{cat, idx} {
		for _, p := range paths {
			args := []string{"stat", "--store=" + store, in}
			if p != "" {
				args = append(args, p)
			}
			want, err := tryCmd("casync", args...)
			if err != nil {
				continue // a path casync does not have: not compared
			}
			got, err := tryCamount(args...)
			if err != nil {
				t.Errorf("camount %q: %v", args, err)
				continue
			}
			if got != want {
				t.Errorf("stat %s %q:\ncasync:\n%s\ncamount:\n%s", filepath.Base(in), p, want, got)
			}
			n++
		}
	}
	if n < 2*20 {
		t.Errorf("only %d entries compared", n)
	}
	for _, flags := range [][]string{nil, {"--with=unix"}, {"--without=flag-nodump"}, {"--with=best", "--without=quota-projid"}} {
		for _, d := range []string{src, filepath.Join(src, "sticky")} {
			args := append(append([]string{"stat"}, flags...), d)
			want, _ := tryCmd("casync", args...) // casync may fail after printing (xattrs off)
			if got := camount(t, args...); got != want {
				t.Errorf("stat %q:\ncasync:\n%s\ncamount:\n%s", args, want, got)
			}
		}
	}
	if _, err := tryCamount("stat", cat, "no/such/entry"); err == nil {
		t.Error("stat of a missing path succeeded")
	}
}
