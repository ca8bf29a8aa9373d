package integration

// Issue 16: S3 stores, read and written, against a real S3 server started
// by the test on loopback: versitygw (posix backend), built once from the
// Go module proxy by scripts/versitygw.sh. Why versitygw: it is a real S3
// implementation (v4 signatures, ListObjectsV2, the real error codes) in a
// single Go binary from the module proxy, and its posix backend keeps each
// object as a plain file, so a test can damage an object by editing it.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/camount/camount/chunker"
)

const (
	s3Access = "camounttest"
	s3Secret = "camount-test-secret-0123456789"
)

// s3Env is the environment of the tests' camount: the test credentials,
// and no instance metadata service (on a cloud machine the real one would
// give the machine's role to a test meaning to go without credentials).
var s3Env = []string{"AWS_ACCESS_KEY_ID=" + s3Access, "AWS_SECRET_ACCESS_KEY=" + s3Secret, "AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true"}

// s3Server is a running versitygw serving root (each directory a bucket).
type s3Server struct {
	Endpoint string // 127.0.0.1:PORT
	Root     string
	cmd      *exec.Cmd
	log      *bytes.Buffer
}

// versitygwBin returns the versitygw binary, building it once (minutes,
// the first time on a machine; scripts/deps.sh does it ahead).
func versitygwBin(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("../scripts/versitygw.sh").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("building versitygw: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("building versitygw: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// startS3 starts versitygw on a free loopback port with bucket "bucket"
// and the test credentials in the environment of camount children; extra
// are more versitygw options.
func startS3(t *testing.T, extra ...string) *s3Server {
	t.Helper()
	bin := versitygwBin(t)
	for _, kv := range s3Env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "bucket"), 0o755); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	s := &s3Server{Endpoint: fmt.Sprintf("127.0.0.1:%d", port), Root: root, log: &bytes.Buffer{}}
	args := append([]string{"--access", s3Access, "--secret", s3Secret, "--port", s.Endpoint, "--keep-alive", "--quiet"}, extra...)
	s.cmd = exec.Command(bin, append(args, "posix", root)...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	})
	waitListening(t, port, func() string { return s.log.String() })
	return s
}

// url is the s3+http URL of path in bucket, path-style.
func (s *s3Server) url(bucket, path string) string {
	return "s3+http://" + s.Endpoint + "/" + bucket + "/" + path
}

// s3Image is a random image (with a zero run and a repeated block) made
// into a local store.
type s3Image struct {
	src   []byte
	raw   string // source file
	index string
	store string // local store
}

func makeS3Image(t *testing.T, size int, seed uint64) *s3Image {
	t.Helper()
	dir := t.TempDir()
	data := randomBytes(size, seed)
	copy(data[size/4:], make([]byte, size/8))
	copy(data[size/2:size/2+size/8], data[:size/8])
	im := &s3Image{src: data, raw: filepath.Join(dir, "img.raw"), index: filepath.Join(dir, "img.caibx"), store: filepath.Join(dir, "local.castr")}
	if err := os.WriteFile(im.raw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	camount(t, "make", "--store="+im.store, im.index, im.raw)
	return im
}

// objectMtimes returns the modification time of every object under dir.
func objectMtimes(t *testing.T, dir string) map[string]time.Time {
	t.Helper()
	m := map[string]time.Time{}
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && strings.HasSuffix(p, ".cacnk") {
			m[p] = info.ModTime()
		}
		return nil
	})
	return m
}

