package integration

import (
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// countingStore serves a .castr directory over HTTP and logs, like an
// access log, every chunk response and its body size.
type countingStore struct {
	fs     http.Handler
	mu     sync.Mutex
	chunks int64
	bytes  int64
	other  int64
}

type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *countingWriter) WriteHeader(s int) { w.status = s; w.ResponseWriter.WriteHeader(s) }
func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (c *countingStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cw := &countingWriter{ResponseWriter: w, status: 200}
	c.fs.ServeHTTP(cw, r)
	c.mu.Lock()
	defer c.mu.Unlock()
	if strings.HasSuffix(r.URL.Path, ".cacnk") && cw.status == 200 {
		c.chunks++
		c.bytes += cw.n
	} else {
		c.other++
	}
}

func (c *countingStore) counts() (int64, int64, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.chunks, c.bytes, c.other
}

type statsJSON struct {
	FetchedChunks int64 `json:"fetched_chunks"`
	FetchedBytes  int64 `json:"fetched_bytes"`
	Priorities    map[string]struct {
		Chunks int64 `json:"chunks"`
	} `json:"priorities"`
	PrefetchUsed int64 `json:"prefetch_used"`
}

func readStats(t *testing.T, p string) statsJSON {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var s statsJSON
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return s
}

// prefetchImage makes an 8 MiB image (6 MiB of data, 2 MiB of zeros) with
// its store served by a counting HTTP server.
func prefetchImage(t *testing.T, dir string, seed uint64) (index string, data []byte, srv *countingStore, url string) {
	t.Helper()
	data = append(randomBytes(6<<20, seed), make([]byte, 2<<20)...)
	in := filepath.Join(dir, "img.raw")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store.castr")
	index = filepath.Join(dir, "img.caibx")
	camount(t, "make", "--store="+store, index, in)
	srv = &countingStore{fs: http.FileServer(http.Dir(store))}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return index, data, srv, hs.URL + "/"
}

func unmountAndWait(t *testing.T, m *mountProc) {
	t.Helper()
	runCmd(t, "fusermount3", "-u", m.mnt)
	m.wait(t)
}

// readDirect reads a file front to back in 128 KiB O_DIRECT reads: the
// kernel forwards each read as it comes, with no readahead of its own, so
// what runs ahead of the reader is camount's.
func readDirect(t *testing.T, p string) []byte {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []byte
	buf := make([]byte, 128<<10)
	for {
		n, err := f.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF || (err == nil && n == 0) {
			return out
		}
		if err != nil {
			t.Fatalf("read %s at %d: %v", p, len(out), err)
		}
	}
}

// TestMountStatsMatchServer reads a whole image through a mount (readahead
// on) and checks --stats-json and the exit line against what the HTTP
// server served.
func TestMountStatsMatchServer(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	index, data, srv, url := prefetchImage(t, dir, 61)
	mnt := filepath.Join(dir, "mnt")
	sj := filepath.Join(dir, "stats.json")
	m := startMount(t, nil, "--store="+url, "--stats-json="+sj, index, mnt)
	// Not os.ReadFile: with the kernel's own readahead a fast kernel or a
	// slow daemon (a loaded CI machine) has every chunk asked for by the
	// kernel's reads before camount's window reaches it.
	if got := readDirect(t, filepath.Join(mnt, "img")); !bytes.Equal(got, data) {
		t.Fatalf("read through the mount: %d bytes, not the image's %d", len(got), len(data))
	}
	unmountAndWait(t, m)
	st := readStats(t, sj)
	chunks, nbytes, _ := srv.counts()
	if st.FetchedChunks != chunks || st.FetchedBytes != nbytes || chunks == 0 {
		t.Fatalf("stats: %d chunks / %d bytes; server: %d chunk responses / %d bytes", st.FetchedChunks, st.FetchedBytes, chunks, nbytes)
	}
	if st.Priorities["readahead"].Chunks == 0 {
		t.Errorf("a sequential read of %d chunks caused no readahead: %+v", chunks, st.Priorities)
	}
	if !strings.Contains(m.stderr.String(), "camount: stats: fetched ") {
		t.Errorf("no stats line at exit; stderr: %s", m.stderr)
	}
}

