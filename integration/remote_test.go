package integration

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/camount/camount/fetch"
)

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// nginxServer is a real nginx serving a directory on 127.0.0.1.
type nginxServer struct {
	URL       string // http://127.0.0.1:PORT (https:// with TLS)
	AccessLog string
	cmd       *exec.Cmd
}

type nginxTLS struct {
	cert, key string // server certificate and key
	clientCA  string // if set, client certificates signed by it are required
	auth      string // if set, the Authorization header must equal it
}

// startNginx runs nginx in the foreground with a generated config in a temp
// dir, serving root; the test's cleanup stops it.
func startNginx(t testing.TB, root string, tlsOpt *nginxTLS) *nginxServer {
	t.Helper()
	needCmd(t, "nginx")
	prefix := t.TempDir()
	port := freePort(t)
	listen := fmt.Sprintf("listen 127.0.0.1:%d;", port)
	scheme := "http"
	extra := ""
	if tlsOpt != nil {
		scheme = "https"
		listen = fmt.Sprintf("listen 127.0.0.1:%d ssl http2;\n    ssl_certificate %s;\n    ssl_certificate_key %s;", port, tlsOpt.cert, tlsOpt.key)
		if tlsOpt.clientCA != "" {
			extra += fmt.Sprintf("    ssl_client_certificate %s;\n    ssl_verify_client on;\n", tlsOpt.clientCA)
		}
		if tlsOpt.auth != "" {
			extra += fmt.Sprintf("    if ($http_authorization != %q) { return 401; }\n", tlsOpt.auth)
		}
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	conf := fmt.Sprintf(`%s
daemon off;
worker_processes 2;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 1024; }
http {
  default_type application/octet-stream;
  log_format plain '$request_uri $status $server_protocol $body_bytes_sent';
  access_log %[2]s/access.log plain;
  client_body_temp_path %[2]s/client;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  sendfile on;
  keepalive_requests 100000;
  server {
    %[3]s
    root %[4]s;
%[5]s  }
}
`, user, prefix, listen, root, extra)
	confPath := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nginx", "-p", prefix, "-c", confPath, "-e", filepath.Join(prefix, "error.log"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &nginxServer{URL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, port), AccessLog: filepath.Join(prefix, "access.log"), cmd: cmd}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	waitListening(t, port, func() string {
		b, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
		return stderr.String() + string(b)
	})
	return s
}

func waitListening(t testing.TB, port int, diag func() string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("server on port %d did not start: %s", port, diag())
}

// chunkRequests counts the chunk GETs in an nginx access log.
func (s *nginxServer) chunkRequests(t testing.TB) int {
	t.Helper()
	b, _ := os.ReadFile(s.AccessLog)
	return strings.Count(string(b), ".cacnk ")
}

// faultProxy is an HTTP proxy in front of a store that injects faults into
// the first `times` requests of each URL (so retries must get through), or
// into every request when times < 0.
type faultProxy struct {
	URL      string
	upstream string
	client   *http.Client
	srv      *http.Server

	mu    sync.Mutex
	mode  string
	times int
	stall time.Duration
	seen  map[string]int

	requests, faults atomic.Int64 // faults: since the last set
	allFaults        atomic.Int64 // since the start
}

func startFaultProxy(t testing.TB, upstream string) *faultProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{
		URL:      "http://" + l.Addr().String(),
		upstream: upstream,
		client:   &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		seen:     map[string]int{},
	}
	p.srv = &http.Server{Handler: p}
	go p.srv.Serve(l)
	t.Cleanup(func() { p.srv.Close() })
	return p
}

// set changes the fault: mode "" (none), latency, 5xx, reset, truncate,
// corrupt, stall.
func (p *faultProxy) set(mode string, times int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode, p.times, p.seen = mode, times, map[string]int{}
	p.faults.Store(0)
}

