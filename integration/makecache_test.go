package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMakeCache: 'camount make --make-cache=DIR' (casync make --cache)
// reuses the chunks of unchanged files without reading them, and the index
// stays byte-identical to casync's make without a cache through appends,
// an in-place rewrite with a restored mtime, chmod, a new file shifting
// every later offset, a chunk removed from the store and another chunk
// size.
func TestMakeCache(t *testing.T) {
	needCmd(t, "casync", "diff")
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "sub"), 0o755)
	big1, big2 := filepath.Join(tree, "big1"), filepath.Join(tree, "sub", "big2")
	os.WriteFile(big1, randomBytes(3<<20, 1), 0o644)
	os.WriteFile(big2, randomBytes(2<<20, 2), 0o644)
	for i := range 30 {
		os.WriteFile(filepath.Join(tree, "f"+strconv.Itoa(i)), []byte(strings.Repeat("x", i*100)), 0o644)
	}
	store := filepath.Join(dir, "s.castr")
	cache := filepath.Join(dir, "cache")
	reusedRe := regexp.MustCompile(`"reused chunks"=(\d+)`)
	n := 0
	// make runs camount make with the cache and casync make without it,
	// compares the indexes and extracts camount's; it returns how many
	// chunks camount reused and what it printed on stdout.
	make := func(label string, extra ...string) (int, string) {
		t.Helper()
		n++
		ours := filepath.Join(dir, "c"+strconv.Itoa(n)+".caidx")
		ref := filepath.Join(dir, "r"+strconv.Itoa(n)+".caidx")
		cmd := exec.Command(camountBin, append(append([]string{"make", "-v", "--make-cache=" + cache, "--store=" + store}, extra...), ours, tree)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: camount make --make-cache: %v\n%s", label, err, &stderr)
		}
		runCmd(t, "casync", append(append([]string{"make", "--store=" + filepath.Join(dir, "cs.castr")}, extra...), ref, tree)...)
		a, _ := os.ReadFile(ours)
		b, _ := os.ReadFile(ref)
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s: the index differs from casync's (%d and %d bytes)", label, len(a), len(b))
		}
		x := filepath.Join(dir, "x"+strconv.Itoa(n))
		camount(t, "extract", "--store="+store, ours, x)
		if out, err := exec.Command("diff", "-r", tree, x).CombinedOutput(); err != nil {
			t.Errorf("%s: the extracted tree differs: %s", label, out)
		}
		os.RemoveAll(x)
		m := reusedRe.FindStringSubmatch(stderr.String())
		if m == nil {
			t.Fatalf("%s: no make cache line in the -v log:\n%s", label, &stderr)
		}
		r, _ := strconv.Atoi(m[1])
		t.Logf("%s: %d chunks reused", label, r)
		return r, strings.TrimSpace(stdout.String())
	}
	digestOf := func(idx string) string {
		return strings.TrimSpace(runCmd(t, "casync", "digest", "--store="+filepath.Join(dir, "cs.castr"), idx))
	}

	if r, out := make("first"); r != 0 || out != digestOf(filepath.Join(dir, "r1.caidx")) {
		t.Errorf("first make: %d reused (want 0), printed %q, want the digest casync computes", r, out)
	}
	r, out := make("unchanged")
	if r == 0 || out != "" {
		t.Errorf("unchanged tree: %d chunks reused (want some), printed %q (want no digest, as casync)", r, out)
	}
	// Append to big1: it counts as changed (its size) and is read; big2's
	// chunks are reused.
	f, _ := os.OpenFile(big1, os.O_APPEND|os.O_WRONLY, 0)
	f.Write(randomBytes(100<<10, 3))
	f.Close()
	if r, _ := make("append"); r == 0 {
		t.Errorf("after an append to big1: nothing reused")
	}
	// Rewrite the middle of big2 in place and restore its mtime: ctime
	// tells (as casync's cache sees it).
	st, _ := os.Stat(big2)
	f, _ = os.OpenFile(big2, os.O_WRONLY, 0)
	f.WriteAt(randomBytes(300<<10, 4), 700<<10)
	f.Close()
	os.Chtimes(big2, st.ModTime(), st.ModTime())
	make("rewrite, mtime restored")
	// chmod, and a new file sorting first: every later offset moves.
	os.Chmod(filepath.Join(tree, "f3"), 0o600)
	os.WriteFile(filepath.Join(tree, "a0"), randomBytes(12345, 5), 0o644)
	if r, _ := make("new file first"); r == 0 {
		t.Errorf("after adding a file before the others: nothing reused")
	}
	// A chunk the cache would reuse is gone from the store: it is read
	// and stored again.
	chunks := storeChunks(t, store)
	removed := 0
	for _, c := range chunks {
		if removed < 3 {
			os.Remove(c)
			removed++
		}
	}
	time.Sleep(10 * time.Millisecond)
	make("chunks removed from the store")
	// Another chunk size: the cache does not apply.
	if r, _ := make("other chunk size", "--chunk-size=32K"); r != 0 {
		t.Errorf("--chunk-size=32K reused %d chunks cached for the default size", r)
	}
	if r, _ := make("unchanged at 32K", "--chunk-size=32K"); r == 0 {
		t.Errorf("a second make at 32K reused nothing")
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"make", "--make-cache=" + cache, filepath.Join(dir, "x.caibx"), big1}, "only a tree index"},
		{[]string{"make", "--make-cache=" + cache, filepath.Join(dir, "x.catar"), tree}, "only a tree index"},
	} {
		if _, err := tryCamount(c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("camount %s: %v, want %q", strings.Join(c.args, " "), err, c.want)
		}
	}
	// A damaged cache file is named, not trusted.
	files, _ := filepath.Glob(filepath.Join(cache, "*.makecache"))
	if len(files) == 0 {
		t.Fatal("no cache file")
	}
	for _, f := range files {
		os.WriteFile(f, []byte("garbage"), 0o644)
	}
	if _, err := tryCamount("make", "--make-cache="+cache, "--store="+store, filepath.Join(dir, "y.caidx"), tree); err == nil || !strings.Contains(err.Error(), "make cache") {
		t.Errorf("a damaged cache: %v, want an error naming the make cache", err)
	}
}
