package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestCasyncParityOptions compares with casync the smaller options camount
// has for parity: digest of a BLOB and a BLOB_INDEX, list --recursive=no
// and --extra-store.
func TestCasyncParityOptions(t *testing.T) {
	needCmd(t, "casync")
	dir := t.TempDir()
	raw := filepath.Join(dir, "raw")
	data := randomBytes(400<<10, 9)
	os.WriteFile(raw, data, 0o644)
	store := filepath.Join(dir, "s.castr")
	a, b := filepath.Join(dir, "a.caibx"), filepath.Join(dir, "b.caibx")
	runCmd(t, "casync", "make", "--store="+store, a, raw)
	runCmd(t, "casync", "make", "--digest=sha256", "--store="+store, b, raw)
	for _, args := range [][]string{
		{"digest", "--store=" + store, a},
		{"digest", "--store=" + store, b},
		{"digest", "--store=" + store, "--digest=sha256", b},
		{"digest", raw},
		{"digest", "--digest=sha256", raw},
	} {
		want := runCmd(t, "casync", args...)
		if got := camount(t, args...); got != want {
			t.Errorf("%q: casync %q, camount %q", args, want, got)
		}
	}

	tree := filepath.Join(dir, "t")
	os.MkdirAll(filepath.Join(tree, "a", "b"), 0o755)
	os.MkdirAll(filepath.Join(tree, "c"), 0o755)
	os.WriteFile(filepath.Join(tree, "a", "b", "f"), []byte("f"), 0o644)
	os.WriteFile(filepath.Join(tree, "z"), []byte("z"), 0o644)
	cat := filepath.Join(dir, "t.catar")
	runCmd(t, "casync", "make", cat, tree)
	for _, sub := range []string{"", "a", "/a/b", "z"} {
		args := []string{"list", "--recursive=no", cat}
		if sub != "" {
			args = append(args, sub)
		}
		want, _ := tryCmd("casync", args...) // casync may complain after listing a file
		if got := camount(t, args...); got != want {
			t.Errorf("%q: casync %q, camount %q", args, want, got)
		}
	}

	// --what names what an operand without a casync suffix is.
	bin := filepath.Join(dir, "t.bin")
	os.Link(cat, bin)
	for _, args := range [][]string{
		{"list", "--what=archive", bin},
		{"stat", "--what=archive", bin, "a"},
		{"digest", "--what=archive", bin},
	} {
		want := runCmd(t, "casync", args...)
		if got := camount(t, args...); got != want {
			t.Errorf("%q: casync %q, camount %q", args, want, got)
		}
	}
	ci, mi := filepath.Join(dir, "c.idx"), filepath.Join(dir, "m.idx")
	runCmd(t, "casync", "make", "--what=archive-index", "--store="+store, ci, tree)
	camount(t, "make", "--what=archive-index", "--store="+store, mi, tree)
	if cb, mb := readFile(t, ci), readFile(t, mi); cb != mb || cb == "" {
		t.Error("make --what=archive-index: index differs from casync's")
	}
	camount(t, "extract", "--what=archive-index", "--store="+store, mi, filepath.Join(dir, "what-out"))
	if b := readFile(t, filepath.Join(dir, "what-out", "z")); b != "z" {
		t.Errorf("extract --what=archive-index: z = %q", b)
	}

	// With no operand, list, stat and digest read the current directory,
	// and make given only its output packs it, as casync does.
	inDir := func(name string, args ...string) string {
		c := exec.Command(name, args...)
		c.Dir = tree
		out, err := c.Output()
		if err != nil {
			t.Fatalf("%s %q in %s: %v", name, args, tree, err)
		}
		return string(out)
	}
	for _, v := range []string{"list", "stat", "digest"} {
		if want, got := inDir("casync", v), inDir(camountBin, v); want != got {
			t.Errorf("%s with no operand: casync %q, camount %q", v, want, got)
		}
	}
	inDir("casync", "make", filepath.Join(dir, "d1.catar"))
	inDir(camountBin, "make", filepath.Join(dir, "d2.catar"))
	if readFile(t, filepath.Join(dir, "d1.catar")) != readFile(t, filepath.Join(dir, "d2.catar")) {
		t.Error("make OUT with no input: archive differs from casync's")
	}

	// --extra-store: chunks split over two stores.
	extra := filepath.Join(dir, "extra.castr")
	moved := 0
	for _, f := range storeFiles(t, store) {
		if moved%2 == 0 {
			os.MkdirAll(filepath.Join(extra, filepath.Dir(f)), 0o755)
			os.Rename(filepath.Join(store, f), filepath.Join(extra, f))
		}
		moved++
	}
	out := filepath.Join(dir, "out")
	camount(t, "extract", "--store="+store, "--extra-store="+extra, a, out)
	checkFile(t, out, data)
	if _, err := tryCamount("extract", "--store="+store, a, filepath.Join(dir, "out2")); err == nil {
		t.Error("extract without the extra store succeeded")
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
