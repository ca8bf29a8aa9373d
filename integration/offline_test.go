package integration

// Issue 18.5: an image whose index is on an HTTP server starts offline
// from a filled --cache: fetched indexes are kept in the cache directory,
// revalidated (Last-Modified/ETag) while the server answers, and used with
// a warning when it does not.

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// stoppableServer serves dir over HTTP until stop; it counts 304 answers.
type stoppableServer struct {
	URL          string
	srv          *http.Server
	mu           sync.Mutex
	notModified  int
	indexFetches int
}

func startStoppable(t testing.TB, dir string) *stoppableServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stoppableServer{URL: "http://" + l.Addr().String()}
	fsrv := http.FileServer(http.Dir(dir))
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: 200}
		fsrv.ServeHTTP(rec, r)
		if strings.HasSuffix(r.URL.Path, ".caibx") {
			s.mu.Lock()
			s.indexFetches++
			if rec.code == http.StatusNotModified {
				s.notModified++
			}
			s.mu.Unlock()
		}
	})}
	go s.srv.Serve(l)
	t.Cleanup(s.stop)
	return s
}

func (s *stoppableServer) stop() { s.srv.Close() }

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(c int) { r.code = c; r.ResponseWriter.WriteHeader(c) }

func TestOfflineIndexFromCache(t *testing.T) {
	dir := t.TempDir()
	data := makeLocalImage(t, dir, 1<<20, 41)
	srv := startStoppable(t, dir)
	index := srv.URL + "/img.caibx"
	cdir := filepath.Join(t.TempDir(), "cache")

	// Online: the index and chunks go into the cache.
	out := filepath.Join(t.TempDir(), "out")
	camount(t, "extract", "--cache="+cdir, index, out)
	checkFile(t, out, data)
	kept, _ := filepath.Glob(filepath.Join(cdir, "indexes", "*.idx"))
	if len(kept) != 1 {
		t.Fatalf("cache keeps %d indexes, want 1", len(kept))
	}
	// Online again: revalidated, answered 304.
	out = filepath.Join(t.TempDir(), "out")
	camount(t, "extract", "--cache="+cdir, index, out)
	checkFile(t, out, data)
	srv.mu.Lock()
	nm := srv.notModified
	srv.mu.Unlock()
	if nm != 1 {
		t.Errorf("second extract: %d answers 304, want 1 (revalidation)", nm)
	}
	// A changed index on the server replaces the kept one.
	data2 := makeLocalImage(t, dir, 600<<10, 42)
	later := time.Now().Add(time.Hour)
	os.Chtimes(filepath.Join(dir, "img.caibx"), later, later)
	out = filepath.Join(t.TempDir(), "out")
	camount(t, "extract", "--cache="+cdir, index, out)
	checkFile(t, out, data2)

	// Offline: the server is gone; extract and mount work from the cache.
	srv.stop()
	out = filepath.Join(t.TempDir(), "out")
	_, stderr, code := camountIn(t, dir, nil, "extract", "--http-retries=0", "--cache="+cdir, index, out)
	if code != 0 {
		t.Fatalf("offline extract: %s", stderr)
	}
	checkFile(t, out, data2)
	if !strings.Contains(stderr, "using the cached copy") {
		t.Errorf("offline extract gave no warning: %q", stderr)
	}
	// Without the cache there is no index.
	if _, err := tryCamount("extract", "--http-retries=0", index, filepath.Join(t.TempDir(), "o")); err == nil {
		t.Error("offline extract without --cache succeeded")
	}
	needRoot(t)
	needCmd(t, "fusermount3")
	mnt, _ := remoteMountLine(t, "--http-retries=0", "--cache="+cdir, index)
	checkFile(t, filepath.Join(mnt, "img"), data2)
}
