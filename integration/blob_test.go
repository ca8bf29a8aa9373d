package integration

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for k := 0; k < 8; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

// blobInputs returns the inputs the compatibility tests chunk, by name.
func blobInputs(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string][]byte{
		"random":   randomBytes(3<<20+12345, 1),
		"zeroruns": append(append(randomBytes(700000, 2), make([]byte, 2<<20+777)...), randomBytes(300000, 3)...),
		"tiny":     randomBytes(1000, 4),
		"empty":    nil,
	}
	out := map[string]string{}
	for name, data := range files {
		p := filepath.Join(dir, name+".bin")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		out[name] = p
	}
	out["ext4"] = makeExt4Image(t, dir)
	return out
}

// makeExt4Image builds a real ext4 file system image (populated with mkfs.ext4 -d,
// no loop device needed) holding files from /usr/share/doc and /usr/bin.
func makeExt4Image(t *testing.T, dir string) string {
	t.Helper()
	needCmd(t, "mkfs.ext4")
	src := filepath.Join(dir, "ext4src")
	os.MkdirAll(src, 0o755)
	runCmd(t, "cp", "-a", "/usr/share/doc", filepath.Join(src, "doc"))
	for _, f := range []string{"/usr/bin/casync", "/usr/bin/nbdinfo", "/bin/ls"} {
		if _, err := os.Stat(f); err == nil {
			runCmd(t, "cp", f, src)
		}
	}
	img := filepath.Join(dir, "ext4.img")
	runCmd(t, "truncate", "-s", "160M", img)
	runCmd(t, "mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", src, img)
	return img
}

// storeChunks lists the chunk IDs present in a store.
func storeChunks(t *testing.T, store string) []string {
	t.Helper()
	var ids []string
	filepath.Walk(store, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && strings.HasSuffix(p, ".cacnk") {
			ids = append(ids, strings.TrimSuffix(filepath.Base(p), ".cacnk"))
		}
		return nil
	})
	sort.Strings(ids)
	return ids
}

func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestMakeMatchesCasync: for the same input and settings, camount make writes
// the same index bytes and the same chunk set as casync make, and prints the
// same digest.
func TestMakeMatchesCasync(t *testing.T) {
	needCmd(t, "casync")
	dir := t.TempDir()
	inputs := blobInputs(t, dir)
	settings := [][]string{
		nil,
		{"--chunk-size=4096"},
		{"--chunk-size=1000:5000:20000"},
		{"--digest=sha256"},
		{"--chunk-size=16384:16384:16384"},
	}
	for name, in := range inputs {
		for si, set := range settings {
			if name == "ext4" && si > 1 {
				continue // the big input with the two most telling settings keeps the test quick
			}
			t.Run(name+"/"+strings.Join(set, ","), func(t *testing.T) {
				w := filepath.Join(dir, name+"-"+string(rune('a'+si)))
				os.MkdirAll(w, 0o755)
				cIdx, mIdx := filepath.Join(w, "c.caibx"), filepath.Join(w, "m.caibx")
				cStore, mStore := filepath.Join(w, "c.castr"), filepath.Join(w, "m.castr")
				cOut := runCmd(t, "casync", append(append([]string{"make", "--store=" + cStore}, set...), cIdx, in)...)
				mOut := camount(t, append(append([]string{"make", "--store=" + mStore}, set...), mIdx, in)...)
				if fileSum(t, cIdx) != fileSum(t, mIdx) {
					t.Fatalf("index bytes differ from casync's")
				}
				if strings.TrimSpace(cOut) != strings.TrimSpace(mOut) {
					t.Errorf("digest: casync %q, camount %q", cOut, mOut)
				}
				cs, ms := storeChunks(t, cStore), storeChunks(t, mStore)
				if strings.Join(cs, ",") != strings.Join(ms, ",") {
					t.Fatalf("chunk sets differ: casync %d, camount %d", len(cs), len(ms))
				}
				// casync reads what camount wrote; camount reads what casync wrote.
				runCmd(t, "casync", "extract", "--store="+mStore, mIdx, filepath.Join(w, "c-of-m"))
				camount(t, "extract", "--store="+cStore, cIdx, filepath.Join(w, "m-of-c"))
				for _, out := range []string{"c-of-m", "m-of-c"} {
					if fileSum(t, filepath.Join(w, out)) != fileSum(t, in) {
						t.Fatalf("%s differs from the input", out)
					}
				}
			})
		}
	}
}

// TestExtractCasyncCompressions: camount extracts casync-made stores written
// with each compression casync supports.
func TestExtractCasyncCompressions(t *testing.T) {
	needCmd(t, "casync")
	dir := t.TempDir()
	in := filepath.Join(dir, "in.bin")
	os.WriteFile(in, append(randomBytes(1<<20, 9), make([]byte, 600000)...), 0o644)
	for _, comp := range []string{"zstd", "xz", "gzip"} {
		idx := filepath.Join(dir, comp+".caibx")
		store := filepath.Join(dir, comp+".castr")
		runCmd(t, "casync", "make", "--compression="+comp, "--store="+store, idx, in)
		out := filepath.Join(dir, comp+".out")
		camount(t, "extract", "--store="+store, idx, out)
		if fileSum(t, out) != fileSum(t, in) {
			t.Fatalf("%s: extracted bytes differ", comp)
		}
		// And camount writes each compression so that casync reads it.
		mStore := filepath.Join(dir, "m-"+comp+".castr")
		camount(t, "make", "--compression="+comp, "--store="+mStore, filepath.Join(dir, "m-"+comp+".caibx"), in)
		runCmd(t, "casync", "extract", "--store="+mStore, filepath.Join(dir, "m-"+comp+".caibx"), out+"2")
		if fileSum(t, out+"2") != fileSum(t, in) {
			t.Fatalf("casync extract of camount %s store differs", comp)
		}
	}
}

