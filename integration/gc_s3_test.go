package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestGCS3: camount gc sweeps an S3 store (listing and removing objects
// through the S3 API): the chunks of the index kept survive, the others go.
func TestGCS3(t *testing.T) {
	s := startS3(t)
	a, b := makeS3Image(t, 1<<20, 11), makeS3Image(t, 1<<20, 12)
	store := s.url("bucket", "gc.castr")
	camount(t, "make", "--store="+store, a.index, a.raw)
	camount(t, "make", "--store="+store, b.index, b.raw)
	dir := filepath.Join(s.Root, "bucket", "gc.castr")
	old := time.Now().Add(-2 * time.Hour)
	all := storeFiles(t, dir)
	for _, f := range all {
		os.Chtimes(filepath.Join(dir, f), old, old)
	}
	out := camount(t, "gc", "--grace=0", "--store="+store, a.index)
	left := storeFiles(t, dir)
	want := storeFiles(t, a.store)
	if strings.Join(left, "\n") != strings.Join(want, "\n") || len(left) == len(all) {
		t.Errorf("after gc the bucket holds %d chunks, index a references %d (of %d):\n%s", len(left), len(want), len(all), out)
	}
	got := filepath.Join(t.TempDir(), "a")
	camount(t, "extract", "--store="+store, a.index, got)
	checkFile(t, got, a.src)
}
