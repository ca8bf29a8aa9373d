package integration

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRateLimitBps: --rate-limit-bps caps foreground fetching from an HTTP
// store. The check is a lower bound only (a slow machine only makes it
// slower): fetching B stored bytes at L bytes/s takes at least (B-L)/L.
func TestRateLimitBps(t *testing.T) {
	im := makeRemoteImage(t, 3<<20, nil)
	var stored int64
	for _, f := range storeFiles(t, im.store) {
		if st, err := os.Stat(filepath.Join(im.store, f)); err == nil {
			stored += st.Size()
		}
	}
	const limit = 1 << 20
	out := filepath.Join(t.TempDir(), "out")
	start := time.Now()
	camount(t, "extract", "--rate-limit-bps=1M", "--store="+im.ngx.URL+"/default.castr", im.index, out)
	took := time.Since(start)
	checkFile(t, out, im.src)
	min := time.Duration(float64(stored-limit) / limit * 0.9 * float64(time.Second))
	if stored < 2*limit {
		t.Fatalf("store holds only %d bytes: the test needs more than two seconds' worth", stored)
	}
	if took < min {
		t.Errorf("fetched %d stored bytes in %v with --rate-limit-bps=1M: under the %v the cap allows", stored, took, min)
	}
	// A local store is not limited (casync limits remote communication only).
	camount(t, "extract", "--rate-limit-bps=100K", "--store="+im.store, im.index, filepath.Join(t.TempDir(), "out2"))
}