// TestMountProfileCutsForegroundFetches records the chunks of a random-read
// trace on one mount, then prefetches them (--prefetch-profile) on a second,
// cold mount: the same trace then fetches nothing in the foreground.
func TestMountProfileCutsForegroundFetches(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	index, data, srv, url := prefetchImage(t, dir, 62)
	mnt := filepath.Join(dir, "mnt")
	prof := filepath.Join(dir, "boot.profile")
	r := rand.New(rand.NewPCG(3, 4))
	var offs []int64
	for i := 0; i < 40; i++ {
		offs = append(offs, r.Int64N(6<<20-4096)&^4095)
	}
	trace := func() {
		f, err := os.Open(filepath.Join(mnt, "img"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		p := make([]byte, 4096)
		for _, off := range offs {
			if _, err := f.ReadAt(p, off); err != nil || !bytes.Equal(p, data[off:off+4096]) {
				t.Fatalf("read at %d: %v", off, err)
			}
		}
	}

	sj1 := filepath.Join(dir, "run1.json")
	m := startMount(t, nil, "--store="+url, "--record-profile="+prof, "--stats-json="+sj1, index, mnt)
	trace()
	unmountAndWait(t, m)
	run1 := readStats(t, sj1)
	if run1.Priorities["foreground"].Chunks == 0 {
		t.Fatal("first run fetched nothing in the foreground")
	}
	pb, err := os.ReadFile(prof)
	if err != nil || !bytes.HasPrefix(pb, []byte("camount-profile 1\n")) {
		t.Fatalf("profile: %v %q", err, pb[:min(len(pb), 40)])
	}
	before, _, _ := srv.counts()

	sj2 := filepath.Join(dir, "run2.json")
	m = startMount(t, nil, "--store="+url, "--prefetch-profile="+prof, "--stats-json="+sj2, index, mnt)
	// Wait for the profile fill (SIGUSR1 writes the stats file) before the trace.
	deadline := time.Now().Add(30 * time.Second)
	for {
		os.Remove(sj2)
		m.cmd.Process.Signal(syscall.SIGUSR1)
		time.Sleep(50 * time.Millisecond)
		if b, err := os.ReadFile(sj2); err == nil {
			var s statsJSON
			if json.Unmarshal(b, &s) == nil && s.Priorities["background"].Chunks >= run1.FetchedChunks {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("profile fill did not finish; stderr: %s", m.stderr)
		}
	}
	trace()
	unmountAndWait(t, m)
	run2 := readStats(t, sj2)
	if fg := run2.Priorities["foreground"].Chunks; fg != 0 {
		t.Fatalf("with the profile the trace fetched %d chunks in the foreground (first run: %d)", fg, run1.Priorities["foreground"].Chunks)
	}
	if run2.PrefetchUsed == 0 {
		t.Fatal("no prefetched chunk was used")
	}
	after, _, _ := srv.counts()
	if after-before != run2.FetchedChunks {
		t.Fatalf("second run: server saw %d chunk requests, stats say %d", after-before, run2.FetchedChunks)
	}

	// A profile of another image is refused, and bad flags are usage errors.
	other, _, _, _ := prefetchImage(t, t.TempDir(), 63)
	out, err := tryCamount("mount", "--store="+url, "--prefetch-profile="+prof, other, filepath.Join(dir, "mnt2"))
	if err == nil || !strings.Contains(err.Error(), "another image") {
		t.Fatalf("profile of another image: %v\n%s", err, out)
	}
	if _, err := tryCamount("mount", "--prefetch=sometimes", index, filepath.Join(dir, "mnt3")); err == nil || !strings.Contains(err.Error(), "--prefetch must be") {
		t.Fatalf("bad --prefetch: %v", err)
	}
	if _, err := tryCamount("mount", "--rate-limit=fast", index, filepath.Join(dir, "mnt3")); err == nil {
		t.Fatal("bad --rate-limit accepted")
	}
}
