package integration

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/camount/camount/chunker"
)

// nbdFixture is a GPT disk image with an ext4 partition and zero regions,
// chunked with the real casync, plus a small image whose size is not a
// multiple of 512.
type nbdFixture struct {
	dir       string
	srcDir    string // files inside the ext4 partition
	disk      string // raw disk image
	diskIdx   string // its .caibx
	small     string // raw small image (1 MiB + 1000 bytes)
	smallIdx  string
	store     string
	partStart int64 // ext4 partition offset and size
	partSize  int64
}

const (
	nbdDiskSize    = 64 << 20
	nbdPatternOff  = 44 << 20 // 1 MiB of 0xab after the partition
	nbdZeroOff     = 48 << 20 // [48 MiB, 64 MiB - 17 KiB) is zeros (then the GPT backup)
	nbdSmallSize   = 1<<20 + 1000
	nbdSmallPadded = 1<<20 + 1024
)

// nbdFixtureFor builds the fixture in a test temp dir (about a second).
func nbdFixtureFor(t *testing.T) *nbdFixture {
	t.Helper()
	needCmd(t, "casync", "sfdisk", "mkfs.ext4")
	f, err := makeNBDFixture(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func makeNBDFixture(dir string) (*nbdFixture, error) {
	f := &nbdFixture{dir: dir, srcDir: filepath.Join(dir, "src"), disk: filepath.Join(dir, "disk.img"),
		diskIdx: filepath.Join(dir, "disk.caibx"), small: filepath.Join(dir, "small.img"),
		smallIdx: filepath.Join(dir, "small.caibx"), store: filepath.Join(dir, "store"),
		partStart: 1 << 20, partSize: 40 << 20}
	run := func(name string, args ...string) error {
		if _, err := tryCmd(name, args...); err != nil {
			return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
		}
		return nil
	}
	os.MkdirAll(filepath.Join(f.srcDir, "sub", "deeper"), 0o755)
	files := map[string][]byte{
		"random.bin":           randomBytes(3<<20+4321, 11),
		"sub/text.txt":         []byte(strings.Repeat("camount serves casync images over NBD\n", 5000)),
		"sub/deeper/small.bin": randomBytes(777, 12),
		"zeros.bin":            make([]byte, 2<<20),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(f.srcDir, name), data, 0o644); err != nil {
			return nil, err
		}
	}
	part := filepath.Join(dir, "part.img")
	if err := run("truncate", "-s", strconv.FormatInt(f.partSize, 10), part); err != nil {
		return nil, err
	}
	if err := run("mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", f.srcDir, part); err != nil {
		return nil, err
	}
	if err := run("truncate", "-s", strconv.Itoa(nbdDiskSize), f.disk); err != nil {
		return nil, err
	}
	sf := exec.Command("sfdisk", "-q", f.disk)
	sf.Stdin = strings.NewReader(fmt.Sprintf("label: gpt\nstart=%d, size=%d, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=camount\n", f.partStart/512, f.partSize/512))
	if out, err := sf.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("sfdisk: %v: %s", err, out)
	}
	disk, err := os.OpenFile(f.disk, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	pdata, err := os.ReadFile(part)
	if err != nil {
		return nil, err
	}
	disk.WriteAt(pdata, f.partStart)
	disk.WriteAt(bytes.Repeat([]byte{0xab}, 1<<20), nbdPatternOff)
	if err := disk.Close(); err != nil {
		return nil, err
	}
	os.Remove(part)
	if err := os.WriteFile(f.small, randomBytes(nbdSmallSize, 13), 0o644); err != nil {
		return nil, err
	}
	if err := run("casync", "make", "--store="+f.store, f.diskIdx, f.disk); err != nil {
		return nil, err
	}
	if err := run("casync", "make", "--store="+f.store, f.smallIdx, f.small); err != nil {
		return nil, err
	}
	return f, nil
}

// nbdServer is a running `camount nbd`.
type nbdServer struct {
	cmd    *exec.Cmd
	uris   []string // one per index, as printed
	sock   string   // unix socket path, if any
	stderr *nbdLog
	done   chan error
}

type nbdLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *nbdLog) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *nbdLog) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// startNBD runs camount nbd on transport "unix" (a socket in a temp dir)
// or "tcp" (loopback, a free port) and waits for its URIs.
func startNBD(t *testing.T, transport string, extra []string, indexes ...string) *nbdServer {
	t.Helper()
	s := &nbdServer{stderr: &nbdLog{}, done: make(chan error, 1)}
	listen := "tcp://127.0.0.1:0"
	if transport == "unix" {
		s.sock = filepath.Join(t.TempDir(), "nbd.sock")
		listen = "unix://" + s.sock
	}
	args := append([]string{"nbd", "--listen=" + listen}, extra...)
	args = append(args, indexes...)
	s.cmd = exec.Command(camountBin, args...)
	s.cmd.Stderr = s.stderr
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	uris := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			uris <- sc.Text()
		}
		close(uris)
		s.done <- s.cmd.Wait()
	}()
	t.Cleanup(func() { s.stop(t) })
	timeout := time.After(20 * time.Second)
	for len(s.uris) < len(indexes) {
		select {
		case u, ok := <-uris:
			if !ok {
				t.Fatalf("camount nbd exited before printing its URIs: %s", s.stderr)
			}
			s.uris = append(s.uris, u)
		case <-timeout:
			t.Fatalf("camount nbd printed no URIs in 20 s: %s", s.stderr)
		}
	}
	go func() {
		for range uris {
		}
	}()
	return s
}

