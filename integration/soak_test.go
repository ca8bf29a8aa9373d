package integration

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSoakFaults reads an image through a FUSE mount (random O_DIRECT
// reads) and an NBD server (whole copies with nbdcopy) at the same time,
// both fetching from an HTTP store behind a proxy whose fault changes
// every second (latency, 5xx, resets, truncated and corrupted bodies,
// stalls; each URL's first request fails, so retries get through). Every
// byte is compared with the source; peak RSS is sampled. 20 s in make
// test, 30 minutes with CAMOUNT_TEST_LONG=1 (issue 15.6).
func TestSoakFaults(t *testing.T) {
	needFUSE(t)
	needRoot(t)
	needCmd(t, "nbdcopy")
	d := 20 * time.Second
	if os.Getenv("CAMOUNT_TEST_LONG") != "" {
		d = 30 * time.Minute
	}
	im := makeRemoteImage(t, 8<<20, nil)
	px := startFaultProxy(t, im.ngx.URL)
	px.setStall(3 * time.Second)
	args := []string{"--http-timeout", "1s", "--http-retries", "3", "--cache-size", "4M", "--store", px.URL + "/default.castr"}
	mnt := t.TempDir()
	m := startMount(t, nil, append(args, im.index, mnt)...)
	srv := startNBD(t, "unix", args, im.index)

	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var wrong []string
	var fuseReads, fuseEIO, nbdCopies, nbdFailed int
	var peakMount, peakNBD int64
	fail := func(format string, a ...any) {
		mu.Lock()
		wrong = append(wrong, fmt.Sprintf(format, a...))
		mu.Unlock()
	}
	// The fault rotates.
	wg.Add(1)
	go func() {
		defer wg.Done()
		modes := []string{"latency", "5xx", "reset", "truncate", "corrupt", "stall", ""}
		for i := 0; time.Now().Before(stop); i++ {
			mode := modes[i%len(modes)]
			times := 1
			if mode == "latency" {
				times = -1
			}
			px.set(mode, times)
			time.Sleep(time.Second)
			mu.Lock()
			peakMount = max(peakMount, vmHWM(t, m.cmd.Process.Pid))
			peakNBD = max(peakNBD, vmHWM(t, srv.cmd.Process.Pid))
			mu.Unlock()
		}
	}()
	// FUSE: 4 readers of random 64 KiB O_DIRECT reads.
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			fd, err := unix.Open(filepath.Join(mnt, "img"), unix.O_RDONLY|unix.O_DIRECT, 0)
			if err != nil {
				fail("open: %v", err)
				return
			}
			defer unix.Close(fd)
			const size = 64 << 10
			buf, _ := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
			defer unix.Munmap(buf)
			rng := rand.New(rand.NewPCG(seed, 3))
			for time.Now().Before(stop) {
				off := rng.IntN((len(im.src)-size)/4096) * 4096
				n, err := unix.Pread(fd, buf, int64(off))
				mu.Lock()
				fuseReads++
				if err == syscall.EIO {
					fuseEIO++
				}
				mu.Unlock()
				switch {
				case err == syscall.EIO || err == syscall.EINTR:
				case err != nil:
					fail("FUSE read at %d: %v", off, err)
				case n != size || !bytes.Equal(buf[:n], im.src[off:off+n]):
					fail("FUSE read at %d: WRONG DATA", off)
				}
			}
		}(uint64(r))
	}
	// NBD: whole copies.
	wg.Add(1)
	go func() {
		defer wg.Done()
		out := filepath.Join(t.TempDir(), "copy")
		for time.Now().Before(stop) {
			os.Remove(out)
			_, err := tryCmd("nbdcopy", srv.uris[0], out)
			mu.Lock()
			nbdCopies++
			if err != nil {
				nbdFailed++
			}
			mu.Unlock()
			if err != nil {
				if !strings.Contains(err.Error(), "Input/output error") && !strings.Contains(err.Error(), "EIO") {
					fail("nbdcopy: %v", err)
				}
				continue
			}
			got, _ := os.ReadFile(out)
			if !bytes.Equal(got, im.src) {
				fail("nbdcopy: WRONG DATA")
			}
		}
	}()
	wg.Wait()
	t.Logf("%v: FUSE %d reads (%d EIO), NBD %d copies (%d failed), %d faults injected; peak RSS mount %d MiB, nbd %d MiB",
		d, fuseReads, fuseEIO, nbdCopies, nbdFailed, px.faults.Load(), peakMount>>20, peakNBD>>20)
	for _, w := range wrong {
		t.Error(w)
	}
	if fuseReads == 0 || nbdCopies == 0 {
		t.Fatal("nothing was read")
	}
	srv.alive(t)
}
