package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIConventions checks the binary speaks GNU options (help, errors,
// short options, --version, completion, man pages) while the Go-style
// spellings of earlier releases keep working.
func TestCLIConventions(t *testing.T) {
	help := camount(t, "make", "--help")
	for _, want := range []string{"--store=STORE", "--chunk-size=[MIN:]AVG[:MAX]", "-v, --verbose", "-l, --log-level=LEVEL"} {
		if !strings.Contains(help, want) {
			t.Errorf("make --help lacks %q:\n%s", want, help)
		}
	}
	out, err := tryCamount("make", "--no-such-flag", "a.caibx", "b")
	if err == nil || !strings.Contains(err.Error(), "unknown flag: --no-such-flag") {
		t.Errorf("unknown flag: %v", err)
	}
	if ee, ok := err.(interface{ ExitCode() int }); ok && ee.ExitCode() != 2 {
		t.Errorf("unknown flag: exit %d, want 2", ee.ExitCode())
	}
	_ = out
	if v := camount(t, "--version"); !strings.HasPrefix(v, "camount ") {
		t.Errorf("--version: %q", v)
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if s := camount(t, "completion", sh); !strings.Contains(s, "camount") {
			t.Errorf("completion %s: %q", sh, s)
		}
	}
	// Every shell's script asks the binary itself: completing "camount ma"
	// offers make, and "camount mount --ca" the cache flags.
	if got := camount(t, "__complete", "ma"); !strings.Contains(got, "make\t") {
		t.Errorf("completion of 'camount ma': %q", got)
	}
	if got := camount(t, "__complete", "mount", "--cache-m"); !strings.Contains(got, "--cache-max-size") {
		t.Errorf("completion of 'camount mount --cache-m': %q", got)
	}
	if _, err := exec.LookPath("bash"); err == nil {
		script := filepath.Join(t.TempDir(), "c.bash")
		os.WriteFile(script, []byte(camount(t, "completion", "bash")), 0o644)
		runCmd(t, "bash", "-n", script)
	}

	// The same blob made with old and new spellings, flags before and
	// after the positional arguments.
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	b := make([]byte, 300<<10)
	for i := range b {
		b[i] = byte(i * 7 / 3)
	}
	os.WriteFile(in, b, 0o644)
	store := filepath.Join(dir, "s.castr")
	camount(t, "make", "-store="+store, filepath.Join(dir, "a.caibx"), in)
	camount(t, "make", filepath.Join(dir, "b.caibx"), in, "--store", store, "-v")
	camount(t, "make", "-store", store, "--chunk-size=16K:64K:256K", filepath.Join(dir, "c.caibx"), in)
	for _, n := range []string{"b", "c"} {
		x, _ := os.ReadFile(filepath.Join(dir, "a.caibx"))
		y, _ := os.ReadFile(filepath.Join(dir, n+".caibx"))
		if string(x) != string(y) || len(x) == 0 {
			t.Errorf("%s.caibx differs from a.caibx", n)
		}
	}
	camount(t, "extract", "--store="+store, filepath.Join(dir, "a.caibx"), filepath.Join(dir, "out"))
	if got, _ := os.ReadFile(filepath.Join(dir, "out")); string(got) != string(b) {
		t.Errorf("extract after make with mixed spellings: wrong bytes")
	}

	// make install's man pages: one per verb.
	man := filepath.Join(dir, "man")
	camount(t, "gen-man", man)
	for _, v := range []string{"camount.1", "camount-make.1", "camount-mount.1", "camount-extract.1"} {
		p, err := os.ReadFile(filepath.Join(man, v))
		if err != nil || !strings.Contains(string(p), ".TH") {
			t.Errorf("man page %s: %v", v, err)
		}
	}
	if _, err := exec.LookPath("man"); err == nil {
		if txt, err := tryCmd("man", "-l", filepath.Join(man, "camount-make.1")); err == nil && !strings.Contains(txt, "store") {
			t.Errorf("man camount-make renders without --store:\n%s", txt)
		}
	}
}