// setStall sets how long mode "stall" holds a request. Under the lock: the
// proxy already serves.
func (p *faultProxy) setStall(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stall = d
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	p.mu.Lock()
	mode := p.mode
	n := p.seen[r.URL.Path]
	p.seen[r.URL.Path] = n + 1
	if p.times >= 0 && n >= p.times {
		mode = ""
	}
	stall := p.stall
	p.mu.Unlock()
	if mode != "" && mode != "latency" {
		p.faults.Add(1)
		p.allFaults.Add(1)
	}
	switch mode {
	case "latency":
		time.Sleep(20 * time.Millisecond)
	case "5xx":
		http.Error(w, "injected", []int{500, 502, 503, 504}[n%4])
		return
	case "reset":
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
		}
		return
	case "stall":
		select {
		case <-r.Context().Done():
		case <-time.After(stall):
		}
		return
	}
	// Forwarded with its method, headers, body and Host, so that signed
	// requests (S3) still verify upstream.
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.upstream+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	req.Host = r.Host
	req.ContentLength = r.ContentLength
	resp, err := p.client.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for k, v := range resp.Header {
		if k != "Content-Length" {
			w.Header()[k] = v
		}
	}
	if resp.StatusCode != http.StatusOK {
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	switch mode {
	case "truncate":
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
		return
	case "corrupt":
		// Only chunks: nothing can tell a damaged index (casync has no
		// checksum for it either); a damaged chunk must be caught.
		if !strings.HasSuffix(r.URL.Path, ".cacnk") {
			break
		}
		body = bytes.Clone(body)
		body[len(body)/2] ^= 0x5a
	}
	w.Write(body)
}

// remoteImage is a casync-made blob image published by nginx: the index at
// <URL>/img.caibx and the store at <URL>/default.castr.
type remoteImage struct {
	src   []byte
	dir   string // served root
	index string // local index path
	store string // local store path
	ngx   *nginxServer
}

func makeRemoteImage(t testing.TB, size int, tlsOpt *nginxTLS) *remoteImage {
	t.Helper()
	needCmd(t, "casync", "nginx")
	dir := t.TempDir()
	// Random data with a zero run (zero chunks are never fetched) and a
	// repeated block (one fetch serves both copies).
	data := randomBytes(size, 42)
	copy(data[size/4:], make([]byte, size/8))
	copy(data[size/2:size/2+size/8], data[:size/8])
	srcPath := filepath.Join(t.TempDir(), "img.raw")
	if err := os.WriteFile(srcPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	im := &remoteImage{src: data, dir: dir, index: filepath.Join(dir, "img.caibx"), store: filepath.Join(dir, "default.castr")}
	runCmd(t, "casync", "make", "--store="+im.store, im.index, srcPath)
	im.ngx = startNginx(t, dir, tlsOpt)
	return im
}

// checkFile fails unless path holds exactly want.
func checkFile(t testing.TB, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s differs from the source at byte %d (%d vs %d bytes): WRONG DATA", path, i, len(got), len(want))
	}
}

func TestRemoteExtractIndexURL(t *testing.T) {
	im := makeRemoteImage(t, 6<<20, nil)
	out := filepath.Join(t.TempDir(), "out")
	// Index URL: the store is derived as casync does (default.castr beside it).
	camount(t, "extract", im.ngx.URL+"/img.caibx", out)
	checkFile(t, out, im.src)
	n := im.ngx.chunkRequests(t)
	distinct := len(storeChunks(t, im.store))
	if n > distinct {
		t.Errorf("fetched %d chunks, the store has %d distinct: a chunk was downloaded twice", n, distinct)
	}
	info := camount(t, "info", im.ngx.URL+"/img.caibx")
	if !strings.Contains(info, fmt.Sprintf("Size:            %d", len(im.src))) {
		t.Errorf("info over HTTP:\n%s", info)
	}
	// A local index with an HTTP store given explicitly, and casync reading
	// the same HTTP store (the layout is casync's).
	out2 := filepath.Join(t.TempDir(), "out2")
	camount(t, "extract", "--store", im.ngx.URL+"/default.castr/", im.index, out2)
	checkFile(t, out2, im.src)
	out3 := filepath.Join(t.TempDir(), "out3")
	runCmd(t, "casync", "extract", "--store="+im.ngx.URL+"/default.castr", im.index, out3)
	checkFile(t, out3, im.src)
	// Errors are clear and quick.
	_, err := tryCamount("extract", im.ngx.URL+"/nonexistent.caibx", filepath.Join(t.TempDir(), "x"))
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("missing index: %v", err)
	}
	_, err = tryCamount("extract", "--http-retries", "1", "--store", "http://127.0.0.1:1/store", im.index, filepath.Join(t.TempDir(), "x"))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("store down: %v", err)
	}
	_, err = tryCamount("extract", "--store", im.ngx.URL+"/wrong.castr", im.index, filepath.Join(t.TempDir(), "x"))
	if err == nil || !strings.Contains(err.Error(), "404 Not Found") {
		t.Errorf("wrong store: %v", err)
	}
}