// TestS3MakeReadPush: make publishes to S3; extract, mount and nbd read
// from it byte-exact; a second make uploads nothing; push copies S3 → local
// and local → S3 with the index published last, readable from its S3 URL.
func TestS3MakeReadPush(t *testing.T) {
	s3 := startS3(t)
	dir := t.TempDir()
	data := randomBytes(5<<20, 61)
	copy(data[1<<20:], make([]byte, 512<<10))
	raw := filepath.Join(dir, "img.raw")
	os.WriteFile(raw, data, 0o644)
	index := filepath.Join(dir, "img.caibx")
	store := s3.url("bucket", "images/store?lookup=path")
	digest := camount(t, "make", "--store="+store, index, raw)
	x := readIndex(t, index)
	objs := objectMtimes(t, filepath.Join(s3.Root, "bucket", "images", "store"))
	distinct := map[chunker.ID]bool{}
	for _, c := range x.Chunks {
		distinct[c.ID] = true
		if _, ok := objs[chunkFile(filepath.Join(s3.Root, "bucket", "images", "store"), c)]; !ok {
			t.Fatalf("chunk %s is not in the bucket", c.ID)
		}
	}
	if len(objs) != len(distinct) {
		t.Errorf("bucket holds %d chunk objects, the index %d distinct chunks", len(objs), len(distinct))
	}
	// The same index as made into a directory: one pipeline, any store.
	local := filepath.Join(dir, "local.caibx")
	if d2 := camount(t, "make", "--store="+filepath.Join(dir, "local.castr"), local, raw); d2 != digest {
		t.Errorf("digest to S3 %q, to a directory %q", digest, d2)
	}
	if a, b := runCmd(t, "sha256sum", index), runCmd(t, "sha256sum", local); strings.Fields(a)[0] != strings.Fields(b)[0] {
		t.Error("the index made into S3 differs from the one made into a directory")
	}
	t.Run("remake-uploads-nothing", func(t *testing.T) {
		time.Sleep(20 * time.Millisecond) // mtimes would show a rewrite
		camount(t, "make", "--store="+store, filepath.Join(dir, "again.caibx"), raw)
		after := objectMtimes(t, filepath.Join(s3.Root, "bucket", "images", "store"))
		for p, m := range objs {
			if !after[p].Equal(m) {
				t.Fatalf("%s was uploaded again", p)
			}
		}
	})
	t.Run("extract", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out")
		camount(t, "extract", "--store="+store, index, out)
		checkFile(t, out, data)
	})
	t.Run("mount", func(t *testing.T) {
		mnt := remoteMount(t, "--store="+store, index)
		checkFile(t, filepath.Join(mnt, "img"), data)
	})
	t.Run("nbd", func(t *testing.T) {
		needCmd(t, "nbdcopy")
		s := startNBD(t, "tcp", []string{"--store=" + store}, index)
		out := filepath.Join(t.TempDir(), "copy.img")
		runCmd(t, "nbdcopy", s.uris[0], out)
		checkFile(t, out, data)
		s.alive(t)
	})
	t.Run("tree", func(t *testing.T) {
		tree := filepath.Join(t.TempDir(), "tree")
		os.MkdirAll(filepath.Join(tree, "d"), 0o755)
		os.WriteFile(filepath.Join(tree, "d", "f"), data[:300<<10], 0o644)
		os.WriteFile(filepath.Join(tree, "g"), []byte("hello"), 0o600)
		idx := filepath.Join(t.TempDir(), "tree.caidx")
		camount(t, "make", "--store="+store, idx, tree)
		out := filepath.Join(t.TempDir(), "out")
		camount(t, "extract", "--store="+store, idx, out)
		runCmd(t, "diff", "-r", tree, out)
		// The tree index on S3: list reads it there.
		camount(t, "push", "--from="+store, "--to="+store, "--index-to="+s3.url("bucket", "images/"), idx)
		if a, b := camount(t, "list", "--store="+store, idx), camount(t, "list", "--store="+store, s3.url("bucket", "images/tree.caidx")); a != b || !strings.Contains(a, "d/f") {
			t.Errorf("list of the S3 index:\n%s\nlocal:\n%s", b, a)
		}
	})
	t.Run("push-s3-to-local", func(t *testing.T) {
		d := t.TempDir()
		out := camount(t, "push", "--from="+store, "--to="+filepath.Join(d, "store"), "--index-to="+filepath.Join(d, "idx"), index)
		if !strings.Contains(out, fmt.Sprintf("%d chunks: %d copied", len(distinct), len(distinct))) {
			t.Errorf("push output: %q", out)
		}
		camount(t, "extract", "--store="+filepath.Join(d, "store"), filepath.Join(d, "idx", "img.caibx"), filepath.Join(d, "out"))
		checkFile(t, filepath.Join(d, "out"), data)
	})
	t.Run("push-local-to-s3-index-url", func(t *testing.T) {
		im := makeS3Image(t, 3<<20, 62)
		// A signature beside the index is published with it (before it).
		os.WriteFile(im.index+".minisig", []byte("untrusted comment: test\n"), 0o644)
		pub := s3.url("bucket", "pub/")
		out := camount(t, "push", "--from="+im.store, "--to="+s3.url("bucket", "pub/default.castr"), "--index-to="+pub, im.index)
		if !strings.Contains(out, "published "+pub+"img.caibx.minisig\npublished "+pub+"img.caibx") {
			t.Errorf("push output: %q", out)
		}
		if b, err := os.ReadFile(filepath.Join(s3.Root, "bucket", "pub", "img.caibx.minisig")); err != nil || string(b) != "untrusted comment: test\n" {
			t.Errorf("signature on S3: %q %v", b, err)
		}
		// The index on S3, its store derived as casync does (default.castr beside it).
		o := filepath.Join(t.TempDir(), "out")
		camount(t, "extract", s3.url("bucket", "pub/img.caibx"), o)
		checkFile(t, o, im.src)
		mnt := remoteMount(t, s3.url("bucket", "pub/img.caibx"))
		checkFile(t, filepath.Join(mnt, "img"), im.src)
		if info := camount(t, "info", s3.url("bucket", "pub/img.caibx")); !strings.Contains(info, fmt.Sprintf("%d", len(im.src))) {
			t.Errorf("info of an S3 index:\n%s", info)
		}
		// Pushing again copies nothing.
		out = camount(t, "push", "--from="+im.store, "--to="+s3.url("bucket", "pub/default.castr"), im.index)
		if !strings.Contains(out, " 0 copied") {
			t.Errorf("second push copied chunks: %q", out)
		}
	})
}

