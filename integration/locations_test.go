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
	// Writing to a URL store without a writer is refused (s3+http(s)://
	// stores have one: s3_test.go).
	for _, s := range append([]string{"http://127.0.0.1:9/x", "https://h/x"}, unsupportedSchemes...) {
		expectRefused(t, dir, nil, "--store", s, "make", "--store="+s, "d.caibx", "b")
		expectRefused(t, dir, nil, "--store", s, "make", "--store="+s, "d.caidx", "tree")
		expectRefused(t, dir, []string{"CASYNC_STORE=" + s}, "$CASYNC_STORE", s, "make", "d.caibx", "b")
		expectRefused(t, dir, nil, "OUT", s+".caibx", "make", s+".caibx", "b")
	}
	expectRefused(t, dir, nil, "OUT", "s3+http://127.0.0.1:9/bucket/x.caibx", "make", "s3+http://127.0.0.1:9/bucket/x.caibx", "b")
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

func TestLocationsReadingVerbs(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "b"), randomBytes(100<<10, 8), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "tree"), 0o755)
	os.WriteFile(filepath.Join(dir, "tree", "f"), []byte("hello"), 0o644)
	for _, a := range [][]string{{"make", "--store=s:1", "c.caibx", "b"}, {"make", "--store=s:1", "t.caidx", "tree"}} {
		if _, stderr, code := camountIn(t, dir, nil, a...); code != 0 {
			t.Fatalf("%v: %s", a, stderr)
		}
	}
	// URL schemes no reader supports; for caches and outputs, http too.
	bad := unsupportedSchemes
	badLocal := append([]string{"http://127.0.0.1:9/x", "https://h/x"}, unsupportedSchemes...)
	type tc struct {
		flag, value string
		args        []string
	}
	var cases []tc
	for _, s := range bad {
		for _, verb := range [][]string{
			{"extract", "c.caibx", "out"},
			{"extract", "t.caidx", "outdir"},
			{"mount", "c.caibx", "mnt"},
			{"mount", "--daemon", "c.caibx", "mnt"},
			{"nbd", "--listen=unix://" + filepath.Join(dir, "sock"), "c.caibx"},
			{"mkdev", "c.caibx"},
			{"list", "t.caidx"},
			{"mtree", "t.caidx"},
			{"digest", "t.caidx"},
		} {
			withStore := append([]string{verb[0], "--store=" + s}, verb[1:]...)
			cases = append(cases, tc{"--store", s, withStore})
			cases = append(cases, tc{"--store", s, append([]string{verb[0], "--store=s:1|" + s}, verb[1:]...)})
			// the index argument
			idx := slices.Clone(verb)
			for i, a := range idx {
				if strings.HasSuffix(a, ".caibx") || strings.HasSuffix(a, ".caidx") {
					idx[i] = s + "/" + a
					cases = append(cases, tc{"INDEX", idx[i], idx})
				}
			}
		}
		for _, verb := range []string{"info", "list-chunks"} {
			cases = append(cases, tc{"INDEX", s + "/c.caibx", []string{verb, s + "/c.caibx"}})
		}
		cases = append(cases, tc{"--store", s, []string{"gc", "--store=" + s, "c.caibx"}})
		cases = append(cases,
			tc{"INDEX", s + "/c.caibx", []string{"gc", "--dry-run", "--store=s:1", s + "/c.caibx"}},
			tc{"INDEX", s + "/c.caibx", []string{"sign", "--key=k.key", s + "/c.caibx"}},
			tc{"--key", s + "/k.key", []string{"sign", "--key=" + s + "/k.key", "c.caibx"}},
			tc{"PROFILE", s + "/p", []string{"profile", "merge", s + "/p"}},
		)
	}
	for _, s := range badLocal {
		for _, verb := range [][]string{
			{"extract", "--store=s:1", "c.caibx", "out"},
			{"mount", "--store=s:1", "c.caibx", "mnt"},
			{"nbd", "--store=s:1", "--listen=unix://" + filepath.Join(dir, "sock"), "c.caibx"},
			{"mkdev", "--store=s:1", "c.caibx"},
			{"list", "--store=s:1", "t.caidx"},
		} {
			cases = append(cases, tc{"--cache", s, append(slices.Clone(verb), "--cache="+s)})
		}
		for _, f := range []string{"--stats-json", "--record-profile"} {
			cases = append(cases, tc{f, s, []string{"mount", "--store=s:1", f + "=" + s, "c.caibx", "mnt"}})
			cases = append(cases, tc{f, s, []string{"nbd", "--store=s:1", f + "=" + s, "--listen=unix://" + filepath.Join(dir, "sock"), "c.caibx"}})
		}
		cases = append(cases,
			tc{"--stats-json", s, []string{"extract", "--store=s:1", "--stats-json=" + s, "c.caibx", "out"}},
			tc{"--prefetch-profile", s, []string{"mount", "--store=s:1", "--prefetch-profile=" + s, "c.caibx", "mnt"}},
			tc{"OUT", s, []string{"extract", "--store=s:1", "c.caibx", s}},
			tc{"OUT", s, []string{"extract", "--store=s:1", "t.caidx", s}},
			tc{"MOUNTPOINT", s, []string{"mount", "--store=s:1", "c.caibx", s}},
			tc{"DIR", s, []string{"cache", "stats", s}},
			tc{"--output", s, []string{"profile", "merge", "--output=" + s, "c.caibx"}},
		)
	}
	for _, c := range cases {
		expectRefused(t, dir, nil, c.flag, c.value, c.args...)
	}

	// An unknown --listen scheme is refused, not taken for a host name.
	_, stderr, code := camountIn(t, dir, nil, "nbd", "--store=s:1", "--listen=http://127.0.0.1:0/", "c.caibx")
	if code == 0 || !strings.Contains(stderr, `unknown scheme http://`) {
		t.Errorf("nbd --listen=http://…: exit %d, %q", code, stderr)
	}
	// A regular file where the socket should be is named as such.
	os.WriteFile(filepath.Join(dir, "notsock"), nil, 0o644)
	_, stderr, code = camountIn(t, dir, nil, "nbd", "--store=s:1", "--listen=unix://"+filepath.Join(dir, "notsock"), "c.caibx")
	if code == 0 || !strings.Contains(stderr, "not a socket but a regular file") {
		t.Errorf("nbd --listen on a regular file: exit %d, %q", code, stderr)
	}

	// Local paths with colons and file:// URLs work for reading verbs.
	for _, a := range [][]string{
		{"extract", "--store=s:1", "--cache=c:1", "c.caibx", "o:1"},
		{"extract", "--store=file://" + filepath.Join(dir, "s:1"), "file://" + filepath.Join(dir, "c.caibx"), "file://" + filepath.Join(dir, "o:2")},
		{"list", "--store=s:1", "t.caidx"},
		{"info", "file://" + filepath.Join(dir, "c.caibx")},
		{"cache", "stats", "c:1"},
	} {
		if _, stderr, code := camountIn(t, dir, nil, a...); code != 0 {
			t.Errorf("%v: %s", a, stderr)
		}
	}
	checkFile(t, filepath.Join(dir, "o:1"), randomBytes(100<<10, 8))
	checkFile(t, filepath.Join(dir, "o:2"), randomBytes(100<<10, 8))
}