// stop sends SIGTERM and checks for a clean exit.
func (s *nbdServer) stop(t *testing.T) {
	t.Helper()
	if s.cmd.ProcessState != nil || s.done == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		s.done = nil
		if err != nil {
			t.Errorf("camount nbd did not exit cleanly on SIGTERM: %v\n%s", err, s.stderr)
		}
	case <-time.After(15 * time.Second):
		s.cmd.Process.Kill()
		t.Errorf("camount nbd did not stop within 15 s of SIGTERM\n%s", s.stderr)
	}
	if s.sock != "" {
		if _, err := os.Stat(s.sock); err == nil {
			t.Errorf("socket %s left behind", s.sock)
		}
	}
}

// alive fails the test if the server has exited.
func (s *nbdServer) alive(t *testing.T) {
	t.Helper()
	select {
	case err := <-s.done:
		s.done = nil
		t.Fatalf("camount nbd exited: %v\n%s", err, s.stderr)
	default:
	}
}

// listURI is the URI without an export name (for nbdinfo --list).
func listURI(uri string) string {
	if i := strings.Index(uri, ":///"); i >= 0 { // nbd+unix:///NAME?socket=
		rest := uri[i+4:]
		q := ""
		if j := strings.Index(rest, "?"); j >= 0 {
			q = rest[j:]
		}
		return uri[:i] + ":///" + q
	}
	u := strings.TrimPrefix(uri, "nbd://")
	return "nbd://" + u[:strings.Index(u, "/")] + "/"
}