// TestRemoteFaults runs extraction through a fault-injecting proxy. Transient
// faults (the first attempts at each chunk fail) must be recovered by retries;
// permanent faults must fail the command. Never is wrong data written.
func TestRemoteFaults(t *testing.T) {
	im := makeRemoteImage(t, 4<<20, nil)
	px := startFaultProxy(t, im.ngx.URL)
	px.setStall(5 * time.Second)
	index := px.URL + "/img.caibx"
	args := []string{"--http-timeout", "700ms", "--http-retries", "3"}
	for _, tc := range []struct {
		mode  string
		times int
	}{
		{"latency", -1}, {"5xx", 2}, {"reset", 2}, {"truncate", 2}, {"corrupt", 1}, {"stall", 1},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			px.set(tc.mode, tc.times)
			out := filepath.Join(t.TempDir(), "out")
			start := time.Now()
			camount(t, append([]string{"extract", index, out}, args...)...)
			checkFile(t, out, im.src)
			t.Logf("%s: %d faults injected, recovered in %v", tc.mode, px.faults.Load(), time.Since(start).Round(time.Millisecond))
			if tc.mode != "latency" && px.faults.Load() == 0 {
				t.Fatal("no fault was injected")
			}
		})
	}
	for _, mode := range []string{"5xx", "reset", "corrupt", "truncate"} {
		t.Run("permanent-"+mode, func(t *testing.T) {
			px.set("", 0)
			// Fetch the index cleanly, then break every chunk request.
			out := filepath.Join(t.TempDir(), "out")
			px.set(mode, -1)
			_, err := tryCamount(append([]string{"extract", "--store", px.URL + "/default.castr", im.index, out}, args...)...)
			if err == nil {
				checkFile(t, out, im.src)
				t.Fatal("extract succeeded although every chunk request failed")
			}
			if mode == "corrupt" && !strings.Contains(err.Error(), "corrupt") {
				t.Errorf("corrupt store: error does not say so: %v", err)
			}
			// The fault ends: the same command works.
			px.set("", 0)
			camount(t, append([]string{"extract", "--store", px.URL + "/default.castr", im.index, out}, args...)...)
			checkFile(t, out, im.src)
		})
	}
}

// TestRemoteMountFaults reads a FUSE mount over HTTP while faults come and
// go: every read returns the source's bytes or fails with EIO, and the
// mount works again once the fault ends.
func TestRemoteMountFaults(t *testing.T) {
	im := makeRemoteImage(t, 4<<20, nil)
	px := startFaultProxy(t, im.ngx.URL)
	px.setStall(5 * time.Second)
	mnt := remoteMount(t, "--http-timeout", "300ms", "--http-retries", "2", "--cache-size", "0", px.URL+"/img.caibx")
	file := filepath.Join(mnt, "img")
	// readRound drops the kernel's page cache and reads the file (at most
	// maxReads pieces of 128 KiB), checking every byte.
	readRound := func(t *testing.T, maxReads int) (good, eio int) {
		t.Helper()
		os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0o644)
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 128<<10)
		for off := 0; off < len(im.src) && good+eio < maxReads; off += len(buf) {
			n, err := f.ReadAt(buf, int64(off))
			if err != nil && err != io.EOF {
				if !strings.Contains(err.Error(), "input/output error") {
					t.Fatalf("read at %d: %v, want EIO", off, err)
				}
				eio++
				continue
			}
			if !bytes.Equal(buf[:n], im.src[off:off+n]) {
				t.Fatalf("read at %d returned WRONG DATA", off)
			}
			good++
		}
		return good, eio
	}
	for _, mode := range []string{"corrupt", "reset", "5xx", "truncate", "stall"} {
		t.Run(mode, func(t *testing.T) {
			px.set(mode, -1) // every request fails: reads fail with EIO
			_, eio := readRound(t, 3)
			if eio == 0 {
				t.Fatalf("no read failed under a permanent %s fault", mode)
			}
			// Chunks that just failed fail again at once for a while
			// (a FUSE read is asked again right after it fails): let
			// that pass before the transient round.
			time.Sleep(fetch.DefaultFailTTL + 500*time.Millisecond)
			px.set(mode, 1) // transient: retries get through
			if _, eio := readRound(t, 1000); eio != 0 {
				t.Fatalf("%d reads failed under a transient %s fault", eio, mode)
			}
			px.set("", 0)
			if _, eio := readRound(t, 1000); eio != 0 {
				t.Fatalf("%d reads failed after the fault ended", eio)
			}
		})
	}
}

