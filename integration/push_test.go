package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestPushFromHTTP publishes an image served over HTTP (nginx, casync's
// layout) into a local store: push reads any store, the index included.
func TestPushFromHTTP(t *testing.T) {
	im := makeRemoteImage(t, 3<<20, nil)
	d := t.TempDir()
	out := camount(t, "push", "--from="+im.ngx.URL+"/default.castr", "--to="+filepath.Join(d, "s"), "--index-to="+filepath.Join(d, "copy.caibx"), im.ngx.URL+"/img.caibx")
	n := len(storeChunks(t, im.store))
	if !strings.Contains(out, fmt.Sprintf("%d chunks: %d copied", n, n)) {
		t.Errorf("push: %q (the store has %d chunks)", out, n)
	}
	camount(t, "extract", "--store="+filepath.Join(d, "s"), filepath.Join(d, "copy.caibx"), filepath.Join(d, "out"))
	checkFile(t, filepath.Join(d, "out"), im.src)
	// Writing to an HTTP store is refused before anything is read.
	if _, err := tryCamount("push", "--from="+filepath.Join(d, "s"), "--to="+im.ngx.URL+"/x", filepath.Join(d, "copy.caibx")); err == nil || !strings.Contains(err.Error(), "not supported for a chunk store to write") {
		t.Errorf("push to HTTP: %v", err)
	}
}
