package integration

// Issue 18 items 6, 8 and 9: out-of-range sizes, --http-timeout <= 0,
// "interrupted", a failed mount's mountpoint, a 200 HTML page in place of
// a chunk.

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSizesOutOfRange(t *testing.T) {
	dir := t.TempDir()
	data := makeLocalImage(t, dir, 512<<10, 31)
	index := filepath.Join(dir, "img.caibx")
	cdir := filepath.Join(dir, "cache")
	out := filepath.Join(dir, "out")
	camount(t, "extract", "--cache="+cdir, index, out)
	checkFile(t, out, data)
	before := listTree(t, cdir)
	if len(before) == 0 {
		t.Fatal("the cache holds nothing")
	}
	// 16777216T is 2^64 bytes: it used to wrap to 0 and empty the cache.
	if _, err := tryCamount("cache", "prune", "--max-size=16777216T", cdir); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("cache prune --max-size=16777216T: %v", err)
	}
	if after := listTree(t, cdir); len(after) != len(before) {
		t.Errorf("the refused prune removed entries: %d before, %d after", len(before), len(after))
	}
	for _, f := range []string{"--cache-max-size=18014398509481985K", "--cache-size=9223372036854775808"} {
		if _, err := tryCamount("extract", f, "--cache="+cdir, index, filepath.Join(dir, "o2")); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("extract %s: %v", f, err)
		}
	}
	if _, err := tryCamount("make", "--chunk-size=17592186044480M", filepath.Join(dir, "x.caibx"), out); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("make --chunk-size=17592186044480M: %v", err)
	}
}

func TestHTTPTimeoutNotPositive(t *testing.T) {
	dir := t.TempDir()
	makeLocalImage(t, dir, 64<<10, 32)
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	for _, v := range []string{"0", "0s", "-1s"} {
		for _, args := range [][]string{
			{"extract", "--http-timeout=" + v, srv.URL + "/img.caibx", filepath.Join(dir, "o")},
			{"info", "--http-timeout=" + v, srv.URL + "/img.caibx"},
		} {
			if _, err := tryCamount(args...); err == nil || !strings.Contains(err.Error(), "--http-timeout") || !strings.Contains(err.Error(), "more than 0") {
				t.Errorf("%v: %v", args, err)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "o")); err == nil {
		t.Error("a refused extract wrote its output")
	}
}

// TestInterruptedMessage: SIGINT or SIGTERM during extract and make says
// "interrupted", not "context canceled", and exits 128+signal.
func TestInterruptedMessage(t *testing.T) {
	data := randomBytes(4<<20, 33)
	index, store := casyncBlob(t, t.TempDir(), data)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		url, served := stallingStore(t, store, 5)
		cmd := exec.Command(camountBin, "extract", "--store="+url, index, filepath.Join(t.TempDir(), "out"))
		checkInterrupted(t, cmd, sig, func() bool { return served.Load() > 5 })

		// make reading a FIFO that never ends
		dir := t.TempDir()
		fifo := filepath.Join(dir, "in")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd = exec.Command(camountBin, "make", filepath.Join(dir, "x.caibx"), fifo)
		var w *os.File
		checkInterrupted(t, cmd, sig, func() bool {
			if w == nil {
				var err error
				if w, err = os.OpenFile(fifo, os.O_WRONLY, 0); err != nil {
					t.Fatal(err)
				}
				w.Write(randomBytes(1<<20, 34))
			}
			return true
		})
		if w != nil {
			w.Close()
		}
	}
}

func checkInterrupted(t *testing.T, cmd *exec.Cmd, sig syscall.Signal, started func() bool) {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !started() {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("%v made no progress: %s", cmd.Args, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	cmd.Process.Signal(sig)
	err := cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	msg := stderr.String()
	if !ok || ee.ExitCode() != 128+int(sig) || !strings.Contains(msg, "interrupted") || strings.Contains(msg, "context canceled") {
		t.Errorf("%v after %v: %v, stderr %q; want exit %d and \"interrupted\"", cmd.Args[1], sig, err, msg, 128+int(sig))
	}
}

// TestMountFailureRemovesMountpoint: a mount (also --daemon) that fails
// after making its mountpoint directory takes it away again.
func TestMountFailureRemovesMountpoint(t *testing.T) {
	dir := t.TempDir()
	for _, daemon := range []bool{false, true} {
		mnt := filepath.Join(dir, "a", "b")
		args := []string{"mount", "--store=" + dir, filepath.Join(dir, "nothere.caibx"), mnt}
		if daemon {
			args = append(args, "--daemon")
		}
		if _, err := tryCamount(args...); err == nil {
			t.Fatalf("%v succeeded", args)
		}
		if _, err := os.Stat(filepath.Join(dir, "a")); err == nil {
			t.Errorf("%v left the mountpoint directories it made", args)
		}
	}
}

// TestHTMLInsteadOfChunk: a server answering 200 with an HTML page for
// every chunk is reported as "not a chunk", naming the store and chunk.
func TestHTMLInsteadOfChunk(t *testing.T) {
	dir := t.TempDir()
	makeLocalImage(t, dir, 256<<10, 35)
	x := readIndex(t, filepath.Join(dir, "img.caibx"))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte("<html><body>Welcome to our CDN</body></html>\n"))
	}))
	t.Cleanup(srv.Close)
	_, err := tryCamount("extract", "--store="+srv.URL+"/store", filepath.Join(dir, "img.caibx"), filepath.Join(dir, "out"))
	if err == nil {
		t.Fatal("extract from an HTML store succeeded")
	}
	msg := err.Error()
	found := false
	for _, c := range x.Chunks {
		found = found || strings.Contains(msg, c.ID.String())
	}
	if !strings.Contains(msg, "not a chunk") || !strings.Contains(msg, srv.URL+"/store") || !found || strings.Contains(msg, "decompressed to") {
		t.Errorf("extract from an HTML store: %s", msg)
	}
}
