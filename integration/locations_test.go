package integration

// Issue 17: every flag naming a store, cache, index or output is parsed by
// one function (package location); a value that looks like SCHEME:// with
// a scheme not supported for that use is refused before any work starts,
// with one line naming the flag, the value and what is supported, and
// nothing is left behind. A local path with a colon stays a local path.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// camountIn runs camount in dir with extra environment, returning stdout,
// stderr and the exit code.
func camountIn(t testing.TB, dir string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(camountBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// listTree returns every path under dir, relative, sorted.
func listTree(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && p != dir {
			r, _ := filepath.Rel(dir, p)
			out = append(out, r)
		}
		return nil
	})
	slices.Sort(out)
	return out
}

// unsupportedSchemes are refused wherever they appear today: no store,
// index or output reads or writes them.
var unsupportedSchemes = []string{"ftp://127.0.0.1:9/x", "gopher://h/x", "nbd://127.0.0.1/x"}

// expectRefused runs camount in a fresh directory holding the given
// fixtures and checks the refusal: exit 1 or 2, one line naming flag and
// value and saying what is supported, and no new file or directory.
func expectRefused(t *testing.T, dir string, env []string, flag, value string, args ...string) {
	t.Helper()
	before := listTree(t, dir)
	_, stderr, code := camountIn(t, dir, env, args...)
	if code == 0 {
		t.Errorf("camount %s: exit 0, want a refusal of %s %s", strings.Join(args, " "), flag, value)
		return
	}
	line := strings.TrimSpace(stderr)
	if !strings.Contains(line, flag+" "+value+": ") || !strings.Contains(line, "supported: local paths") {
		t.Errorf("camount %s: stderr %q does not name %s %s and what is supported", strings.Join(args, " "), stderr, flag, value)
	}
	if after := listTree(t, dir); !slices.Equal(before, after) {
		t.Errorf("camount %s left files behind: before %v, after %v", strings.Join(args, " "), before, after)
	}
}

func TestLocationsMake(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "b"), randomBytes(200<<10, 7), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "tree"), 0o755)
	os.WriteFile(filepath.Join(dir, "tree", "f"), []byte("hello"), 0o644)
	// Writing to any URL store is refused until a writer exists for it.
	for _, s := range append([]string{"http://127.0.0.1:9/x", "https://h/x", "s3+http://127.0.0.1:9/bucket/x"}, unsupportedSchemes...) {
		expectRefused(t, dir, nil, "--store", s, "make", "--store="+s, "d.caibx", "b")
		expectRefused(t, dir, nil, "--store", s, "make", "--store="+s, "d.caidx", "tree")
		expectRefused(t, dir, []string{"CASYNC_STORE=" + s}, "$CASYNC_STORE", s, "make", "d.caibx", "b")
		expectRefused(t, dir, nil, "OUT", s+".caibx", "make", s+".caibx", "b")
	}
	// A local path with a colon is a path; file:// URLs are local paths.
	if _, stderr, code := camountIn(t, dir, nil, "make", "--store=./a:b", "c.caibx", "b"); code != 0 {
		t.Fatalf("make --store=./a:b: %s", stderr)
	}
	if st, err := os.Stat(filepath.Join(dir, "a:b")); err != nil || !st.IsDir() {
		t.Fatalf("store ./a:b was not made: %v", err)
	}
	if _, stderr, code := camountIn(t, dir, nil, "make", "--store=file://"+filepath.Join(dir, "fs"), "file://"+filepath.Join(dir, "e.caibx"), "b"); code != 0 {
		t.Fatalf("make with file:// store and output: %s", stderr)
	}
	out := camount(t, "extract", "--store="+filepath.Join(dir, "fs"), filepath.Join(dir, "e.caibx"), filepath.Join(dir, "e.out"))
	_ = out
	checkFile(t, filepath.Join(dir, "e.out"), randomBytes(200<<10, 7))
	if _, stderr, code := camountIn(t, dir, nil, "extract", "--store=a:b", "c.caibx", "x:y"); code != 0 {
		t.Fatalf("extract --store=a:b c.caibx x:y: %s", stderr)
	}
	checkFile(t, filepath.Join(dir, "x:y"), randomBytes(200<<10, 7))
}