// TestS3PushResume interrupts a push and runs it again: the second run
// copies only what the first did not, the index is published only by the
// run that completes, and the result reads back byte-exact.
func TestS3PushResume(t *testing.T) {
	s3 := startS3(t)
	im := makeS3Image(t, 8<<20, 63)
	px := startFaultProxy(t, "http://"+s3.Endpoint)
	px.set("latency", -1) // slow enough to interrupt half-way
	proxied := "s3+http://" + strings.TrimPrefix(px.URL, "http://") + "/bucket/"
	storeDir := filepath.Join(s3.Root, "bucket", "r", "store")
	args := []string{"push", "--jobs=2", "--from=" + im.store, "--to=" + proxied + "r/store", "--index-to=" + proxied + "r/", im.index}
	cmd := exec.Command(camountBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(objectMtimes(t, storeDir)) < 10 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("push copied fewer than 10 chunks in 60 s: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err == nil {
		t.Fatal("the interrupted push exited 0")
	}
	time.Sleep(200 * time.Millisecond) // uploads the server was still finishing
	first := len(objectMtimes(t, storeDir))
	if _, err := os.Stat(filepath.Join(s3.Root, "bucket", "r", "img.caibx")); err == nil {
		t.Fatal("the interrupted push published the index")
	}
	x := readIndex(t, im.index)
	distinct := map[chunker.ID]bool{}
	for _, c := range x.Chunks {
		distinct[c.ID] = true
	}
	if first >= len(distinct) {
		t.Fatalf("the push was not interrupted: %d of %d chunks copied", first, len(distinct))
	}
	px.set("", 0)
	out := camount(t, args...)
	want := fmt.Sprintf("%d chunks: %d copied", len(distinct), len(distinct)-first)
	if !strings.Contains(out, want) || !strings.Contains(out, fmt.Sprintf("%d already in", first)) {
		t.Errorf("resumed push: %q, want %q and %d already present", out, want, first)
	}
	o := filepath.Join(t.TempDir(), "out")
	camount(t, "extract", s3.url("bucket", "r/img.caibx"), "--store="+s3.url("bucket", "r/store"), o)
	checkFile(t, o, im.src)
}

// TestS3Faults reads and publishes through the fault proxy: transient
// resets, 5xx, stalls and corrupt bodies are retried, never a wrong byte.
func TestS3Faults(t *testing.T) {
	s3 := startS3(t)
	im := makeS3Image(t, 3<<20, 64)
	px := startFaultProxy(t, "http://"+s3.Endpoint)
	px.setStall(5 * time.Second)
	proxied := "s3+http://" + strings.TrimPrefix(px.URL, "http://") + "/bucket/f"
	camount(t, "push", "--from="+im.store, "--to="+s3.url("bucket", "f"), im.index)
	args := []string{"--http-timeout", "700ms", "--http-retries", "3"}
	for _, tc := range []struct {
		mode  string
		times int
	}{
		{"5xx", 2}, {"reset", 2}, {"stall", 1}, {"corrupt", 1}, {"truncate", 2},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			px.set(tc.mode, tc.times)
			out := filepath.Join(t.TempDir(), "out")
			camount(t, append([]string{"extract", "--store=" + proxied, im.index, out}, args...)...)
			checkFile(t, out, im.src)
			if px.faults.Load() == 0 {
				t.Fatal("no fault was injected")
			}
		})
	}
	t.Run("make-through-5xx-and-resets", func(t *testing.T) {
		for _, mode := range []string{"5xx", "reset"} {
			px.set(mode, 1)
			idx := filepath.Join(t.TempDir(), "m.caibx")
			camount(t, "make", "--store="+proxied+"-make-"+mode, idx, im.raw)
			if px.faults.Load() == 0 {
				t.Fatalf("%s: no fault was injected", mode)
			}
			px.set("", 0)
			out := filepath.Join(t.TempDir(), "out")
			camount(t, "extract", "--store="+s3.url("bucket", "f-make-"+mode), idx, out)
			checkFile(t, out, im.src)
		}
	})
	t.Run("permanent-5xx", func(t *testing.T) {
		px.set("5xx", -1)
		_, err := tryCamount(append([]string{"extract", "--store=" + proxied, im.index, filepath.Join(t.TempDir(), "out")}, args...)...)
		if err == nil || !strings.Contains(err.Error(), "50") {
			t.Fatalf("extract under permanent 5xx: %v", err)
		}
		px.set("", 0)
	})
}

