package integration

// Issue 15 items 1 and 2: pinned index digests (--index-digest) and
// minisign signatures (camount sign, --trusted-key), checked against the
// real minisign tool in both directions.

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// trustEnv keeps /etc/camount/trusted-keys of the machine out of the tests.
var trustEnv = []string{"CAMOUNT_TRUSTED_KEYS=none"}

func TestIndexDigestPinning(t *testing.T) {
	dir := t.TempDir()
	data := makeLocalImage(t, dir, 256<<10, 51)
	index := filepath.Join(dir, "img.caibx")
	b, _ := os.ReadFile(index)
	sum := sha256.Sum256(b)
	pin := "sha256:" + hex.EncodeToString(sum[:])
	out, stderr, code := camountIn(t, dir, trustEnv, "info", index)
	if code != 0 || !strings.Contains(out, "Index digest:    "+pin) {
		t.Fatalf("info does not print the digest to pin %s: %q %s", pin, out, stderr)
	}
	wrong := "sha256:" + strings.Repeat("0", 64)
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	for _, idx := range []string{index, srv.URL + "/img.caibx"} {
		o := filepath.Join(t.TempDir(), "out")
		if _, stderr, code := camountIn(t, dir, trustEnv, "extract", "--index-digest="+pin, idx, o); code != 0 {
			t.Fatalf("extract with the right digest: %s", stderr)
		}
		checkFile(t, o, data)
		for _, args := range [][]string{
			{"extract", "--index-digest=" + wrong, idx, filepath.Join(dir, "o2")},
			{"info", "--index-digest=" + wrong, idx},
			{"list-chunks", "--index-digest=" + wrong, idx},
			{"mount", "--index-digest=" + wrong, idx, filepath.Join(dir, "mnt")},
			{"nbd", "--index-digest=" + wrong, "--listen=unix://" + filepath.Join(dir, "s"), idx},
		} {
			before := listTree(t, dir)
			out, stderr, code := camountIn(t, dir, trustEnv, args...)
			if code == 0 || !strings.Contains(stderr, "digest mismatch") || !strings.Contains(stderr, pin) {
				t.Errorf("%v: exit %d, %q %q; want a digest mismatch naming %s", args, code, out, stderr, pin)
			}
			if after := listTree(t, dir); len(after) != len(before) {
				t.Errorf("%v left files: %v", args, after)
			}
		}
	}
	if _, stderr, code := camountIn(t, dir, trustEnv, "info", "--index-digest=sha256:abc", index); code == 0 || !strings.Contains(stderr, "64 hex digits") {
		t.Errorf("a malformed digest: %d %s", code, stderr)
	}
}

func TestMinisignInterop(t *testing.T) {
	needCmd(t, "minisign")
	dir := t.TempDir()
	data := makeLocalImage(t, dir, 256<<10, 52)
	index := filepath.Join(dir, "img.caibx")
	other := filepath.Join(dir, "other.caibx")
	src := filepath.Join(t.TempDir(), "o.raw")
	os.WriteFile(src, randomBytes(64<<10, 53), 0o644)
	camount(t, "make", other, src)
	tree := filepath.Join(t.TempDir(), "tree")
	os.Mkdir(tree, 0o755)
	os.WriteFile(filepath.Join(tree, "f"), []byte("signed tree\n"), 0o644)
	tindex := filepath.Join(dir, "t.caidx")
	camount(t, "make", tindex, tree)
	keys := t.TempDir()
	pub, sec := filepath.Join(keys, "k.pub"), filepath.Join(keys, "k.key")
	runCmd(t, "minisign", "-G", "-W", "-p", pub, "-s", sec)
	pub2, sec2 := filepath.Join(keys, "k2.pub"), filepath.Join(keys, "k2.key")
	runCmd(t, "minisign", "-G", "-W", "-p", pub2, "-s", sec2)

	// camount signs, minisign verifies.
	camount(t, "sign", "--key="+sec, index)
	runCmd(t, "minisign", "-V", "-p", pub, "-m", index)
	// minisign signs, camount verifies (the other index and the tree).
	runCmd(t, "minisign", "-S", "-s", sec, "-m", other)
	runCmd(t, "minisign", "-S", "-s", sec, "-m", tindex)
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	pubKey := func(p string) string { // the base64 key alone, as minisign -P takes it
		b, _ := os.ReadFile(p)
		l := strings.Split(strings.TrimSpace(string(b)), "\n")
		return l[len(l)-1]
	}
	for _, idx := range []string{index, srv.URL + "/img.caibx"} {
		for _, key := range []string{pub, pubKey(pub)} {
			o := filepath.Join(t.TempDir(), "out")
			if _, stderr, code := camountIn(t, dir, trustEnv, "extract", "--trusted-key="+pub2, "--trusted-key="+key, idx, o); code != 0 {
				t.Fatalf("extract %s signed by a trusted key: %s", idx, stderr)
			}
			checkFile(t, o, data)
		}
	}
	if out, stderr, code := camountIn(t, dir, trustEnv, "extract", "--trusted-key="+pub, other, filepath.Join(t.TempDir(), "o")); code != 0 {
		t.Errorf("extract of an index signed by minisign: %s %s", out, stderr)
	}
	if out, stderr, code := camountIn(t, dir, trustEnv, "list", "--trusted-key="+pub, srv.URL+"/t.caidx"); code != 0 || !strings.Contains(out, "f") {
		t.Errorf("list of a tree signed by minisign: %q %s", out, stderr)
	}
	// The keys file (boot use) is trusted too.
	if _, stderr, code := camountIn(t, dir, []string{"CAMOUNT_TRUSTED_KEYS=" + pub}, "info", index); code != 0 {
		t.Errorf("info with the key in the keys file: %s", stderr)
	}

	// Refusals: untrusted key, no signature, a signature of another index
	// (swapped), a tampered index.
	refused := func(what, want string, env []string, args ...string) {
		t.Helper()
		_, stderr, code := camountIn(t, dir, env, args...)
		if code == 0 || !strings.Contains(stderr, want) {
			t.Errorf("%s: exit %d, %q; want %q", what, code, stderr, want)
		}
	}
	refused("untrusted key", "not trusted", trustEnv, "info", "--trusted-key="+pub2, index)
	refused("untrusted key (keys file)", "not trusted", []string{"CAMOUNT_TRUSTED_KEYS=" + pub2}, "info", index)
	os.Remove(tindex + ".minisig")
	refused("no signature", "no signature", trustEnv, "list", "--trusted-key="+pub, tindex)
	swapped := filepath.Join(dir, "swapped.caibx")
	ob, _ := os.ReadFile(other)
	os.WriteFile(swapped, ob, 0o644)
	os.Link(other+".minisig", swapped+".minisig")
	refused("swapped signature", `is for "other.caibx", not "swapped.caibx"`, trustEnv, "info", "--trusted-key="+pub, swapped)
	ib, _ := os.ReadFile(index)
	ib[len(ib)-1] ^= 1
	os.WriteFile(index, ib, 0o644)
	refused("tampered index", "does not match the index", trustEnv, "extract", "--trusted-key="+pub, index, filepath.Join(dir, "o3"))
	refused("tampered index over HTTP", "does not match the index", trustEnv, "info", "--trusted-key="+pub, srv.URL+"/img.caibx")
	refused("digest flags on an archive", "is a .catar archive", trustEnv, "list", "--index-digest=sha256:"+strings.Repeat("0", 64), filepath.Join(dir, "x.catar"))
}