func TestRemoteMirrorFailover(t *testing.T) {
	im := makeRemoteImage(t, 3<<20, nil)
	px := startFaultProxy(t, im.ngx.URL)
	down := fmt.Sprintf("http://127.0.0.1:%d/default.castr", freePort(t))
	out := filepath.Join(t.TempDir(), "out")
	// The first mirror refuses connections: everything comes from the second,
	// and the first is not asked again for every chunk.
	stderr := &bytes.Buffer{}
	cmd := exec.Command(camountBin, "extract", "--http-retries", "1", "--store", down+"|"+px.URL+"/default.castr", im.index, out)
	cmd.Stderr = stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	checkFile(t, out, im.src)
	if n := strings.Count(stderr.String(), "switching"); n < 1 || n > 20 {
		t.Errorf("%d mirror switches logged, want a few:\n%s", n, stderr)
	}
	// A mirror answering 5xx to everything is left the same way.
	px.set("5xx", -1)
	out2 := filepath.Join(t.TempDir(), "out2")
	camount(t, "extract", "--http-retries", "1", "--store", px.URL+"/default.castr|"+im.ngx.URL+"/default.castr", im.index, out2)
	checkFile(t, out2, im.src)
	// So is a mirror serving damaged chunks. Eight fetches at once: the
	// requests already in flight when the first damaged chunk arrives all
	// reach that mirror (the default, 32, is most of this image's chunks),
	// so only a bound well above eight and below the chunk count tells a
	// group that leaves the mirror from one that stays.
	px.set("corrupt", -1)
	out3 := filepath.Join(t.TempDir(), "out3")
	camount(t, "extract", "--fetch-workers", "8", "--store", px.URL+"/default.castr|"+im.ngx.URL+"/default.castr", im.index, out3)
	checkFile(t, out3, im.src)
	if px.faults.Load() > 20 {
		t.Errorf("the corrupt mirror served %d chunks: the group did not leave it", px.faults.Load())
	}
}

// TestRemoteStoreChain takes a chunk that is corrupt (and one that is
// missing) in the first store from the second.
func TestRemoteStoreChain(t *testing.T) {
	im := makeRemoteImage(t, 3<<20, nil)
	local := filepath.Join(t.TempDir(), "local.castr")
	runCmd(t, "cp", "-a", im.store, local)
	ids := storeChunks(t, local)
	if len(ids) < 3 {
		t.Fatalf("only %d chunks", len(ids))
	}
	bad := filepath.Join(local, ids[0][:4], ids[0]+".cacnk")
	b, _ := os.ReadFile(bad)
	os.Chmod(bad, 0o644)
	b[len(b)/2] ^= 1
	os.WriteFile(bad, b, 0o644)
	os.Remove(filepath.Join(local, ids[1][:4], ids[1]+".cacnk"))
	out := filepath.Join(t.TempDir(), "out")
	camount(t, "extract", "--store", local, "--store", im.ngx.URL+"/default.castr", im.index, out)
	checkFile(t, out, im.src)
	if n := im.ngx.chunkRequests(t); n != 2 {
		t.Errorf("%d chunks fetched over HTTP, want the 2 the local store lacks intact", n)
	}
	// Only the broken store: a clear error naming the corrupt chunk.
	_, err := tryCamount("extract", "--store", local, im.index, filepath.Join(t.TempDir(), "x"))
	if err == nil || !strings.Contains(err.Error(), "corrupt") && !strings.Contains(err.Error(), "not found") {
		t.Errorf("broken store alone: %v", err)
	}
}

// dirSize counts the regular files under dir and their bytes, each inode
// once (a chunk being linked into place has two names for a moment).
func dirSize(t testing.TB, dir string) (files int, bytes int64) {
	seen := map[uint64]bool{}
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		files++
		bytes += info.Size()
		return nil
	})
	return
}