// TestExtractIsSparse: zero chunks are holes in the output file.
func TestExtractIsSparse(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.bin")
	os.WriteFile(in, append(append(randomBytes(100000, 1), make([]byte, 64<<20)...), randomBytes(100000, 2)...), 0o644)
	camount(t, "make", "--store="+filepath.Join(dir, "s.castr"), filepath.Join(dir, "i.caibx"), in)
	out := filepath.Join(dir, "out")
	camount(t, "extract", "--store="+filepath.Join(dir, "s.castr"), filepath.Join(dir, "i.caibx"), out)
	if fileSum(t, out) != fileSum(t, in) {
		t.Fatal("extracted bytes differ")
	}
	du := runCmd(t, "du", "-k", out)
	var kb int
	for _, c := range strings.Fields(du)[0] {
		kb = kb*10 + int(c-'0')
	}
	if kb > 8<<10 {
		t.Fatalf("output uses %d KiB on disk: zero chunks were written, not left as holes", kb)
	}
}

// TestBadBlobInput: bad input gets a clear error naming what is wrong, a
// non-zero exit, and never wrong bytes.
func TestBadBlobInput(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.bin")
	data := randomBytes(600000, 5)
	os.WriteFile(in, data, 0o644)
	idx, store := filepath.Join(dir, "i.caibx"), filepath.Join(dir, "s.castr")
	camount(t, "make", "--store="+store, idx, in)
	good, _ := os.ReadFile(idx)

	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	garbled := append([]byte(nil), good...)
	garbled[70] ^= 0xff // first item's end offset
	magic := append([]byte(nil), good...)
	magic[9] ^= 1
	cases := map[string]struct{ idx, want string }{
		"truncated": {write("trunc.caibx", good[:len(good)-7]), "trunc.caibx"},
		"magic":     {write("magic.caibx", magic), "bad magic"},
		"garbled":   {write("garbled.caibx", garbled), "garbled.caibx"},
		"empty":     {write("empty.caibx", nil), "empty file"},
		"missing":   {filepath.Join(dir, "nope.caibx"), "no such file"},
	}
	for name, tc := range cases {
		_, err := tryCamount("extract", "--store="+store, tc.idx, filepath.Join(dir, name+".out"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", name, err, tc.want)
		}
		if _, err := tryCamount("info", tc.idx); err == nil {
			t.Errorf("%s: info accepted a bad index", name)
		}
	}

	// A missing chunk file and a corrupt one: extract fails naming the chunk.
	chunks := storeChunks(t, store)
	if len(chunks) < 3 {
		t.Fatalf("want several chunks, have %d", len(chunks))
	}
	path := func(id string) string { return filepath.Join(store, id[:4], id+".cacnk") }
	os.Rename(path(chunks[0]), path(chunks[0])+".gone")
	_, err := tryCamount("extract", "--store="+store, idx, filepath.Join(dir, "miss.out"))
	if err == nil || !strings.Contains(err.Error(), chunks[0]) || !strings.Contains(err.Error(), "not found") {
		t.Errorf("missing chunk: %v", err)
	}
	os.Rename(path(chunks[0])+".gone", path(chunks[0]))
	// Replace a chunk with another chunk's (valid, but wrong) bytes.
	other, _ := os.ReadFile(path(chunks[2]))
	os.Chmod(path(chunks[1]), 0o644)
	os.WriteFile(path(chunks[1]), other, 0o644)
	out := filepath.Join(dir, "corrupt.out")
	_, err = tryCamount("extract", "--store="+store, idx, out)
	if err == nil || !strings.Contains(err.Error(), chunks[1]) || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("corrupt chunk: %v", err)
	}
	// casync agrees that this store is broken.
	if _, err := exec.LookPath("casync"); err == nil {
		if _, err := tryCmd("casync", "extract", "--store="+store, idx, filepath.Join(dir, "casync.out")); err == nil {
			t.Error("casync accepted the corrupt chunk too: the test corrupted nothing")
		}
	}
	// Bad flags and arguments are usage errors, not crashes.
	for _, args := range [][]string{
		{"make", "--chunk-size=1:10:40", filepath.Join(dir, "x.caibx"), in},
		{"make", "--compression=lz4", filepath.Join(dir, "x.caibx"), in},
		{"make", "--digest=md5", filepath.Join(dir, "x.caibx"), in},
		{"make", filepath.Join(dir, "x.txt"), in},
		{"extract", idx},
	} {
		o, err := tryCamount(args...)
		if err == nil || strings.Contains(o+err.Error(), "panic") {
			t.Errorf("%v: %v", args, err)
		}
	}
	_ = bytes.Equal
}
