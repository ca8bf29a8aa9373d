package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/camount/camount/chunker"
)

// seedTrees is a v1 tree and a v2 made from it (files changed, renamed,
// added and removed), v2 packed by casync into a store served by nginx.
type seedTrees struct {
	v1, v2  string
	ngx     *nginxServer
	index   string // URL of v2.caidx (its store is default.castr beside it)
	missing int    // distinct chunks of v2 that v1 (serialised) lacks
	x       *chunker.Index
}

func makeSeedTrees(t *testing.T) *seedTrees {
	t.Helper()
	needCmd(t, "casync", "nginx")
	needRoot(t) // ownership in the trees is restored and compared
	base := t.TempDir()
	v1 := filepath.Join(base, "v1")
	for i := 0; i < 24; i++ {
		d := filepath.Join(v1, "dir"+string(rune('a'+i%6)))
		os.MkdirAll(d, 0o755)
		mustOK(t, os.WriteFile(filepath.Join(d, "big"+string(rune('a'+i))), randomBytes(40<<10+i*9000, uint64(i)), 0o644))
	}
	for i := 0; i < 150; i++ {
		d := filepath.Join(v1, "small", "s"+string(rune('a'+i%10)))
		os.MkdirAll(d, 0o755)
		mustOK(t, os.WriteFile(filepath.Join(d, "f"+strings.Repeat("x", i%7)+string(rune('a'+i/10))), randomBytes(100+i*37, uint64(1000+i)), 0o640))
	}
	os.MkdirAll(filepath.Join(v1, "gone-dir"), 0o755)
	mustOK(t, os.WriteFile(filepath.Join(v1, "gone-dir", "f"), randomBytes(30000, 77), 0o644))
	mustOK(t, os.Symlink("dira/biga", filepath.Join(v1, "link")))
	// Every directory and file gets a fixed mtime, so that casync's and
	// camount's mtree match and v2's copies keep them.
	stamp := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	v2 := filepath.Join(base, "v2")
	runCmd(t, "cp", "-a", v1, v2)
	// v2: two files changed in the middle, two renamed, two added (one a
	// copy of a v1 file), two removed and a directory removed.
	for _, f := range []string{"dirb/bigb", "dirc/bigo"} {
		p := filepath.Join(v2, f)
		b, err := os.ReadFile(p)
		mustOK(t, err)
		copy(b[len(b)/2:], randomBytes(3000, 5))
		mustOK(t, os.WriteFile(p, b, 0o644))
	}
	mustOK(t, os.Rename(filepath.Join(v2, "dird/bigd"), filepath.Join(v2, "dird/bigd-renamed")))
	mustOK(t, os.Rename(filepath.Join(v2, "dire/bige"), filepath.Join(v2, "dira/moved-here")))
	mustOK(t, os.WriteFile(filepath.Join(v2, "new-file"), randomBytes(200<<10, 99), 0o644))
	runCmd(t, "cp", "-a", filepath.Join(v1, "dirf/bigf"), filepath.Join(v2, "dirf/copy-of-bigf"))
	mustOK(t, os.Remove(filepath.Join(v2, "dira/bigm")))
	mustOK(t, os.Remove(filepath.Join(v2, "small/sa/fa")))
	mustOK(t, os.RemoveAll(filepath.Join(v2, "gone-dir")))
	for _, tree := range []string{v1, v2} {
		filepath.Walk(tree, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode()&os.ModeSymlink == 0 {
				os.Chtimes(p, stamp, stamp)
			}
			return nil
		})
	}
	root := filepath.Join(base, "srv")
	os.MkdirAll(root, 0o755)
	runCmd(t, "casync", "make", "--store="+filepath.Join(root, "default.castr"), filepath.Join(root, "v2.caidx"), v2)
	// The chunks of v1 serialised with v2's (default) flags and chunk sizes.
	runCmd(t, "casync", "make", "--store="+filepath.Join(base, "v1.castr"), filepath.Join(base, "v1.caidx"), v1)
	have := map[chunker.ID]bool{}
	for _, c := range readIndex(t, filepath.Join(base, "v1.caidx")).Chunks {
		have[c.ID] = true
	}
	x := readIndex(t, filepath.Join(root, "v2.caidx"))
	miss := map[chunker.ID]bool{}
	for _, c := range x.Chunks {
		if !have[c.ID] {
			miss[c.ID] = true
		}
	}
	if len(miss) == 0 || len(miss) > len(x.Chunks)/2 {
		t.Fatalf("v2 has %d chunks, %d not in v1: the trees do not make a seeding test", len(x.Chunks), len(miss))
	}
	ngx := startNginx(t, root, nil)
	return &seedTrees{v1: v1, v2: v2, ngx: ngx, index: ngx.URL + "/v2.caidx", missing: len(miss), x: x}
}