// TestRemoteDiskCache reads an image larger than the cache bound twice:
// the cache stays within its bound, serves what it kept, and is verified.
func TestRemoteDiskCache(t *testing.T) {
	im := makeRemoteImage(t, 8<<20, nil)
	cdir := filepath.Join(t.TempDir(), "cache")
	const bound = 3 << 20
	out := filepath.Join(t.TempDir(), "out")
	args := []string{"extract", "--cache", cdir, "--cache-max-size", strconv.Itoa(bound), im.ngx.URL + "/img.caibx", out}
	camount(t, args...)
	checkFile(t, out, im.src)
	_, n := dirSize(t, cdir)
	if n > bound || n < bound/4 {
		t.Fatalf("cache holds %d bytes after reading %d, bound %d", n, len(im.src), bound)
	}
	// A smaller image fits: the second read is served from the cache.
	small := im.src[:2<<20]
	smallPath := filepath.Join(t.TempDir(), "small.raw")
	os.WriteFile(smallPath, small, 0o644)
	runCmd(t, "casync", "make", "--store="+im.store, filepath.Join(im.dir, "small.caibx"), smallPath)
	cdir2 := filepath.Join(t.TempDir(), "cache2")
	args2 := []string{"extract", "--cache", cdir2, "--cache-max-size", strconv.Itoa(bound), im.ngx.URL + "/small.caibx"}
	// Fresh outputs: an existing output seeds an extract (--seed-output),
	// which would leave the chunks it holds out of the cache.
	out2a, out2b := filepath.Join(t.TempDir(), "out2a"), filepath.Join(t.TempDir(), "out2b")
	before := im.ngx.chunkRequests(t)
	camount(t, append(args2, out2a)...)
	checkFile(t, out2a, small)
	first := im.ngx.chunkRequests(t) - before
	camount(t, append(args2, out2b)...)
	checkFile(t, out2b, small)
	if again := im.ngx.chunkRequests(t) - before - first; again != 0 || first == 0 {
		t.Fatalf("first read fetched %d chunks, the second %d (want all from the cache)", first, again)
	}
	// The cache is a store: casync and camount read it directly.
	out3 := filepath.Join(t.TempDir(), "out3")
	runCmd(t, "casync", "extract", "--store="+cdir2, filepath.Join(im.dir, "small.caibx"), out3)
	checkFile(t, out3, small)
	// A corrupted cache file is detected, refetched, and reported by verify.
	var victim string
	filepath.Walk(cdir2, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && victim == "" {
			victim = p
		}
		return nil
	})
	b, _ := os.ReadFile(victim)
	b[0] ^= 1
	os.Chmod(victim, 0o644)
	os.WriteFile(victim, b, 0o644)
	if _, err := tryCamount("cache", "verify", cdir2); err == nil {
		t.Fatal("cache verify missed a corrupt file")
	}
	out2c := filepath.Join(t.TempDir(), "out2c")
	camount(t, append(args2, out2c)...)
	checkFile(t, out2c, small)
	camount(t, "cache", "verify", cdir2)
	st := camount(t, "cache", "stats", cdir2)
	if !strings.Contains(st, "Chunks:") {
		t.Fatalf("stats:\n%s", st)
	}
	camount(t, "cache", "prune", "--max-size", "1M", cdir2)
	if _, n := dirSize(t, cdir2); n > 1<<20 {
		t.Fatalf("after prune: %d bytes", n)
	}
}

// TestRemoteSharedCache runs two camount processes on one cache directory.
func TestRemoteSharedCache(t *testing.T) {
	im := makeRemoteImage(t, 8<<20, nil)
	cdir := filepath.Join(t.TempDir(), "cache")
	const bound = 5 << 20
	var wg sync.WaitGroup
	errs := make([]error, 4)
	outs := make([]string, 4)
	for i := range outs {
		outs[i] = filepath.Join(t.TempDir(), "out")
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = tryCamount("extract", "--cache", cdir, "--cache-max-size", strconv.Itoa(bound), im.ngx.URL+"/img.caibx", outs[i])
		}()
	}
	wg.Wait()
	for i := range outs {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		checkFile(t, outs[i], im.src)
	}
	camount(t, "cache", "verify", cdir)
	files, n := dirSize(t, cdir)
	if n > bound+bound/4 {
		t.Errorf("shared cache holds %d bytes in %d files, bound %d", n, files, bound)
	}
	if out := camount(t, "cache", "stats", cdir); !strings.Contains(out, "Temporary files: 0") {
		t.Errorf("torn or leftover files:\n%s", out)
	}
}