// TestS3Errors: wrong credentials, a missing bucket and a missing chunk
// each give one clear error, without a storm of retried requests.
func TestS3Errors(t *testing.T) {
	s3 := startS3(t)
	im := makeS3Image(t, 2<<20, 65)
	camount(t, "push", "--from="+im.store, "--to="+s3.url("bucket", "e"), im.index)
	px := startFaultProxy(t, "http://"+s3.Endpoint)
	proxied := "s3+http://" + strings.TrimPrefix(px.URL, "http://")
	x := readIndex(t, im.index)
	for _, tc := range []struct {
		name, store string
		env         []string
		want        string
	}{
		{"wrong-secret", proxied + "/bucket/e", []string{"AWS_SECRET_ACCESS_KEY=wrong"}, "$AWS_ACCESS_KEY_ID"},
		{"unknown-key", proxied + "/bucket/e", []string{"AWS_ACCESS_KEY_ID=nobody"}, "credentials"},
		{"anonymous", proxied + "/bucket/e", []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent"}, "no credentials were found"},
		{"missing-bucket", proxied + "/nobucket/e", nil, "the bucket does not exist (404 NoSuchBucket)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			px.requests.Store(0)
			d := t.TempDir()
			_, stderr, code := camountIn(t, d, tc.env, "extract", "--store="+tc.store, im.index, filepath.Join(d, "out"))
			if code == 0 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q, want %q", code, stderr, tc.want)
			}
			// Permanent errors are not retried: at most the requests
			// that were in flight when the first answer came.
			if n := px.requests.Load(); n > 64 || n >= int64(len(x.Chunks))*2 {
				t.Errorf("%d requests for a permanent error (%d chunks)", n, len(x.Chunks))
			}
			_, stderr, code = camountIn(t, d, tc.env, "make", "--store="+tc.store+"-made", filepath.Join(d, "m.caibx"), im.raw)
			if code == 0 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("make: exit %d, stderr %q, want %q", code, stderr, tc.want)
			}
			if _, err := os.Stat(filepath.Join(d, "m.caibx")); err == nil {
				t.Error("a failed make left an index behind")
			}
		})
	}
	t.Run("write-to-a-failover-group", func(t *testing.T) {
		d := t.TempDir()
		_, stderr, code := camountIn(t, d, nil, "make", "--store="+s3.url("bucket", "a")+"|"+s3.url("bucket", "b"), "m.caibx", im.raw)
		if code == 0 || !strings.Contains(stderr, "failover group is for reading") {
			t.Fatalf("make into a failover group: exit %d, %s", code, stderr)
		}
	})
	t.Run("missing-chunk", func(t *testing.T) {
		c := x.Chunks[len(x.Chunks)-1]
		if err := os.Remove(chunkFile(filepath.Join(s3.Root, "bucket", "e"), c)); err != nil {
			t.Fatal(err)
		}
		_, err := tryCamount("extract", "--store="+s3.url("bucket", "e"), im.index, filepath.Join(t.TempDir(), "out"))
		if err == nil || !strings.Contains(err.Error(), "not found") || !strings.Contains(err.Error(), c.ID.String()) {
			t.Fatalf("missing chunk: %v", err)
		}
		// A chain with the local store fills the gap.
		out := filepath.Join(t.TempDir(), "out")
		camount(t, "extract", "--store="+s3.url("bucket", "e"), "--store="+im.store, im.index, out)
		checkFile(t, out, im.src)
	})
}

