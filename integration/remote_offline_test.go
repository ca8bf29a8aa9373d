package integration

// Issue 16: index locations on S3 and sftp are kept in the --cache
// directory like HTTP ones (TestOfflineIndexFromCache), so an image whose
// index and chunks were read once starts when its server is gone.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestS3OfflineIndexFromCache: an index at an s3+http:// URL read with
// --cache is kept; read again it is revalidated by its ETag (304); a
// changed index replaces it; a deleted one is an error, not the copy; with
// the server gone, extract and mount work from the cache.
func TestS3OfflineIndexFromCache(t *testing.T) {
	s3 := startS3(t)
	im := makeS3Image(t, 1<<20, 81)
	pub := s3.url("bucket", "pub/")
	camount(t, "push", "--from="+im.store, "--to="+pub+"default.castr", "--index-to="+pub, im.index)
	index := pub + "img.caibx"
	cdir := filepath.Join(t.TempDir(), "cache")

	// Online: the index and the chunks go into the cache.
	out := filepath.Join(t.TempDir(), "out")
	camount(t, "extract", "--cache="+cdir, index, out)
	checkFile(t, out, im.src)
	kept, _ := filepath.Glob(filepath.Join(cdir, "indexes", "*.idx"))
	if len(kept) != 1 {
		t.Fatalf("cache keeps %d indexes, want 1", len(kept))
	}
	// Online again: revalidated by the object's ETag.
	d := t.TempDir()
	_, stderr, code := camountIn(t, d, nil, "extract", "--verbose", "--cache="+cdir, index, "out")
	if code != 0 {
		t.Fatalf("second extract: %s", stderr)
	}
	checkFile(t, filepath.Join(d, "out"), im.src)
	if !strings.Contains(stderr, "index not modified") {
		t.Errorf("second extract did not revalidate the kept index (no 304): %s", stderr)
	}
	// A changed index on the server replaces the kept one.
	im2 := makeS3Image(t, 600<<10, 82)
	camount(t, "push", "--from="+im2.store, "--to="+pub+"default.castr", "--index-to="+pub, im2.index)
	out = filepath.Join(t.TempDir(), "out")
	camount(t, "extract", "--cache="+cdir, index, out)
	checkFile(t, out, im2.src)

	// The server's answer "no such key" is the error, not the copy.
	obj := filepath.Join(s3.Root, "bucket", "pub", "img.caibx")
	saved, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(obj)
	if _, err := tryCamount("extract", "--cache="+cdir, index, filepath.Join(t.TempDir(), "o")); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("index deleted on the server: %v, want not found", err)
	}
	if err := os.WriteFile(obj, saved, 0o644); err != nil {
		t.Fatal(err)
	}

	// Offline: the server is gone.
	s3.cmd.Process.Kill()
	s3.cmd.Wait()
	d = t.TempDir()
	_, stderr, code = camountIn(t, d, nil, "extract", "--http-retries=0", "--cache="+cdir, index, "out")
	if code != 0 {
		t.Fatalf("offline extract: %s", stderr)
	}
	checkFile(t, filepath.Join(d, "out"), im2.src)
	if !strings.Contains(stderr, "using the cached copy") {
		t.Errorf("offline extract gave no warning: %q", stderr)
	}
	if _, err := tryCamount("extract", "--http-retries=0", index, filepath.Join(t.TempDir(), "o")); err == nil {
		t.Error("offline extract without --cache succeeded")
	}
	needRoot(t)
	needCmd(t, "fusermount3")
	mnt, _ := remoteMountLine(t, "--http-retries=0", "--cache="+cdir, index)
	checkFile(t, filepath.Join(mnt, "img"), im2.src)
}

// TestSFTPOfflineIndexFromCache: an index at an sftp:// URL read with
// --cache starts an extract and a mount once sshd is gone.
func TestSFTPOfflineIndexFromCache(t *testing.T) {
	s := startSSHD(t)
	im := makeS3Image(t, 1<<20, 83)
	pub := s.url(s.Port, filepath.Join(s.Root, "pub")+"/")
	camount(t, "push", "--from="+im.store, "--to="+pub+"default.castr", "--index-to="+pub, im.index)
	index := pub + "img.caibx"
	cdir := filepath.Join(t.TempDir(), "cache")
	out := filepath.Join(t.TempDir(), "out")
	camount(t, "extract", "--cache="+cdir, index, out)
	checkFile(t, out, im.src)
	kept, _ := filepath.Glob(filepath.Join(cdir, "indexes", "*.idx"))
	if len(kept) != 1 {
		t.Fatalf("cache keeps %d indexes, want 1", len(kept))
	}

	s.cmd.Process.Kill()
	s.cmd.Wait()
	d := t.TempDir()
	_, stderr, code := camountIn(t, d, nil, "extract", "--http-retries=0", "--cache="+cdir, index, "out")
	if code != 0 {
		t.Fatalf("offline extract: %s", stderr)
	}
	checkFile(t, filepath.Join(d, "out"), im.src)
	if !strings.Contains(stderr, "using the cached copy") {
		t.Errorf("offline extract gave no warning: %q", stderr)
	}
	if _, err := tryCamount("extract", "--http-retries=0", index, filepath.Join(t.TempDir(), "o")); err == nil {
		t.Error("offline extract without --cache succeeded")
	}
	needCmd(t, "fusermount3")
	mnt, _ := remoteMountLine(t, "--http-retries=0", "--cache="+cdir, index)
	checkFile(t, filepath.Join(mnt, "img"), im.src)
}