// TestRemoteTLS serves the store over HTTPS with HTTP/2, a private CA, a
// required client certificate and an Authorization header.
func TestRemoteTLS(t *testing.T) {
	pki := t.TempDir()
	ca, caKey := makeCA(t, pki)
	srvCert, srvKey := makeCert(t, pki, "server", ca, caKey, false)
	cliCert, cliKey := makeCert(t, pki, "client", ca, caKey, true)
	im := makeRemoteImage(t, 2<<20, &nginxTLS{cert: srvCert, key: srvKey, clientCA: filepath.Join(pki, "ca.pem"), auth: "Bearer s3cret"})
	out := filepath.Join(t.TempDir(), "out")
	tlsArgs := []string{"--ca-file", filepath.Join(pki, "ca.pem"), "--client-cert", cliCert, "--client-key", cliKey, "--http-retries", "0"}
	camount(t, append([]string{"extract", "--http-auth", "Bearer s3cret", im.ngx.URL + "/img.caibx", out}, tlsArgs...)...)
	checkFile(t, out, im.src)
	info := camount(t, append([]string{"info", "--http-auth", "Bearer s3cret", im.ngx.URL + "/img.caibx"}, tlsArgs...)...)
	if !strings.Contains(info, fmt.Sprintf("Size:            %d", len(im.src))) {
		t.Errorf("info over HTTPS:\n%s", info)
	}
	log, _ := os.ReadFile(im.ngx.AccessLog)
	if !strings.Contains(string(log), ".cacnk 200 HTTP/2.0") {
		t.Errorf("chunks not fetched over HTTP/2:\n%.500s", log)
	}
	if _, err := tryCamount(append([]string{"extract", im.ngx.URL + "/img.caibx", out}, tlsArgs...)...); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("without the Authorization header: %v", err)
	}
	if _, err := tryCamount("extract", "--http-retries", "0", im.ngx.URL+"/img.caibx", out); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA: %v", err)
	}
	if _, err := tryCamount("extract", "--http-retries", "0", "--ca-file", filepath.Join(pki, "ca.pem"), "--http-auth", "Bearer s3cret", im.ngx.URL+"/img.caibx", out); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("without a client certificate: %v", err)
	}
	if _, err := tryCamount("extract", "--ca-file", "/nonexistent.pem", im.ngx.URL+"/img.caibx", out); err == nil || !strings.Contains(err.Error(), "CA file") {
		t.Errorf("missing CA file: %v", err)
	}
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func makeCA(t testing.TB, dir string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "camount test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", der)
	ca, _ := x509.ParseCertificate(der)
	return ca, key
}

func makeCert(t testing.TB, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, client bool) (certPath, keyPath string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	certPath = filepath.Join(dir, name+".pem")
	keyPath = filepath.Join(dir, name+".key")
	writePEM(t, certPath, "CERTIFICATE", der)
	kder, _ := x509.MarshalECPrivateKey(key)
	writePEM(t, keyPath, "EC PRIVATE KEY", kder)
	return certPath, keyPath
}

// TestRemoteTreeIndex lists, extracts and mounts a .caidx by URL.
func TestRemoteTreeIndex(t *testing.T) {
	needCmd(t, "casync", "nginx")
	root := t.TempDir()
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "sub", "deeper"), 0o755)
	os.WriteFile(filepath.Join(src, "big.bin"), randomBytes(1<<20+77, 9), 0o644)
	os.WriteFile(filepath.Join(src, "sub", "a.txt"), []byte("hello over http\n"), 0o644)
	os.WriteFile(filepath.Join(src, "sub", "deeper", "b.txt"), []byte("deeper\n"), 0o600)
	os.Symlink("sub/a.txt", filepath.Join(src, "link"))
	runCmd(t, "casync", "make", "--store="+filepath.Join(root, "default.castr"), filepath.Join(root, "tree.caidx"), src)
	ngx := startNginx(t, root, nil)
	index := ngx.URL + "/tree.caidx"
	list := camount(t, "list", index)
	for _, want := range []string{"big.bin", "sub/a.txt", "sub/deeper/b.txt", "link"} {
		if !strings.Contains(list, want) {
			t.Errorf("list over HTTP lacks %s:\n%s", want, list)
		}
	}
	out := filepath.Join(t.TempDir(), "out")
	camount(t, "extract", index, out)
	runCmd(t, "diff", "-r", "--no-dereference", src, out)
	if os.Geteuid() != 0 {
		return
	}
	needCmd(t, "fusermount3")
	mnt := t.TempDir()
	cmd := exec.Command(camountBin, "mount", index, mnt)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		exec.Command(camountBin, "umount", mnt).Run()
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.Contains(line, "mounted") {
		t.Fatalf("mount %s: %q %v", index, line, err)
	}
	runCmd(t, "diff", "-r", "--no-dereference", src, mnt)
}

