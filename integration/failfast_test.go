package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMountStalledStoreOneCycle reads 4 KiB through a FUSE mount whose
// store stalls every request. The kernel asks again right after its failed
// readahead; the chunk that just failed must fail at once then, so the read
// returns EIO after one cycle of attempts (2 with --http-retries 1), not
// two. Counted on the server side, not timed.
func TestMountStalledStoreOneCycle(t *testing.T) {
	needFUSE(t)
	im := makeRemoteImage(t, 2<<20, nil)
	px := startFaultProxy(t, im.ngx.URL)
	px.setStall(10 * time.Minute) // until the client gives up
	px.set("stall", -1)
	mnt := remoteMount(t, "--http-timeout", "2s", "--http-retries", "1", "--store", px.URL+"/default.castr", im.index)
	x := readIndex(t, im.index)
	id := x.Chunks[0].ID.String()
	chunkPath := "/default.castr/" + id[:4] + "/" + id + ".cacnk"

	f, err := os.Open(filepath.Join(mnt, "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	done := make(chan error, 1)
	go func() {
		_, err := f.ReadAt(make([]byte, 4096), 0)
		done <- err
	}()
	select {
	case err = <-done:
	case <-time.After(3 * time.Minute): // a hang guard, not a timing assertion
		t.Fatal("a 4 KiB read from a stalled store did not return within 3 minutes")
	}
	if err == nil || !strings.Contains(err.Error(), "input/output error") {
		t.Fatalf("read from a stalled store: %v, want EIO", err)
	}
	px.mu.Lock()
	n := px.seen[chunkPath]
	px.mu.Unlock()
	if n != 2 {
		t.Fatalf("the stalled chunk was requested %d times before the read failed, want 2 (one attempt and one retry)", n)
	}
}