func TestNBDClients(t *testing.T) {
	needCmd(t, "nbdinfo", "nbdcopy", "nbdsh", "qemu-img", "qemu-io")
	f := nbdFixtureFor(t)
	for _, transport := range []string{"unix", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			s := startNBD(t, transport, []string{"--store=" + f.store}, f.diskIdx, f.smallIdx)
			disk, small := s.uris[0], s.uris[1]
			if transport == "unix" {
				if want := "nbd+unix:///disk?socket=" + s.sock; disk != want {
					t.Errorf("URI %q, want %q", disk, want)
				}
			} else if !strings.HasPrefix(disk, "nbd://127.0.0.1:") || !strings.HasSuffix(disk, "/disk") {
				t.Errorf("URI %q, want nbd://127.0.0.1:PORT/disk", disk)
			}

			t.Run("nbdinfo-json", func(t *testing.T) {
				var info struct {
					Protocol   string `json:"protocol"`
					Structured bool   `json:"structured"`
					Exports    []struct {
						Name     string   `json:"export-name"`
						Desc     string   `json:"description"`
						Contexts []string `json:"contexts"`
						RO       bool     `json:"is_read_only"`
						Cache    bool     `json:"can_cache"`
						Multi    bool     `json:"can_multi_conn"`
						Flush    bool     `json:"can_flush"`
						Trim     bool     `json:"can_trim"`
						DF       bool     `json:"can_df"`
						Min      int64    `json:"block_size_minimum"`
						Pref     int64    `json:"block_size_preferred"`
						Max      int64    `json:"block_size_maximum"`
						Size     int64    `json:"export-size"`
					} `json:"exports"`
				}
				out := runCmd(t, "nbdinfo", "--json", disk)
				if err := json.Unmarshal([]byte(out), &info); err != nil {
					t.Fatalf("nbdinfo --json: %v\n%s", err, out)
				}
				if info.Protocol != "newstyle-fixed" || !info.Structured || len(info.Exports) != 1 {
					t.Fatalf("nbdinfo: %s", out)
				}
				e := info.Exports[0]
				if e.Name != "disk" || !e.RO || !e.Cache || !e.Multi || !e.Flush || e.Trim || !e.DF ||
					e.Size != nbdDiskSize || e.Min != 512 || e.Pref < 4096 || e.Max != 32<<20 ||
					len(e.Contexts) != 1 || e.Contexts[0] != "base:allocation" || !strings.Contains(e.Desc, "disk.caibx") {
					t.Errorf("nbdinfo --json: %s", out)
				}
				// the small image is padded to a multiple of 512
				out = runCmd(t, "nbdinfo", "--size", small)
				if strings.TrimSpace(out) != strconv.Itoa(nbdSmallPadded) {
					t.Errorf("small export size %s, want %d", out, nbdSmallPadded)
				}
			})

			t.Run("nbdinfo-list", func(t *testing.T) {
				out := runCmd(t, "nbdinfo", "--list", listURI(disk))
				if !strings.Contains(out, `export="disk"`) || !strings.Contains(out, `export="small"`) {
					t.Errorf("nbdinfo --list: %s", out)
				}
			})

			t.Run("nbdinfo-map", func(t *testing.T) {
				out := runCmd(t, "nbdinfo", "--map", disk)
				var end int64
				zeroAt := map[int64]bool{}
				for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
					fs := strings.Fields(line)
					if len(fs) < 3 {
						t.Fatalf("map line %q", line)
					}
					off, _ := strconv.ParseInt(fs[0], 10, 64)
					n, _ := strconv.ParseInt(fs[1], 10, 64)
					typ, _ := strconv.Atoi(fs[2])
					if off != end || n <= 0 || off%512 != 0 || n%512 != 0 {
						t.Errorf("map extent %q does not continue at %d in 512-byte units", line, end)
					}
					for _, p := range []int64{0, nbdPatternOff, nbdZeroOff + 4<<20, nbdDiskSize - 512} {
						if p >= off && p < off+n {
							zeroAt[p] = typ == 3
						}
					}
					end = off + n
				}
				if end != nbdDiskSize {
					t.Errorf("map covers %d bytes, want %d", end, nbdDiskSize)
				}
				if zeroAt[0] || zeroAt[nbdPatternOff] || !zeroAt[nbdZeroOff+4<<20] || zeroAt[nbdDiskSize-512] {
					t.Errorf("holes %v (want data at 0, the pattern and the GPT backup at the end, hole,zero in the zero region):\n%s", zeroAt, out)
				}
			})

			t.Run("nbdcopy", func(t *testing.T) {
				dir := t.TempDir()
				for i, args := range [][]string{{disk}, {"-C", "4", disk}, {"--request-size=1048576", "-R", "1", disk}, {"--no-extents", "--request-size=2097152", disk}} {
					out := filepath.Join(dir, fmt.Sprintf("copy%d.img", i))
					runCmd(t, "nbdcopy", append(args, out)...)
					runCmd(t, "cmp", f.disk, out)
				}
				out := filepath.Join(dir, "small.img")
				runCmd(t, "nbdcopy", small, out)
				got, _ := os.ReadFile(out)
				want, _ := os.ReadFile(f.small)
				if len(got) != nbdSmallPadded || !bytes.Equal(got[:nbdSmallSize], want) || !bytes.Equal(got[nbdSmallSize:], make([]byte, 24)) {
					t.Errorf("small image copy: %d bytes, or content differs", len(got))
				}
			})

			t.Run("qemu-img", func(t *testing.T) {
				out := runCmd(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", f.disk, disk)
				if !strings.Contains(out, "Images are identical") {
					t.Errorf("qemu-img compare: %s", out)
				}
				out = runCmd(t, "qemu-img", "info", disk)
				if !strings.Contains(out, "file format: raw") || !strings.Contains(out, "virtual size: 64 MiB (67108864 bytes)") {
					t.Errorf("qemu-img info: %s", out)
				}
				out = runCmd(t, "qemu-img", "map", "--output=json", "-f", "raw", disk)
				if !strings.Contains(out, `"zero": true`) || !strings.Contains(out, `"data": true`) {
					t.Errorf("qemu-img map shows no zero or no data extents: %s", out)
				}
			})

			t.Run("qemu-io", func(t *testing.T) {
				out := runCmd(t, "qemu-io", "-r", "-f", "raw",
					"-c", fmt.Sprintf("read -P 0xab %d 1M", nbdPatternOff),
					"-c", fmt.Sprintf("read -P 0 %d 8M", nbdZeroOff),
					"-c", fmt.Sprintf("read -P 0xab %d 512", nbdPatternOff+(1<<20)-512),
					disk)
				if strings.Contains(out, "failed") || strings.Count(out, "read ") != 3 {
					t.Errorf("qemu-io: %s", out)
				}
				// a wrong pattern is noticed (the check is real)
				out, _ = tryCmd("qemu-io", "-r", "-f", "raw", "-c", fmt.Sprintf("read -P 0xac %d 4k", nbdPatternOff), disk)
				if !strings.Contains(out, "Pattern verification failed") {
					t.Errorf("qemu-io with a wrong pattern: %s", out)
				}
			})

			t.Run("nbdsh", func(t *testing.T) {
				script := fmt.Sprintf(`
import errno, nbd
def expect(what, fn, want):
    try:
        fn()
    except nbd.Error as e:
        # python libnbd reports errno by name ("EINVAL")
        assert e.errno in (want, errno.errorcode[want]), "%%s: errno %%s (%%s), want %%s" %% (what, e.errno, e.string, errno.errorcode[want])
        return
    raise AssertionError(what + ": no error")
h.set_strict_mode(0)  # let the server, not libnbd, judge the requests
size = h.get_size()
assert size == %d, size
expect("read past the end", lambda: h.pread(1024, size - 512), errno.EINVAL)
expect("read beyond the end", lambda: h.pread(512, size + 4096), errno.EINVAL)
expect("unaligned read", lambda: h.pread(100, 3), errno.EINVAL)
expect("write", lambda: h.pwrite(b"x" * 4096, 0), errno.EPERM)
expect("trim", lambda: h.trim(4096, 0), errno.EPERM)
expect("write zeroes", lambda: h.zero(4096, 0), errno.EPERM)
expect("cache past the end", lambda: h.cache(4096, size), errno.EINVAL)
h.cache(8 << 20, 0)
h.flush()
with open(%q, "rb") as f:
    f.seek(%d)
    want = f.read(1 << 20)
    f.seek(size - 512)
    tail = f.read(512)
assert h.pread(1 << 20, %d) == want, "partition start differs"
assert h.pread(512, size - 512) == tail, "last sector differs"
assert h.pread(4096, %d) == bytes(4096), "zero region is not zero"
print("ok")
`, nbdDiskSize, f.disk, f.partStart, f.partStart, nbdZeroOff)
				cmd := nbdsh("-u", disk, "-c", script)
				out, err := cmd.CombinedOutput()
				if err != nil || strings.TrimSpace(string(out)) != "ok" {
					t.Errorf("nbdsh: %v: %s", err, out)
				}
			})

			t.Run("concurrent-clients", func(t *testing.T) {
				want := sha256File(t, f.disk)
				var wg sync.WaitGroup
				errs := make(chan error, 16)
				for i := 0; i < 16; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						cmd := exec.Command("nbdcopy", "--synchronous", disk, "-")
						var stderr bytes.Buffer
						cmd.Stderr = &stderr
						out, err := cmd.StdoutPipe()
						if err != nil {
							errs <- err
							return
						}
						if err := cmd.Start(); err != nil {
							errs <- err
							return
						}
						h := sha256.New()
						io.Copy(h, out)
						if err := cmd.Wait(); err != nil {
							errs <- fmt.Errorf("nbdcopy: %v: %s", err, stderr.String())
							return
						}
						if got := fmt.Sprintf("%x", h.Sum(nil)); got != want {
							errs <- fmt.Errorf("client got sha256 %s, want %s", got, want)
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
			})

			t.Run("vanishing-client", func(t *testing.T) {
				// a raw client sends big reads and hangs up without reading
				for i := 0; i < 3; i++ {
					nbdRawVanish(t, disk, s.sock)
				}
				// an nbdcopy killed mid-transfer
				cmd := exec.Command("nbdcopy", "-C", "4", disk, "null:")
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				time.Sleep(30 * time.Millisecond)
				cmd.Process.Kill()
				cmd.Wait()
				s.alive(t)
				out := runCmd(t, "nbdinfo", "--size", disk)
				if strings.TrimSpace(out) != strconv.Itoa(nbdDiskSize) {
					t.Errorf("after vanishing clients: %s", out)
				}
				runCmd(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", f.disk, disk)
			})
			s.alive(t)
		})
	}
}

