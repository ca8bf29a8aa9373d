package integration

import (
	"bytes"
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Issue 18.1: a failed or interrupted extract of a .caibx to a regular file
// must leave no full-size lookalike and must not touch an existing output.

// casyncBlob makes a blob image of data with casync in dir and returns the
// index and store paths.
func casyncBlob(t testing.TB, dir string, data []byte) (index, store string) {
	t.Helper()
	needCmd(t, "casync")
	src := filepath.Join(dir, "img.raw")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	index, store = filepath.Join(dir, "img.caibx"), filepath.Join(dir, "img.castr")
	runCmd(t, "casync", "make", "--store="+store, index, src)
	os.Remove(src)
	return index, store
}

// tempsIn lists casync-style temporary files (".#name…") in dir.
func tempsIn(dir string) []string {
	var out []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".#") {
			out = append(out, e.Name())
		}
	}
	return out
}

// stallingStore serves a local store over HTTP, handing out the first
// `serve` chunk requests and then holding every further one until the
// client goes away.
func stallingStore(t testing.TB, store string, serve int64) (url string, served *atomic.Int64) {
	served = &atomic.Int64{}
	fs := http.FileServer(http.Dir(store))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if served.Add(1) > serve {
			<-r.Context().Done()
			return
		}
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, served
}

func TestExtractInterruptedLeavesOutput(t *testing.T) {
	data := randomBytes(8<<20, 7)
	index, store := casyncBlob(t, t.TempDir(), data)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			url, served := stallingStore(t, store, 20)
			dir := t.TempDir()
			out := filepath.Join(dir, "big.img")
			good := []byte("an older good copy\n")
			os.WriteFile(out, good, 0o644)
			cmd := exec.Command(camountBin, "extract", "--store="+url, index, out)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(60 * time.Second)
			for served.Load() <= 20 || len(tempsIn(dir)) == 0 {
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatalf("extract made no progress: %s", stderr.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			cmd.Process.Signal(sig)
			err := cmd.Wait()
			if err == nil {
				t.Fatal("interrupted extract exited 0")
			}
			checkFile(t, out, good)
			if sig != syscall.SIGKILL {
				if tmp := tempsIn(dir); len(tmp) > 0 {
					t.Errorf("temporary files left after %v: %v", sig, tmp)
				}
			}
		})
	}
}

func TestExtractFailuresLeaveOutput(t *testing.T) {
	data := randomBytes(4<<20, 8)
	index, store := casyncBlob(t, t.TempDir(), data)
	x := readIndex(t, index)
	forbidden := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusForbidden)
	}))
	t.Cleanup(forbidden.Close)
	// A store missing its last chunk, and one with a corrupt chunk.
	missing := filepath.Join(t.TempDir(), "missing.castr")
	runCmd(t, "cp", "-a", store, missing)
	os.Remove(chunkFile(missing, x.Chunks[len(x.Chunks)-1]))
	corrupt := filepath.Join(t.TempDir(), "corrupt.castr")
	runCmd(t, "cp", "-a", store, corrupt)
	damageChunk(t, corrupt, x.Chunks[len(x.Chunks)/2])
	for name, st := range map[string]string{"missing": missing, "corrupt": corrupt, "403": forbidden.URL} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "big.img")
			good := []byte("an older good copy\n")
			os.WriteFile(out, good, 0o644)
			if _, err := tryCamount("extract", "--http-retries=0", "--store="+st, index, out); err == nil {
				t.Fatal("extract succeeded")
			}
			checkFile(t, out, good)
			if tmp := tempsIn(dir); len(tmp) > 0 {
				t.Errorf("temporary files left: %v", tmp)
			}
			// Without an older copy no file appears at all.
			os.Remove(out)
			tryCamount("extract", "--http-retries=0", "--store="+st, index, out)
			if _, err := os.Stat(out); err == nil {
				t.Errorf("a failed extract created %s", out)
			}
		})
	}
}

func TestExtractENOSPCLeavesOutput(t *testing.T) {
	needRoot(t)
	data := randomBytes(6<<20, 9)
	index, store := casyncBlob(t, t.TempDir(), data)
	mnt := t.TempDir()
	if _, err := tryCmd("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	out := filepath.Join(mnt, "big.img")
	good := []byte("an older good copy\n")
	os.WriteFile(out, good, 0o644)
	_, err := tryCamount("extract", "--store="+store, index, out)
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("extract onto a full file system: %v", err)
	}
	checkFile(t, out, good)
	if tmp := tempsIn(mnt); len(tmp) > 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

func TestExtractToStdout(t *testing.T) {
	data := randomBytes(3<<20, 10)
	copy(data[1<<20:], make([]byte, 512<<10)) // zero chunks come out as zeros
	index, store := casyncBlob(t, t.TempDir(), data)
	cmd := exec.Command(camountBin, "extract", "--store="+store, index, "-")
	h := sha256.New()
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = h, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("extract to -: %v: %s", err, stderr.String())
	}
	if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("the stream on stdout differs from the image")
	}
	// A FIFO (not seekable) as the output is refused, as casync does.
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skip("mkfifo:", err)
	}
	_, err := tryCamount("extract", "--store="+store, index, fifo)
	if err == nil || !strings.Contains(err.Error(), "neither a regular file nor a block device") {
		t.Errorf("extract to a FIFO: %v", err)
	}
}
