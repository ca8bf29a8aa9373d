package integration

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cacheVerifyClean runs `camount cache verify` and fails unless it found
// no bad entry.
func cacheVerifyClean(t *testing.T, dir string) {
	t.Helper()
	out, err := tryCamount("cache", "verify", dir)
	if err != nil || !strings.Contains(out, " 0 corrupt") {
		t.Fatalf("cache verify after kill -9: %v\n%s", err, out)
	}
	t.Logf("cache verify: %s", strings.TrimSpace(out))
}

// waitFiles waits until dir holds at least n files (a hang guard, not a
// timing assertion).
func waitFiles(t *testing.T, dir string, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if files, _ := dirSize(t, dir); files >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not get %d files in a minute", dir, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestKill9DiskCache kills a mount and an NBD server with SIGKILL while
// they read and fill a disk cache, then restarts them on the same cache:
// nothing in it is corrupt and every byte read is exact (issue 15.6).
func TestKill9DiskCache(t *testing.T) {
	needFUSE(t)
	needRoot(t)
	needCmd(t, "nbdcopy")
	index, store, data := memImage(t, 24<<20)
	cdir := filepath.Join(t.TempDir(), "cache")

	t.Run("mount", func(t *testing.T) {
		mnt := t.TempDir()
		m := startMount(t, nil, "--store="+store, "--cache="+cdir, index, mnt)
		done := make(chan struct{})
		go func() { // read until the mount dies under us
			defer close(done)
			os.ReadFile(filepath.Join(mnt, "img"))
		}()
		waitFiles(t, cdir, 40)
		m.cmd.Process.Signal(syscall.SIGKILL)
		<-m.done
		exec.Command("fusermount3", "-uz", mnt).Run()
		<-done
		cacheVerifyClean(t, cdir)
		mnt2 := t.TempDir()
		startMount(t, nil, "--store="+store, "--cache="+cdir, index, mnt2)
		checkFile(t, filepath.Join(mnt2, "img"), data)
		exec.Command("fusermount3", "-u", mnt2).Run()
	})

	t.Run("nbd", func(t *testing.T) {
		os.RemoveAll(cdir)
		srv := startNBD(t, "unix", []string{"--store=" + store, "--cache=" + cdir}, index)
		cp := exec.Command("nbdcopy", srv.uris[0], "null:")
		if err := cp.Start(); err != nil {
			t.Fatal(err)
		}
		waitFiles(t, cdir, 40)
		srv.cmd.Process.Signal(syscall.SIGKILL)
		<-srv.done
		srv.done = nil
		cp.Wait()
		os.Remove(srv.sock)
		cacheVerifyClean(t, cdir)
		srv2 := startNBD(t, "unix", []string{"--store=" + store, "--cache=" + cdir}, index)
		out := filepath.Join(t.TempDir(), "copy")
		runCmd(t, "nbdcopy", srv2.uris[0], out)
		checkFile(t, out, data)
	})
}

// TestDiskCacheFull reads through a mount whose disk cache lives on a
// tiny file system that fills up: reads go on and are exact, the failure
// to store is logged once, and nothing in the cache is corrupt.
func TestDiskCacheFull(t *testing.T) {
	needFUSE(t)
	needRoot(t)
	index, store, data := memImage(t, 16<<20)
	cdir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", cdir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", cdir).Run() })
	mnt := t.TempDir()
	m := startMount(t, nil, "--store="+store, "--cache="+cdir, "--cache-max-size=1G", index, mnt)
	checkFile(t, filepath.Join(mnt, "img"), data)
	if n := strings.Count(m.stderr.String(), "disk cache: cannot store chunks"); n != 1 {
		t.Errorf("%d warnings about the full cache, want 1:\n%s", n, m.stderr)
	}
	cacheVerifyClean(t, cdir)
}

// gzipBomb is 64 MiB of zeros, gzipped (64 KiB).
var gzipBomb = func() []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(make([]byte, 64<<20))
	zw.Close()
	return b.Bytes()
}()

