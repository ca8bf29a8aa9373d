package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestMakeCacheAuto: 'camount make --make-cache-auto' (casync make
// --cache-auto) keeps the make cache in TREE/.cacac, and a second make
// reuses the chunks of the unchanged big file from it; a blob index is
// refused with the flag named.
func TestMakeCacheAuto(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(tree, 0o755)
	os.WriteFile(filepath.Join(tree, "big"), randomBytes(3<<20, 7), 0o644)
	store := filepath.Join(dir, "s.castr")
	reusedRe := regexp.MustCompile(`"reused chunks"=(\d+)`)
	makeOnce := func(name string) string {
		t.Helper()
		out, err := exec.Command(camountBin, "make", "-v", "--make-cache-auto", "--store="+store, filepath.Join(dir, name), tree).CombinedOutput()
		if err != nil {
			t.Fatalf("camount make --make-cache-auto: %v\n%s", err, out)
		}
		return string(out)
	}
	makeOnce("a.caidx")
	if st, err := os.Stat(filepath.Join(tree, ".cacac")); err != nil || !st.IsDir() {
		t.Fatalf("no make cache in TREE/.cacac after make --make-cache-auto: %v", err)
	}
	out := makeOnce("b.caidx")
	m := reusedRe.FindStringSubmatch(out)
	if m == nil || m[1] == "0" {
		t.Errorf("the second make reused no chunk from TREE/.cacac:\n%s", out)
	}
	x := filepath.Join(dir, "x")
	camount(t, "extract", "--store="+store, filepath.Join(dir, "b.caidx"), x)
	a, _ := os.ReadFile(filepath.Join(tree, "big"))
	b, _ := os.ReadFile(filepath.Join(x, "big"))
	if len(a) == 0 || string(a) != string(b) {
		t.Errorf("the extracted big file differs from the tree's")
	}
	for _, args := range [][]string{
		{"make", "--make-cache-auto", "--store=" + store, filepath.Join(dir, "c.caibx"), filepath.Join(tree, "big")},
	} {
		out, err := exec.Command(camountBin, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--make-cache-auto") {
			t.Errorf("camount %s: want a refusal naming --make-cache-auto, got %v:\n%s", strings.Join(args, " "), err, out)
		}
	}
}