// remoteMount runs `camount mount ARGS... MOUNTPOINT` in the background, waits
// until it is mounted and unmounts it at cleanup.
func remoteMount(t *testing.T, args ...string) string {
	t.Helper()
	needRoot(t)
	needCmd(t, "fusermount3")
	mnt := t.TempDir()
	cmd := exec.Command(camountBin, append(append([]string{"mount"}, args...), mnt)...)
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command(camountBin, "umount", mnt).Run()
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && !strings.Contains(line, "mounted") {
			err = fmt.Errorf("unexpected output %q", line)
		}
		ready <- err
		io.Copy(io.Discard, stdout)
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("mount: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("mount not ready:\n%s", stderr.String())
	}
	return mnt
}

// TestRemoteMountDiskCache reads more than the disk cache's bound through a
// FUSE mount: the cache stays within its bound all along, and a second mount
// is served what it kept without asking the server.
func TestRemoteMountDiskCache(t *testing.T) {
	im := makeRemoteImage(t, 8<<20, nil)
	cdir := filepath.Join(t.TempDir(), "cache")
	const bound = 2 << 20
	mnt := remoteMount(t, "--cache", cdir, "--cache-max-size", strconv.Itoa(bound), "--cache-size", "0", im.ngx.URL+"/img.caibx")
	f, err := os.Open(filepath.Join(mnt, "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	maxSeen := int64(0)
	for off := 0; off < len(im.src); off += len(buf) {
		n, err := f.ReadAt(buf, int64(off))
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], im.src[off:off+n]) {
			t.Fatalf("WRONG DATA at %d", off)
		}
		_, sz := dirSize(t, cdir)
		maxSeen = max(maxSeen, sz)
	}
	// Sampling a directory tree while files come and go is not atomic (a
	// file removed after its directory was listed and one added to a
	// directory listed later are both counted): live samples get slack,
	// the quiet directory none.
	if maxSeen > bound+bound/4 || maxSeen < bound/2 {
		t.Fatalf("cache reached %d bytes while reading %d, bound %d", maxSeen, len(im.src), bound)
	}
	// The tail of the image is in the cache: a new mount reads it without the server.
	f.Close()
	exec.Command(camountBin, "umount", mnt).Run()
	if _, n := dirSize(t, cdir); n > bound {
		t.Fatalf("cache holds %d bytes, bound %d", n, bound)
	}
	mnt2 := remoteMount(t, "--cache", cdir, "--cache-max-size", strconv.Itoa(bound), "--cache-size", "0", im.ngx.URL+"/img.caibx")
	before := im.ngx.chunkRequests(t)
	tail := make([]byte, 256<<10)
	g, err := os.Open(filepath.Join(mnt2, "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	off := len(im.src) - len(tail)
	if _, err := g.ReadAt(tail, int64(off)); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(tail, im.src[off:]) {
		t.Fatal("WRONG DATA from the cache")
	}
	if n := im.ngx.chunkRequests(t) - before; n != 0 {
		t.Errorf("reading the cached tail fetched %d chunks", n)
	}
}

// TestRemoteProxyEnv reaches a store through the proxy named by $HTTP_PROXY
// (the host name is only ever resolved by the proxy, which is on 127.0.0.1).
func TestRemoteProxyEnv(t *testing.T) {
	im := makeRemoteImage(t, 1<<20, nil)
	px := startFaultProxy(t, im.ngx.URL)
	out := filepath.Join(t.TempDir(), "out")
	cmd := exec.Command(camountBin, "extract", "--http-retries", "0", "http://camount-test.invalid/img.caibx", out)
	cmd.Env = append(os.Environ(), "HTTP_PROXY="+px.URL, "http_proxy="+px.URL, "NO_PROXY=", "no_proxy=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	checkFile(t, out, im.src)
	if px.requests.Load() < 2 {
		t.Fatalf("%d requests went through the proxy", px.requests.Load())
	}
}