// TestS3CorruptObject damages a chunk object in the bucket: it is asked for
// again once, then taken from the next store of the chain; alone, the
// store fails with a clear error. Never a wrong byte.
func TestS3CorruptObject(t *testing.T) {
	s3 := startS3(t)
	im := makeS3Image(t, 2<<20, 66)
	camount(t, "push", "--from="+im.store, "--to="+s3.url("bucket", "c"), im.index)
	x := readIndex(t, im.index)
	c := x.Chunks[0]
	damageChunk(t, filepath.Join(s3.Root, "bucket", "c"), c)
	px := startFaultProxy(t, "http://"+s3.Endpoint)
	proxied := "s3+http://" + strings.TrimPrefix(px.URL, "http://") + "/bucket/c"
	out := filepath.Join(t.TempDir(), "out")
	camount(t, "extract", "--store="+proxied, "--store="+im.store, im.index, out)
	checkFile(t, out, im.src)
	id := c.ID.String()
	px.mu.Lock()
	gets := px.seen["/bucket/c/"+id[:4]+"/"+id+".cacnk"]
	px.mu.Unlock()
	if gets != 2 {
		t.Errorf("the corrupt object was asked for %d times, want 2 (once more after failing verification)", gets)
	}
	_, err := tryCamount("extract", "--store="+s3.url("bucket", "c"), im.index, filepath.Join(t.TempDir(), "out2"))
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt object alone: %v", err)
	}
	// push never publishes a corrupt chunk.
	d := t.TempDir()
	_, err = tryCamount("push", "--from="+s3.url("bucket", "c"), "--to="+filepath.Join(d, "s"), im.index)
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("push of a corrupt chunk: %v", err)
	}
	if _, err := os.Stat(chunkFile(filepath.Join(d, "s"), c)); err == nil {
		t.Fatal("push published the corrupt chunk")
	}
}

// TestS3GC: camount gc on an S3 store lists it, removes exactly the chunks
// no given index references (--dry-run removes nothing), and the images
// kept still read back.
func TestS3GC(t *testing.T) {
	s3 := startS3(t)
	a := makeS3Image(t, 2<<20, 67)
	b := makeS3Image(t, 2<<20, 68)
	store := s3.url("bucket", "gc")
	camount(t, "push", "--from="+a.store, "--to="+store, a.index)
	camount(t, "push", "--from="+b.store, "--to="+store, b.index)
	dir := filepath.Join(s3.Root, "bucket", "gc")
	before := objectMtimes(t, dir)
	keep := map[string]bool{}
	for _, c := range readIndex(t, a.index).Chunks {
		keep[chunkFile(dir, c)] = true
	}
	unref := len(before) - len(keep)
	if unref <= 0 {
		t.Fatalf("%d objects, %d referenced by a", len(before), len(keep))
	}
	time.Sleep(2500 * time.Millisecond) // gc keeps chunks younger than --grace plus 2 s
	out := camount(t, "gc", "--dry-run", "--grace=0", "--store="+store, a.index)
	if n := strings.Count(out, "would remove "); n != unref+1 || len(objectMtimes(t, dir)) != len(before) {
		t.Fatalf("dry run: %d lines 'would remove' for %d unreferenced chunks, %d objects left of %d:\n%s", n, unref, len(objectMtimes(t, dir)), len(before), out)
	}
	// Recently written chunks are kept by the default grace period.
	camount(t, "gc", "--store="+store, a.index)
	if n := len(objectMtimes(t, dir)); n != len(before) {
		t.Fatalf("gc within the grace period removed %d chunks", len(before)-n)
	}
	out = camount(t, "gc", "--grace=0", "--store="+store, a.index)
	after := objectMtimes(t, dir)
	if len(after) != len(keep) {
		t.Fatalf("gc left %d objects, want the %d that a references:\n%s", len(after), len(keep), out)
	}
	for p := range after {
		if !keep[p] {
			t.Errorf("gc kept unreferenced %s", p)
		}
	}
	o := filepath.Join(t.TempDir(), "out")
	camount(t, "extract", "--store="+store, a.index, o)
	checkFile(t, o, a.src)
}
