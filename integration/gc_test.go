package integration

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// storeFiles lists a store's chunk files, relative to it.
func storeFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			r, _ := filepath.Rel(dir, p)
			out = append(out, r)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

func backdate(t *testing.T, dir string) {
	t.Helper()
	old := time.Now().Add(-2 * time.Hour)
	for _, f := range storeFiles(t, dir) {
		os.Chtimes(filepath.Join(dir, f), old, old)
	}
}

// TestGCMatchesCasync: camount gc leaves the same chunks as casync gc on
// copies of one store; --dry-run removes nothing; a young chunk (a make
// writing meanwhile) survives; a bad or other-digest index stops it.
func TestGCMatchesCasync(t *testing.T) {
	needCmd(t, "casync")
	dir := t.TempDir()
	src := func(name string, n int, seed byte) string {
		p := filepath.Join(dir, name)
		b := make([]byte, n)
		x := uint32(seed) + 1
		for i := range b {
			x = x*1664525 + 1013904223
			b[i] = byte(x >> 24)
		}
		os.WriteFile(p, b, 0o644)
		return p
	}
	a, b := src("a", 1500<<10, 1), src("b", 900<<10, 2)
	s1 := filepath.Join(dir, "s1.castr")
	runCmd(t, "casync", "make", "--store="+s1, filepath.Join(dir, "a.caibx"), a)
	runCmd(t, "casync", "make", "--store="+s1, filepath.Join(dir, "b.caibx"), b)
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(tree, 0o755)
	os.WriteFile(filepath.Join(tree, "f"), []byte(strings.Repeat("tree data ", 30000)), 0o644)
	camount(t, "make", "--store="+s1, filepath.Join(dir, "t.caidx"), tree)
	s2 := filepath.Join(dir, "s2.castr")
	runCmd(t, "cp", "-a", s1, s2)
	backdate(t, s2)
	all := storeFiles(t, s2)

	out := camount(t, "gc", "-n", "--store="+s2, filepath.Join(dir, "a.caibx"), filepath.Join(dir, "t.caidx"))
	if got := storeFiles(t, s2); len(got) != len(all) {
		t.Fatalf("--dry-run removed %d files", len(all)-len(got))
	}
	if !strings.Contains(out, "would remove ") {
		t.Errorf("dry run output: %q", out)
	}

	// Refusals: nothing is removed.
	bad := filepath.Join(dir, "bad.caibx")
	raw, _ := os.ReadFile(filepath.Join(dir, "a.caibx"))
	os.WriteFile(bad, raw[:len(raw)-7], 0o644)
	if _, err := tryCamount("gc", "--store="+s2, filepath.Join(dir, "a.caibx"), bad); err == nil || !strings.Contains(err.Error(), "bad.caibx") {
		t.Errorf("truncated index: %v", err)
	}
	runCmd(t, "casync", "make", "--digest=sha256", "--store="+filepath.Join(dir, "s3.castr"), filepath.Join(dir, "c.caibx"), b)
	if _, err := tryCamount("gc", "--store="+s2, filepath.Join(dir, "a.caibx"), filepath.Join(dir, "c.caibx")); err == nil || !strings.Contains(err.Error(), "different digests") {
		t.Errorf("mixed digests: %v", err)
	}
	if got := storeFiles(t, s2); len(got) != len(all) {
		t.Fatalf("a refused gc removed %d files", len(all)-len(got))
	}

	runCmd(t, "casync", "gc", "--store="+s1, filepath.Join(dir, "a.caibx"), filepath.Join(dir, "t.caidx"))
	out = camount(t, "gc", "--store="+s2, filepath.Join(dir, "a.caibx"), filepath.Join(dir, "t.caidx"))
	want, got := storeFiles(t, s1), storeFiles(t, s2)
	if strings.Join(want, "\n") != strings.Join(got, "\n") || len(got) == 0 || len(got) == len(all) {
		t.Errorf("after gc: casync keeps %d files, camount %d (of %d)", len(want), len(got), len(all))
	}
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "removed ") && strings.Contains(l, ".cacnk (") {
			n++
		}
	}
	if n != len(all)-len(got) {
		t.Errorf("gc printed %d removals, removed %d files:\n%s", n, len(all)-len(got), out)
	}
	// Everything still extracts.
	camount(t, "extract", "--store="+s2, filepath.Join(dir, "a.caibx"), filepath.Join(dir, "a.out"))
	camount(t, "extract", "--store="+s2, filepath.Join(dir, "t.caidx"), filepath.Join(dir, "t.out"))

	// A make into the store right before gc: with the default grace its
	// new chunks survive even though no given index references them, and
	// so do the chunks it reused (their time is refreshed).
	camount(t, "make", "--store="+s2, filepath.Join(dir, "b2.caibx"), b)
	camount(t, "make", "--store="+s2, filepath.Join(dir, "a2.caibx"), a)
	camount(t, "gc", "--store="+s2, filepath.Join(dir, "t.caidx"))
	camount(t, "extract", "--store="+s2, filepath.Join(dir, "b2.caibx"), filepath.Join(dir, "b.out"))
	camount(t, "extract", "--store="+s2, filepath.Join(dir, "a2.caibx"), filepath.Join(dir, "a2.out"))
}
