package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// vmHWM returns a process's peak resident set size in bytes (VmHWM).
func vmHWM(t testing.TB, pid int) int64 {
	t.Helper()
	return procStatusKiB(t, pid, "VmHWM:") << 10
}

// procStatusKiB returns a field of /proc/PID/status given in kB.
func procStatusKiB(t testing.TB, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("%s %q: %v", field, rest, err)
			}
			return kb
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// vmRSS returns a process's resident set size in bytes now (VmRSS).
func vmRSS(t testing.TB, pid int) int64 {
	t.Helper()
	return procStatusKiB(t, pid, "VmRSS:") << 10
}

// openFDs returns the number of file descriptors a process has open.
func openFDs(t testing.TB, pid int) int64 {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(ents))
}

// memImage makes a casync image of size random bytes (nothing compresses,
// so chunks are as large in the store as in memory) with a local store.
func memImage(t *testing.T, size int) (index, store string, data []byte) {
	t.Helper()
	needCmd(t, "casync")
	dir := t.TempDir()
	data = randomBytes(size, 77)
	src := filepath.Join(dir, "img.raw")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	index = filepath.Join(dir, "img.caibx")
	store = filepath.Join(dir, "default.castr")
	runCmd(t, "casync", "make", "--store="+store, index, src)
	os.Remove(src)
	return index, store, data
}

// hammer runs n readers doing O_DIRECT reads of size bytes at random
// aligned offsets of path for about d, checking every byte against want.
func hammer(t *testing.T, path string, want []byte, n, size int, d time.Duration) (reads int64) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	stop := time.Now().Add(d)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT, 0)
			if err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
				return
			}
			defer unix.Close(fd)
			// O_DIRECT needs an aligned buffer: an anonymous mapping is.
			buf, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
			if err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
				return
			}
			defer unix.Munmap(buf)
			rng := rand.New(rand.NewPCG(seed, 9))
			blocks := (len(want) - size) / 4096
			for time.Now().Before(stop) {
				off := rng.IntN(blocks) * 4096
				m, err := unix.Pread(fd, buf, int64(off))
				if err == syscall.EINTR {
					continue
				}
				if err == nil && (m != size || string(buf[:m]) != string(want[off:off+m])) {
					err = fmt.Errorf("read of %d bytes at %d: %d bytes, WRONG DATA", size, off, m)
				}
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				reads++
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}(uint64(i))
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	return reads
}

// TestMountMemoryBound: 64 readers of 4 MiB O_DIRECT reads at random
// offsets through a FUSE mount with a 16 MiB chunk cache must keep the
// mount's peak RSS (VmHWM of the camount process itself) within the cache
// plus 64 MiB (issue 15.5). It was 362 MiB before the scheduler dropped
// stale queue entries and vfs bounded concurrent reads, then ~115 MiB
// while go-fuse held a 1 MiB reply buffer per reader and streams held
// finished readahead outside the cache; ~72 MiB since.
func TestMountMemoryBound(t *testing.T) {
	needFUSE(t)
	needRoot(t)
	index, store, data := memImage(t, 64<<20)
	mnt := t.TempDir()
	const cache = 16 << 20
	m := startMount(t, nil, "--store="+store, "--cache-size="+strconv.Itoa(cache), index, mnt)
	d := 8 * time.Second
	if os.Getenv("CAMOUNT_TEST_LONG") != "" {
		d = 2 * time.Minute
	}
	reads := hammer(t, filepath.Join(mnt, "img"), data, 64, 4<<20, d)
	hwm := vmHWM(t, m.cmd.Process.Pid)
	t.Logf("64 readers, %d reads of 4 MiB: peak RSS %.1f MiB with a %d MiB cache", reads, float64(hwm)/(1<<20), cache>>20)
	if hwm > cache+64<<20 {
		t.Errorf("peak RSS %.1f MiB is more than the %d MiB cache + 64 MiB", float64(hwm)/(1<<20), cache>>20)
	}
}

// TestNBDMemoryBound: 16 NBD connections, each with 16 reads of 4 MiB in
// flight at random offsets (libnbd's Python bindings, every reply compared
// with the image), against camount nbd with a 16 MiB chunk cache: peak RSS
// within the cache plus 64 MiB (issue 15.5). It was ~125 MiB while the
// server-wide read-buffer budget was 64 MiB; ~72 MiB at 16 MiB.
func TestNBDMemoryBound(t *testing.T) {
	needCmd(t, "nbdsh")
	index, store, data := memImage(t, 64<<20)
	raw := filepath.Join(t.TempDir(), "img.raw")
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	const cache = 16 << 20
	s := startNBD(t, "tcp", []string{"--store=" + store, "--cache-size=" + strconv.Itoa(cache)}, index)
	d := "4"
	if os.Getenv("CAMOUNT_TEST_LONG") != "" {
		d = "120"
	}
	script, err := filepath.Abs("testdata/nbdload.py")
	if err != nil {
		t.Fatal(err)
	}
	cmd := nbdsh("-c", fmt.Sprintf("exec(open(%q).read())", script))
	cmd.Env = append(cmd.Env, "URI="+s.uris[0], "RAW="+raw, "CONNS=16", "QD=16", "SIZE="+strconv.Itoa(4<<20), "DUR="+d)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("NBD load: %v\n%s\nserver: %s", err, out, s.stderr)
	}
	s.alive(t)
	hwm := vmHWM(t, s.cmd.Process.Pid)
	t.Logf("16 connections x 16 reads of 4 MiB in flight: %s; peak RSS %.1f MiB with a %d MiB cache", strings.TrimSpace(string(out)), float64(hwm)/(1<<20), cache>>20)
	if hwm > cache+64<<20 {
		t.Errorf("peak RSS %.1f MiB is more than the %d MiB cache + 64 MiB", float64(hwm)/(1<<20), cache>>20)
	}
}
