package integration

// Issue 18.2: a password in a store or index URL (http://u:secret@host/…)
// appears nowhere: not in /proc/mounts, the ready line, info, stats (text
// and JSON), errors or logs.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// authServer serves dir over HTTP on 127.0.0.1 with basic auth user u,
// password secret; it records the paths asked for.
type authServer struct {
	URL  string // http://127.0.0.1:PORT, without credentials
	srv  *http.Server
	dir  string
	hits map[string]int
}

func startAuthServer(t testing.TB, dir string) *authServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fsrv := http.FileServer(http.Dir(dir))
	s := &authServer{URL: "http://" + l.Addr().String(), dir: dir}
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "u" || p != "secret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="camount"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		fsrv.ServeHTTP(w, r)
	})}
	go s.srv.Serve(l)
	t.Cleanup(func() { s.srv.Close() })
	return s
}

// withAuth is the server's URL with the credentials in it.
func (s *authServer) withAuth() string {
	return strings.Replace(s.URL, "http://", "http://u:secret@", 1)
}

// makeLocalImage makes a blob image of size random bytes with camount
// make in dir: dir/img.caibx and dir/default.castr.
func makeLocalImage(t testing.TB, dir string, size int, seed uint64) []byte {
	t.Helper()
	data := randomBytes(size, seed)
	src := filepath.Join(t.TempDir(), "img.raw")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	camount(t, "make", filepath.Join(dir, "img.caibx"), src)
	return data
}

func noSecret(t *testing.T, what, s string) {
	t.Helper()
	if strings.Contains(s, "secret") {
		t.Errorf("%s shows the password: %q", what, s)
	}
}

func TestRedactPasswords(t *testing.T) {
	dir := t.TempDir()
	data := makeLocalImage(t, dir, 1<<20, 11)
	srv := startAuthServer(t, dir)
	index := srv.withAuth() + "/img.caibx"

	// info
	out, stderr, code := camountIn(t, dir, nil, "info", index)
	if code != 0 {
		t.Fatalf("info: %s", stderr)
	}
	noSecret(t, "info", out)
	if !strings.Contains(out, "u:xxxxx@") {
		t.Errorf("info does not show the redacted URL: %q", out)
	}
	out, _, _ = camountIn(t, dir, nil, "info", "--json", index)
	noSecret(t, "info --json", out)

	// extract with stats (text and JSON) and debug logs
	stats := filepath.Join(t.TempDir(), "stats.json")
	outFile := filepath.Join(t.TempDir(), "out")
	out, stderr, code = camountIn(t, dir, nil, "extract", "--verbose", "--stats", "--stats-json="+stats, index, outFile)
	if code != 0 {
		t.Fatalf("extract: %s", stderr)
	}
	checkFile(t, outFile, data)
	noSecret(t, "extract output", out+stderr)
	if !strings.Contains(stderr, "stats:") {
		t.Errorf("no stats line: %q", stderr)
	}
	js, err := os.ReadFile(stats)
	if err != nil {
		t.Fatal(err)
	}
	noSecret(t, "stats JSON", string(js))
	if !strings.Contains(string(js), "u:xxxxx@") {
		t.Errorf("stats JSON does not name the store: %s", js)
	}

	// errors: a missing index, a missing store, a failing server
	for _, args := range [][]string{
		{"info", srv.withAuth() + "/nothere.caibx"},
		{"extract", "--store=" + srv.withAuth() + "/nostore", index, filepath.Join(t.TempDir(), "o")},
		{"extract", "--http-retries=0", "--store=http://u:secret@127.0.0.1:1/x", index, filepath.Join(t.TempDir(), "o")},
		{"extract", "--store=ftp://u:secret@h/x", index, filepath.Join(t.TempDir(), "o")},
		{"extract", "--http-retries=0", "--store=sftp://u:secret@127.0.0.1:1/x", index, filepath.Join(t.TempDir(), "o")},
		{"extract", "--http-retries=0", "--store=s3+http://u:secret@127.0.0.1:1/bucket/x", index, filepath.Join(t.TempDir(), "o")},
	} {
		_, stderr, code := camountIn(t, dir, nil, args...)
		if code == 0 {
			t.Errorf("%v succeeded", args)
		}
		noSecret(t, strings.Join(args, " ")+" error", stderr)
		if !strings.Contains(stderr, "u:xxxxx@") {
			t.Errorf("%v: the error does not name the redacted URL: %q", args, stderr)
		}
	}

	// a real mount: /proc/mounts and the ready line
	needRoot(t)
	needCmd(t, "fusermount3")
	mnt, ready := remoteMountLine(t, index)
	noSecret(t, "ready line", ready)
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, " "+mnt+" ") {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("%s not in /proc/mounts", mnt)
	}
	noSecret(t, "/proc/mounts", line)
	if !strings.HasPrefix(line, srv.URL+"/img.caibx ") {
		t.Errorf("/proc/mounts source %q, want %s/img.caibx", line, srv.URL)
	}
	checkFile(t, filepath.Join(mnt, "img"), data)
}

// remoteMountLine is remoteMount that also returns the ready line; extra
// environment may be given as leading "ENV=…" arguments via mountEnv.
func remoteMountLine(t *testing.T, args ...string) (mnt, ready string) {
	return mountWithEnv(t, nil, args...)
}

func mountWithEnv(t *testing.T, env []string, args ...string) (mnt, ready string) {
	t.Helper()
	needRoot(t)
	needCmd(t, "fusermount3")
	mnt = t.TempDir()
	cmd := exec.Command(camountBin, append(append([]string{"mount"}, args...), mnt)...)
	cmd.Env = append(os.Environ(), env...)
	stdout, _ := cmd.StdoutPipe()
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command(camountBin, "umount", mnt).Run()
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	type res struct {
		line string
		err  error
	}
	readyc := make(chan res, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && !strings.Contains(line, "mounted") {
			err = fmt.Errorf("unexpected output %q", line)
		}
		readyc <- res{line, err}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case r := <-readyc:
		if r.err != nil {
			cmd.Wait()
			t.Fatalf("mount: %v\n%s", r.err, stderr.String())
		}
		return mnt, r.line
	case <-time.After(30 * time.Second):
		t.Fatalf("mount not ready:\n%s", stderr.String())
	}
	return "", ""
}
