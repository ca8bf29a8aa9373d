package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var stdioTmp string // TMPDIR of the programs stdio runs

// stdio runs a program with stdin from a file (or a directory, as a shell's
// "< DIR"), or from bytes through a pipe, in dir; it returns stdout and
// stderr.
func stdio(t *testing.T, dir string, stdin any, name string, args ...string) ([]byte, string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	// Temporary files go to dir/tmp, checked empty at the end.
	cmd.Env = append(os.Environ(), "TMPDIR="+stdioTmp)
	switch in := stdin.(type) {
	case string:
		f, err := os.Open(in)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.Stdin = f
	case []byte:
		cmd.Stdin = bytes.NewReader(in) // a pipe
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.Bytes(), errb.String(), err
}

// TestStdioOperands: casync's "-" operand. make writes the image to
// standard output and reads a blob (or, as "< DIR", a tree) from standard
// input; the reading verbs read the index or archive from standard input.
// The bytes equal casync's (whose make also appends the digest line to the
// index on standard output; camount prints it on standard error), and the
// default store is default.castr in the current directory, as casync's.
func TestStdioOperands(t *testing.T) {
	needCmd(t, "casync")
	dir := t.TempDir()
	stdioTmp = mkdirT(t, dir, "tmp")
	blob := filepath.Join(dir, "blob.bin")
	data := randomBytes(600<<10, 7)
	os.WriteFile(blob, data, 0o644)
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "sub"), 0o755)
	os.WriteFile(filepath.Join(tree, "a"), []byte("alpha\n"), 0o644)
	os.WriteFile(filepath.Join(tree, "sub", "b"), data[:100<<10], 0o600)
	store := filepath.Join(dir, "s.castr")
	cstore := filepath.Join(dir, "c.castr")

	// casync's make to stdout: the index, then the digest line.
	// The digest line is 64 hex digits and a newline at the end.
	splitCasync := func(out []byte) ([]byte, string) {
		if len(out) < 65 || out[len(out)-1] != '\n' {
			t.Fatalf("casync make -: output (%d bytes) does not end in a digest line: %q", len(out), out[max(0, len(out)-80):])
		}
		return out[:len(out)-65], strings.TrimSpace(string(out[len(out)-65:]))
	}
	cOut, _, err := stdio(t, dir, nil, "casync", "make", "--store="+cstore, "-", blob)
	if err != nil {
		t.Fatalf("casync make - FILE: %v", err)
	}
	cIdx, cDigest := splitCasync(cOut)
	for _, c := range []struct {
		label string
		stdin any
		args  []string
	}{
		{"- FILE", nil, []string{"-", blob}},
		{"- - < FILE", blob, []string{"-", "-"}},
		{"- - from a pipe (casync refuses pipes)", data, []string{"-", "-"}},
	} {
		out, stderr, err := stdio(t, dir, c.stdin, camountBin, append([]string{"make", "--store=" + store}, c.args...)...)
		if err != nil {
			t.Errorf("camount make %s: %v\n%s", c.label, err, stderr)
			continue
		}
		if !bytes.Equal(out, cIdx) {
			t.Errorf("camount make %s: the index on stdout (%d bytes) differs from casync's (%d bytes)", c.label, len(out), len(cIdx))
		}
		if !strings.Contains(stderr, cDigest) {
			t.Errorf("camount make %s: stderr %q lacks the digest %s", c.label, stderr, cDigest)
		}
	}
	idx := filepath.Join(dir, "blob.caibx")
	os.WriteFile(idx, cIdx, 0o644)

	// Trees: an archive on stdout, from a path or "< DIR".
	cOut, _, err = stdio(t, dir, nil, "casync", "make", "-", tree)
	if err != nil {
		t.Fatalf("casync make - DIR: %v", err)
	}
	cArc := cOut // an archive: casync prints no digest after it
	for _, c := range []struct {
		label string
		stdin any
		args  []string
	}{
		{"- DIR", nil, []string{"-", tree}},
		{"- - < DIR", tree, []string{"-", "-"}},
	} {
		out, stderr, err := stdio(t, dir, c.stdin, camountBin, append([]string{"make"}, c.args...)...)
		if err != nil || !bytes.Equal(out, cArc) {
			t.Errorf("camount make %s: %v, %d bytes; casync's archive has %d\n%s", c.label, err, len(out), len(cArc), stderr)
		}
	}
	arc := filepath.Join(dir, "tree.catar")
	os.WriteFile(arc, cArc, 0o644)
	_, stderr, err := stdio(t, dir, tree, camountBin, "make", filepath.Join(dir, "x.catar"), "-")
	if b, _ := os.ReadFile(filepath.Join(dir, "x.catar")); err != nil || !bytes.Equal(b, cArc) {
		t.Errorf("camount make x.catar - < DIR: %v\n%s", err, stderr)
	}

	// An archive index to stdout with no --store: default.castr in the
	// current directory, as casync.
	work := mkdirT(t, dir, "work")
	cwork := mkdirT(t, dir, "cwork")
	tIdx, stderr, err := stdio(t, work, nil, camountBin, "make", "--what=archive-index", "-", tree)
	if err != nil {
		t.Fatalf("camount make --what=archive-index - DIR: %v\n%s", err, stderr)
	}
	cOut, _, err = stdio(t, cwork, nil, "casync", "make", "--what=archive-index", "-", tree)
	if err != nil {
		t.Fatal(err)
	}
	if ci, _ := splitCasync(cOut); !bytes.Equal(tIdx, ci) {
		t.Errorf("camount make --what=archive-index - DIR differs from casync's index")
	}
	if a, b := storeChunks(t, filepath.Join(work, "default.castr")), storeChunks(t, filepath.Join(cwork, "default.castr")); len(a) == 0 || len(a) != len(b) {
		t.Errorf("default.castr in the current directory: %d chunks, casync's %d", len(a), len(b))
	}
	tIdxFile := filepath.Join(dir, "tree.caidx")
	os.WriteFile(tIdxFile, tIdx, 0o644)

	// The reading verbs, with the image on stdin; the same output as
	// casync's with the same stdin.
	for _, c := range []struct {
		dir   string
		stdin string
		args  []string
	}{
		{dir, arc, []string{"list", "-"}},
		{dir, arc, []string{"mtree", "-"}},
		{dir, arc, []string{"stat", "-", "sub/b"}},
		{dir, arc, []string{"digest", "-"}},
		{dir, blob, []string{"digest", "-"}},
		{work, tIdxFile, []string{"list", "--what=archive-index", "-"}},
		{work, tIdxFile, []string{"digest", "--what=archive-index", "-"}},
		{dir, idx, []string{"digest", "--what=blob-index", "--store=" + store, "-"}},
		{dir, tree, []string{"list", "-"}},
	} {
		want, _, err := stdio(t, c.dir, c.stdin, "casync", c.args...)
		if err != nil {
			t.Fatalf("casync %s < %s: %v", strings.Join(c.args, " "), c.stdin, err)
		}
		got, stderr, err := stdio(t, c.dir, c.stdin, camountBin, c.args...)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("camount %s < %s: %v\n%s\nwant (casync):\n%s\nstderr: %s", strings.Join(c.args, " "), filepath.Base(c.stdin), err, got, want, stderr)
		}
	}
	// camount recognises an index on stdin without --what (casync needs it).
	want, _, _ := stdio(t, work, tIdxFile, "casync", "list", "--what=archive-index", "-")
	if got, stderr, err := stdio(t, work, tIdxFile, camountBin, "list", "-"); err != nil || !bytes.Equal(got, want) {
		t.Errorf("camount list - < tree.caidx (no --what): %v\n%s\n%s", err, got, stderr)
	}
	// extract - OUT and - - (the index from a pipe, too).
	outFile := filepath.Join(dir, "out.bin")
	if _, stderr, err := stdio(t, dir, cIdx, camountBin, "extract", "--store="+store, "-", outFile); err != nil {
		t.Errorf("camount extract - OUT: %v\n%s", err, stderr)
	} else if b, _ := os.ReadFile(outFile); !bytes.Equal(b, data) {
		t.Errorf("camount extract - OUT: wrong bytes")
	}
	if got, stderr, err := stdio(t, dir, idx, camountBin, "extract", "--store="+store, "-", "-"); err != nil || !bytes.Equal(got, data) {
		t.Errorf("camount extract - -: %v (%d bytes)\n%s", err, len(got), stderr)
	}
	outDir := filepath.Join(dir, "out-tree")
	if _, stderr, err := stdio(t, work, tIdx, camountBin, "extract", "-", outDir); err != nil {
		t.Errorf("camount extract - DIR (default store): %v\n%s", err, stderr)
	} else if b, _ := os.ReadFile(filepath.Join(outDir, "sub", "b")); !bytes.Equal(b, data[:100<<10]) {
		t.Errorf("camount extract - DIR: sub/b wrong")
	}

	// Refusals, each naming what is wrong.
	for _, c := range []struct {
		stdin any
		args  []string
		want  string
	}{
		{data, []string{"make", filepath.Join(dir, "y.caidx"), "-"}, "standard input is not one"},
		{data, []string{"make", "--what=archive", "-", "-"}, "is not one"},
		{tree, []string{"make", "--what=blob-index", "-", "-"}, "the input is a directory"},
		{data[:100], []string{"list", "-"}, "standard input is not a casync index or archive"},
		{idx, []string{"mount", "--daemon", "-", filepath.Join(dir, "mnt")}, "cannot be served by a --daemon"},
	} {
		_, stderr, err := stdio(t, dir, c.stdin, camountBin, c.args...)
		if err == nil || !strings.Contains(stderr, c.want) {
			t.Errorf("camount %s: %v %q, want an error containing %q", strings.Join(c.args, " "), err, stderr, c.want)
		}
	}
	// A terminal is no image: script(1) gives the verbs one.
	if _, err := exec.LookPath("script"); err == nil {
		for _, c := range []struct{ cmd, want string }{
			{camountBin + " list -", "standard input is a terminal"},
			{camountBin + " make - " + tree, "standard output is a terminal"},
		} {
			out, _ := exec.Command("script", "-qec", c.cmd, "/dev/null").CombinedOutput()
			if !strings.Contains(string(out), c.want) {
				t.Errorf("%s on a terminal: %q, want %q", c.cmd, out, c.want)
			}
		}
	}
	if left, _ := os.ReadDir(stdioTmp); len(left) > 0 {
		t.Errorf("temporary files left in $TMPDIR: %v", left)
	}
}