func (s *seedTrees) resetLog(t *testing.T) { mustOK(t, os.Truncate(s.ngx.AccessLog, 0)) }

// checkTree compares out with v2: diff -r and camount mtree against
// casync mtree.
func (s *seedTrees) checkTree(t *testing.T, out string) {
	t.Helper()
	runCmd(t, "diff", "-r", "--no-dereference", s.v2, out)
	want := runCmd(t, "casync", "mtree", s.v2)
	if got := camount(t, "mtree", out); got != want {
		t.Fatalf("camount mtree of the extracted tree differs from casync mtree of v2:\n%s", diffLines(want, got))
	}
}

func ino(t *testing.T, p string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	mustOK(t, syscall.Lstat(p, &st))
	return st.Ino
}

func mustOK(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestSeedTreeExtract: camount extract v2.caidx --seed=v1 reproduces v2,
// fetching exactly the chunks v1 lacks (never more than casync extract
// --seed), with --hardlink, --delete and --undo-immutable as casync's.
func TestSeedTreeExtract(t *testing.T) {
	s := makeSeedTrees(t)
	cache := t.TempDir()
	env := append(os.Environ(), "XDG_CACHE_HOME="+cache)
	run := func(args ...string) (string, error) {
		cmd := exec.Command(camountBin, args...)
		cmd.Env = env
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	mustRun := func(args ...string) {
		t.Helper()
		if out, err := run(args...); err != nil {
			t.Fatalf("camount %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	// casync's own figure.
	s.resetLog(t)
	casOut := filepath.Join(t.TempDir(), "cas")
	runCmd(t, "casync", "extract", "--seed="+s.v1, s.index, casOut)
	casync := s.ngx.chunkRequests(t)
	s.checkTree(t, casOut)

	s.resetLog(t)
	out := filepath.Join(t.TempDir(), "out")
	mustRun("extract", "--seed="+s.v1, s.index, out)
	got := s.ngx.chunkRequests(t)
	s.checkTree(t, out)
	t.Logf("v2: %d chunks, %d not in v1; fetched: casync %d, camount %d", len(s.x.Chunks), s.missing, casync, got)
	if got != s.missing {
		t.Errorf("camount fetched %d chunks, want exactly the %d no seed holds", got, s.missing)
	}
	if got > casync {
		t.Errorf("camount fetched %d chunks, casync %d", got, casync)
	}

	t.Run("hardlink", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out")
		mustRun("extract", "--seed="+s.v1, "--hardlink=yes", s.index, out)
		s.checkTree(t, out)
		for _, p := range [][2]string{{"dira/biga", "dira/biga"}, {"small/sb/fxxxxb", "small/sb/fxxxxb"},
			{"dird/bigd-renamed", "dird/bigd"}, {"dirf/copy-of-bigf", "dirf/bigf"}} {
			if ino(t, filepath.Join(out, p[0])) != ino(t, filepath.Join(s.v1, p[1])) {
				t.Errorf("%s is not a hard link of the seed's %s", p[0], p[1])
			}
		}
		if ino(t, filepath.Join(out, "dirb/bigb")) == ino(t, filepath.Join(s.v1, "dirb/bigb")) {
			t.Error("a changed file was hard-linked to its old version")
		}
	})

	t.Run("delete", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out")
		runCmd(t, "cp", "-a", s.v1, out) // v1 in place, updated to v2
		mustRun("extract", "--seed="+s.v1, s.index, out)
		s.checkTree(t, out)
		for _, gone := range []string{"gone-dir", "dira/bigm", "dird/bigd"} {
			if _, err := os.Lstat(filepath.Join(out, gone)); err == nil {
				t.Errorf("%s is not in v2 but was not deleted", gone)
			}
		}
		mustOK(t, os.WriteFile(filepath.Join(out, "extra"), []byte("x"), 0o644))
		mustRun("extract", "--seed="+s.v1, "--delete=no", s.index, out)
		if _, err := os.Lstat(filepath.Join(out, "extra")); err != nil {
			t.Error("--delete=no removed an entry")
		}
	})

	t.Run("undo-immutable", func(t *testing.T) {
		needCmd(t, "chattr")
		out := filepath.Join(t.TempDir(), "out")
		runCmd(t, "cp", "-a", s.v1, out)
		p := filepath.Join(out, "dirb/bigb") // changed in v2
		if b, err := exec.Command("chattr", "+i", p).CombinedOutput(); err != nil {
			t.Skipf("chattr +i does not work here: %s", b)
		}
		t.Cleanup(func() { exec.Command("chattr", "-R", "-i", out).Run() })
		if msg, err := run("extract", "--seed="+s.v1, s.index, out); err == nil {
			t.Fatal("replacing an immutable file without --undo-immutable succeeded")
		} else if !strings.Contains(msg, "bigb") {
			t.Errorf("the error does not name the file: %s", msg)
		}
		mustRun("extract", "--seed="+s.v1, "--undo-immutable", s.index, out)
		s.checkTree(t, out)
	})

	t.Run("seed-changed-after-scan", func(t *testing.T) {
		// The scan of v1 is cached (XDG_CACHE_HOME) from the runs above.
		// Rewrite a file with other bytes of the same size and put its
		// mtime back: the cached scan still claims its chunks.
		seed := filepath.Join(t.TempDir(), "v1")
		runCmd(t, "cp", "-a", s.v1, seed)
		mustRun("extract", "--seed="+seed, s.index, filepath.Join(t.TempDir(), "warm"))
		p := filepath.Join(seed, "dira/biga")
		fi, err := os.Stat(p)
		mustOK(t, err)
		mustOK(t, os.WriteFile(p, randomBytes(int(fi.Size()), 4242), 0o644))
		mustOK(t, os.Chtimes(p, fi.ModTime(), fi.ModTime()))
		s.resetLog(t)
		out := filepath.Join(t.TempDir(), "out")
		mustRun("extract", "--seed="+seed, s.index, out)
		s.checkTree(t, out)
		if n := s.ngx.chunkRequests(t); n <= s.missing {
			t.Errorf("fetched %d chunks with a lying seed, want more than %d (its chunks must be refetched)", n, s.missing)
		}
	})
}

// TestSeedTreeMount: a tree mount of v2.caidx with --seed=v1 reads v2
// exactly, fetching only the chunks v1 lacks. The seed's scan is cached by
// an extract first (a mount scans in the background: reads racing an
// uncached scan would fetch).
func TestSeedTreeMount(t *testing.T) {
	needCmd(t, "fusermount3")
	s := makeSeedTrees(t)
	cache := t.TempDir()
	camount(t, "extract", "--cache="+cache, "--seed="+s.v1, s.index, filepath.Join(t.TempDir(), "warm"))
	cache2 := t.TempDir()
	runCmd(t, "cp", "-a", filepath.Join(cache, "seeds"), cache2)
	s.resetLog(t)
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	m := startMount(t, nil, "--cache="+cache2, "--cache-size=0", "--prefetch=none", "--seed="+s.v1, s.index, mnt)
	runCmd(t, "diff", "-r", "--no-dereference", s.v2, mnt)
	m.kill(t)
	if got := s.ngx.chunkRequests(t); got != s.missing {
		t.Errorf("the mount fetched %d chunks, want the %d no seed holds", got, s.missing)
	}
}