// hostileServer answers every chunk request in one hostile way.
func hostileServer(t *testing.T, mode string, good string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode {
		case "endless":
			w.Header().Set("Content-Type", "application/octet-stream")
			buf := bytes.Repeat([]byte{0x28}, 64<<10)
			for r.Context().Err() == nil {
				if _, err := w.Write(buf); err != nil {
					return
				}
			}
		case "huge-length":
			w.Header().Set("Content-Length", strconv.FormatInt(1<<40, 10))
			w.WriteHeader(200)
			w.Write([]byte("x"))
		case "dribble":
			conn, bw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			for _, c := range []byte("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa") {
				bw.WriteByte(c)
				if bw.Flush() != nil {
					return
				}
				time.Sleep(time.Second)
			}
		case "redirect-loop":
			http.Redirect(w, r, r.URL.Path+"?again="+strconv.Itoa(len(r.URL.RawQuery)), http.StatusFound)
		case "gzip-bomb":
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Content-Length", strconv.Itoa(len(gzipBomb)))
			w.Write(gzipBomb)
		case "wrong-chunk":
			// A real chunk of the image, but not the one asked for.
			http.ServeFile(w, r, good)
		}
	})
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String() + "/store"
}

// TestHostileStore points extract at stores that answer every chunk
// request in a hostile way: alone, the extract fails in bounded time and
// memory; in front of a good store, the chunks come from the good one and
// the output is exact.
func TestHostileStore(t *testing.T) {
	index, store, data := memImage(t, 2<<20)
	needCmd(t, "/usr/bin/time")
	anyChunk := storeChunks(t, store)[0]
	for _, mode := range []string{"endless", "huge-length", "dribble", "redirect-loop", "gzip-bomb", "wrong-chunk"} {
		t.Run(mode, func(t *testing.T) {
			url := hostileServer(t, mode, filepath.Join(store, anyChunk[:4], anyChunk+".cacnk"))
			run := func(stores ...string) (error, int64) {
				args := []string{"extract", "--http-timeout", "2s", "--http-retries", "1"}
				for _, s := range stores {
					args = append(args, "--store", s)
				}
				out := filepath.Join(t.TempDir(), "out")
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				// GNU time forks camount from its own small process and
				// reports that child's peak RSS. The test binary's own
				// rusage of a child it starts would not do: Go starts
				// children with vfork (CLONE_VM), so the kernel counts this
				// large process's peak into the child's at exec.
				rssFile := filepath.Join(t.TempDir(), "rss")
				cmd := exec.CommandContext(ctx, "/usr/bin/time", append([]string{"-f", "%M", "-o", rssFile, camountBin}, append(args, index, out)...)...)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				err := cmd.Run()
				if ctx.Err() != nil {
					t.Fatalf("extract hung against a %s store\n%s", mode, stderr.String())
				}
				maxRSS := readMaxRSS(t, rssFile)
				if err == nil {
					checkFile(t, out, data)
				} else {
					err = fmt.Errorf("%v: %s", err, lastLine(stderr.String()))
				}
				return err, maxRSS
			}
			err, rss := run(url)
			if err == nil {
				t.Fatalf("extract succeeded from a %s store alone", mode)
			}
			t.Logf("alone: %v (peak RSS %d MiB)", err, rss>>20)
			if rss > 256<<20 {
				t.Errorf("peak RSS %d MiB against a %s store", rss>>20, mode)
			}
			if err, _ := run(url, store); err != nil {
				t.Fatalf("a good store after the %s one: %v", mode, err)
			}
		})
	}
}

// readMaxRSS reads the peak RSS GNU time wrote (-f %M: KiB) as bytes; it
// ignores the "Command exited with non-zero status" line time writes first.
func readMaxRSS(t *testing.T, name string) int64 {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	kib, err := strconv.ParseInt(lastLine(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s: no peak RSS: %q", name, b)
	}
	return kib << 10
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