// nbdsh runs nbdsh with the system python3 first on PATH: nbdsh runs
// "python3 -m nbd", and the nbd module (python3-libnbd) is installed for
// the system python only.
func nbdsh(args ...string) *exec.Cmd {
	cmd := exec.Command("nbdsh", args...)
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/bin:"+os.Getenv("PATH"))
	return cmd
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	fh, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	h := sha256.New()
	io.Copy(h, fh)
	return fmt.Sprintf("%x", h.Sum(nil))
}

// nbdRawVanish connects with a hand-made client (EXPORT_NAME), sends 32
// reads of 1 MiB and closes the connection without reading the replies.
func nbdRawVanish(t *testing.T, uri, sock string) {
	t.Helper()
	var c net.Conn
	var err error
	name := "disk"
	if sock != "" {
		c, err = net.Dial("unix", sock)
	} else {
		hp := strings.TrimPrefix(uri, "nbd://")
		hp, name, _ = strings.Cut(hp, "/")
		c, err = net.Dial("tcp", hp)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	greet := make([]byte, 18)
	if _, err := io.ReadFull(c, greet); err != nil || string(greet[:8]) != "NBDMAGIC" {
		t.Fatalf("greeting %q: %v", greet, err)
	}
	b := binary.BigEndian.AppendUint32(nil, 3) // fixed newstyle, no zeroes
	b = append(b, "IHAVEOPT"...)
	b = binary.BigEndian.AppendUint32(b, 1) // EXPORT_NAME
	b = binary.BigEndian.AppendUint32(b, uint32(len(name)))
	b = append(b, name...)
	c.Write(b)
	info := make([]byte, 10)
	if _, err := io.ReadFull(c, info); err != nil || binary.BigEndian.Uint64(info) != nbdDiskSize {
		t.Fatalf("EXPORT_NAME reply % x: %v", info, err)
	}
	var reqs []byte
	for i := 0; i < 32; i++ {
		reqs = binary.BigEndian.AppendUint32(reqs, 0x25609513)
		reqs = binary.BigEndian.AppendUint16(reqs, 0)
		reqs = binary.BigEndian.AppendUint16(reqs, 0) // READ
		reqs = binary.BigEndian.AppendUint64(reqs, uint64(i))
		reqs = binary.BigEndian.AppendUint64(reqs, uint64(i)<<20)
		reqs = binary.BigEndian.AppendUint32(reqs, 1<<20)
	}
	c.Write(reqs)
	io.ReadFull(c, make([]byte, 100)) // a little of the first reply, then hang up
}

// TestNBDFuseMount exposes the export through nbdfuse, reads the partition
// table with fdisk, and mounts the ext4 partition read-only through a loop
// device at the partition's offset.
func TestNBDFuseMount(t *testing.T) {
	needCmd(t, "nbdfuse", "fdisk", "losetup", "mount")
	needRoot(t)
	needFUSE(t)
	f := nbdFixtureFor(t)
	s := startNBD(t, "unix", []string{"--store=" + f.store}, f.diskIdx)
	dir := t.TempDir()
	fuseDir := filepath.Join(dir, "fuse")
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(fuseDir, 0o755)
	os.Mkdir(mnt, 0o755)
	nf := exec.Command("nbdfuse", "-r", filepath.Join(fuseDir, "disk"), s.uris[0])
	var nfErr bytes.Buffer
	nf.Stderr = &nfErr
	if err := nf.Start(); err != nil {
		t.Fatal(err)
	}
	nfDone := make(chan error, 1)
	go func() { nfDone <- nf.Wait() }()
	t.Cleanup(func() {
		exec.Command("fusermount3", "-u", fuseDir).Run()
		select {
		case <-nfDone:
		case <-time.After(10 * time.Second):
			nf.Process.Kill()
		}
	})
	dev := filepath.Join(fuseDir, "disk")
	deadline := time.Now().Add(15 * time.Second)
	for {
		if st, err := os.Stat(dev); err == nil && st.Size() == nbdDiskSize {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nbdfuse did not expose %s: %s", dev, nfErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	out := runCmd(t, "fdisk", "-l", dev)
	if !strings.Contains(out, "Disklabel type: gpt") || !strings.Contains(out, fmt.Sprintf("%s1 %7d", dev, f.partStart/512)) && !strings.Contains(out, "Linux filesystem") {
		t.Errorf("fdisk -l: %s", out)
	}
	loop := strings.TrimSpace(runCmd(t, "losetup", "-r", "-f", "--show", "-o", strconv.FormatInt(f.partStart, 10),
		"--sizelimit", strconv.FormatInt(f.partSize, 10), dev))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	runCmd(t, "mount", "-t", "ext4", "-o", "ro", loop, mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	for _, name := range []string{"random.bin", "sub/text.txt", "sub/deeper/small.bin", "zeros.bin"} {
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := os.ReadFile(filepath.Join(f.srcDir, name))
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the source (%d vs %d bytes)", name, len(got), len(want))
		}
	}
	if err := os.WriteFile(filepath.Join(mnt, "new"), []byte("x"), 0o644); err == nil {
		t.Error("writing to the read-only mount succeeded")
	}
	runCmd(t, "umount", mnt)
	runCmd(t, "losetup", "-d", loop)
	s.alive(t)
}

// TestNBDMaxConnections: clients beyond --max-connections are refused with
// a clear message; the slot frees when a client leaves.
func TestNBDMaxConnections(t *testing.T) {
	needCmd(t, "nbdsh", "nbdinfo")
	f := nbdFixtureFor(t)
	s := startNBD(t, "unix", []string{"--store=" + f.store, "--max-connections=1"}, f.smallIdx)
	hold := nbdsh("-u", s.uris[0], "-c", "import sys; print('up', flush=True); sys.stdin.read()")
	stdin, _ := hold.StdinPipe()
	stdout, _ := hold.StdoutPipe()
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "up" {
		t.Fatalf("holding client: %q", line)
	}
	out, err := tryCmd("nbdinfo", "--size", s.uris[0])
	if err == nil || !strings.Contains(err.Error(), "policy") {
		t.Errorf("second client: %q, %v", out, err)
	}
	if !strings.Contains(s.stderr.String(), "too many connections") {
		t.Errorf("the server did not log the refusal: %s", s.stderr)
	}
	stdin.Close()
	hold.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := tryCmd("nbdinfo", "--size", s.uris[0])
		if err == nil && strings.TrimSpace(out) == strconv.Itoa(nbdSmallPadded) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNBDBadInput: clear errors, no hang.
func TestNBDBadInput(t *testing.T) {
	f := nbdFixtureFor(t)
	dir := t.TempDir()
	twin := filepath.Join(dir, "disk.caibx") // same export name as f.diskIdx
	idx, _ := os.ReadFile(f.diskIdx)
	os.WriteFile(twin, idx, 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"nbd"}, "want at least one"},
		{[]string{"nbd", "--listen=bogus", f.diskIdx}, "--listen"},
		{[]string{"nbd", "--listen=tcp://127.0.0.1:99999", f.diskIdx}, "bad port"},
		{[]string{"nbd", "--store=" + f.store, filepath.Join(dir, "missing.caibx")}, "missing.caibx"},
		{[]string{"nbd", "--store=" + f.store, f.disk}, ".caibx"},
		{[]string{"nbd", "--store=" + f.store, "--name=a", "--name=b", f.diskIdx}, "--name"},
		{[]string{"nbd", "--store=" + f.store, "--listen=unix://" + filepath.Join(dir, "s"), f.diskIdx, twin}, "export name"},
	} {
		_, err := tryCamount(c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("camount %s: %v, want an error mentioning %q", strings.Join(c.args, " "), err, c.want)
		}
	}
	// a garbage index
	bad := filepath.Join(dir, "bad.caibx")
	os.WriteFile(bad, []byte("not an index"), 0o644)
	if _, err := tryCamount("nbd", "--store="+f.store, bad); err == nil || !strings.Contains(err.Error(), "bad.caibx") {
		t.Errorf("garbage index: %v", err)
	}
}

// TestNBDMissingAndCorruptChunks: a chunk missing from the store, or
// corrupt in it, fails the reads that need it with EIO, with structured
// and simple replies; everything else is still served.
func TestNBDMissingAndCorruptChunks(t *testing.T) {
	needCmd(t, "nbdsh", "qemu-io", "cp")
	f := nbdFixtureFor(t)
	store := filepath.Join(t.TempDir(), "store")
	runCmd(t, "cp", "-a", f.store, store)
	x := readIndex(t, f.diskIdx)
	mc := x.Chunks[x.Find(nbdPatternOff)]
	// the first data (not all-zero) chunk in the partition
	var cc chunker.Chunk
	for i := x.Find(f.partStart + 1<<20); i < len(x.Chunks); i++ {
		c := x.Chunks[i]
		if c.ID != x.Digest().Sum(make([]byte, c.Size)) && c.ID != mc.ID {
			cc = c
			break
		}
	}
	if cc.Size == 0 {
		t.Fatal("fixture: no data chunk in the partition")
	}
	if err := os.Remove(chunkFile(store, mc)); err != nil {
		t.Fatal(err)
	}
	damageChunk(t, store, cc)

	s := startNBD(t, "unix", []string{"--store=" + store}, f.diskIdx)
	uri := s.uris[0]
	script := fmt.Sprintf(`
import errno, nbd, sys
def expect_eio(what, fn):
    try:
        fn()
    except nbd.Error as e:
        assert e.errno in (errno.EIO, "EIO"), "%%s: %%s" %% (what, e.string)
        return
    raise AssertionError(what + ": no error")
for structured in (True, False):
    h = nbd.NBD()
    h.set_request_structured_replies(structured)
    h.connect_uri(%q)
    assert h.get_structured_replies_negotiated() == structured
    expect_eio("missing chunk", lambda: h.pread(4096, %d))
    expect_eio("corrupt chunk", lambda: h.pread(4096, %d))
    expect_eio("read spanning a missing chunk", lambda: h.pread(1 << 20, %d))
    assert h.pread(4096, 0)[510:512] == b"\x55\xaa", "MBR signature"
    assert h.pread(4096, %d) == bytes(4096)
    h.shutdown()
print("ok")
`, uri, (int64(mc.Start)+511)&^511, (int64(cc.Start)+511)&^511, int64(mc.Start)&^(1<<20-1), nbdZeroOff)
	out, err := nbdsh("-c", script).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Errorf("nbdsh: %v: %s", err, out)
	}
	out2, _ := tryCmd("qemu-io", "-r", "-f", "raw", "-c", fmt.Sprintf("read %d 4k", mc.Start&^511), uri)
	if !strings.Contains(out2, "Input/output error") {
		t.Errorf("qemu-io read of a missing chunk: %s", out2)
	}
	s.alive(t)
	if log := s.stderr.String(); !strings.Contains(log, mc.ID.String()) || !strings.Contains(log, "corrupt") {
		t.Errorf("the server log does not name the missing chunk and the corruption:\n%s", log)
	}
}

// TestNBDRemoteStore serves an image whose chunks come from nginx: CACHE
// prefetches the chunks of its range before any read, a full copy equals
// the image, and each chunk is fetched once (then served from memory).
func TestNBDRemoteStore(t *testing.T) {
	needCmd(t, "nginx", "nbdsh", "nbdcopy")
	f := nbdFixtureFor(t)
	ng := startNginx(t, f.dir, nil)
	fh, err := os.Open(f.diskIdx)
	if err != nil {
		t.Fatal(err)
	}
	x, err := chunker.ReadIndex(fh)
	fh.Close()
	if err != nil {
		t.Fatal(err)
	}
	s := startNBD(t, "tcp", []string{"--store=" + ng.URL + "/store"}, f.diskIdx)
	if n := ng.chunkRequests(t); n != 0 {
		t.Fatalf("%d chunk requests before any client", n)
	}
	pc := x.Chunks[x.Find(nbdPatternOff)]
	out, err := nbdsh("-u", s.uris[0], "-c", fmt.Sprintf("h.cache(%d, %d); print('ok')", 1<<20, nbdPatternOff)).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("nbdsh cache: %v: %s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		log, _ := os.ReadFile(ng.AccessLog)
		if strings.Contains(string(log), pc.ID.String()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CACHE did not fetch chunk %s; access log:\n%s", pc.ID, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	distinct := map[chunker.ID]bool{}
	for _, c := range x.Chunks {
		if c.ID != x.Digest().Sum(make([]byte, c.Size)) {
			distinct[c.ID] = true
		}
	}
	dir := t.TempDir()
	for i := 0; i < 2; i++ {
		out := filepath.Join(dir, fmt.Sprintf("copy%d.img", i))
		runCmd(t, "nbdcopy", s.uris[0], out)
		runCmd(t, "cmp", f.disk, out)
		if n := ng.chunkRequests(t); n > len(distinct) {
			t.Errorf("after copy %d: %d chunk requests for %d distinct data chunks", i+1, n, len(distinct))
		}
	}
	s.alive(t)
}

// TestNBDNotifyReady: with $NOTIFY_SOCKET set, camount nbd sends READY=1
// once it is listening, and the export is then served.
func TestNBDNotifyReady(t *testing.T) {
	needCmd(t, "nbdinfo")
	f := nbdFixtureFor(t)
	dir := t.TempDir()
	notify := filepath.Join(dir, "notify")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	sock := filepath.Join(dir, "nbd.sock")
	cmd := exec.Command(camountBin, "nbd", "--listen=unix://"+sock, "--store="+f.store, f.smallIdx)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify)
	var stderr nbdLog
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("exit: %v\n%s", err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Error("no exit after SIGTERM")
		}
	}()
	pc.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 4096)
	n, _, err := pc.ReadFromUnix(buf)
	if err != nil {
		t.Fatalf("no notification: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(string(buf[:n]), "READY=1") {
		t.Errorf("notification %q", buf[:n])
	}
	out := runCmd(t, "nbdinfo", "--size", "nbd+unix:///small?socket="+sock)
	if strings.TrimSpace(out) != strconv.Itoa(nbdSmallPadded) {
		t.Errorf("size %s", out)
	}
}
