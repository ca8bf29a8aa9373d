package integration

// Issue 13 item 6: sftp stores against a real OpenSSH server started by
// the test on loopback (sshd -D with a test host key, a test user key and
// a known_hosts in temp dirs), reached with the user's keys, agent and
// known_hosts as ssh(1) would.

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sshServer is a running sshd serving sftp on 127.0.0.1.
type sshServer struct {
	Port    int
	HostPub string // "ssh-ed25519 AAAA…" of the host key
	Home    string // a HOME with .ssh/id_ed25519 and .ssh/known_hosts for the server
	Root    string // a directory to put stores in
	cmd     *exec.Cmd
	log     *bytes.Buffer
}

func sshKeygen(t testing.TB, path string) string {
	t.Helper()
	runCmd(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "camount-test", "-f", path)
	b, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	return f[0] + " " + f[1]
}

// startSSHD runs OpenSSH's sshd in the foreground on a free loopback port
// and sets HOME (for camount children) to a home with the client key and a
// known_hosts that holds the server's key.
func startSSHD(t *testing.T) *sshServer {
	t.Helper()
	needRoot(t) // sshd needs root for its privilege separation
	needCmd(t, "ssh-keygen")
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		t.Skip("/usr/sbin/sshd is not installed (scripts/deps.sh installs openssh-server)")
	}
	dir := t.TempDir()
	s := &sshServer{Home: t.TempDir(), Root: t.TempDir(), log: &bytes.Buffer{}, Port: freePort(t)}
	s.HostPub = sshKeygen(t, filepath.Join(dir, "hostkey"))
	os.Mkdir(filepath.Join(s.Home, ".ssh"), 0o700)
	userPub := sshKeygen(t, filepath.Join(s.Home, ".ssh", "id_ed25519"))
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), []byte(userPub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.writeKnownHosts(t, s.Port, s.HostPub)
	conf := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile %s
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
LogLevel ERROR
`, s.Port, filepath.Join(dir, "hostkey"), filepath.Join(dir, "sshd.pid"), filepath.Join(dir, "authorized_keys"))
	cfg := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll("/run/sshd", 0o755) // its privilege separation directory
	s.cmd = exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", cfg)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	})
	waitListening(t, s.Port, func() string { return s.log.String() })
	t.Setenv("HOME", s.Home)
	t.Setenv("SSH_AUTH_SOCK", "")
	return s
}

// writeKnownHosts records key for 127.0.0.1:port in the client's known_hosts.
func (s *sshServer) writeKnownHosts(t testing.TB, port int, key string) {
	t.Helper()
	line := fmt.Sprintf("[127.0.0.1]:%d %s\n", port, key)
	if err := os.WriteFile(filepath.Join(s.Home, ".ssh", "known_hosts"), []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (s *sshServer) url(port int, path string) string {
	return "sftp://127.0.0.1:" + strconv.Itoa(port) + path
}

// tcpCutter forwards TCP connections to an upstream and can cut them all.
type tcpCutter struct {
	Port     int
	accepted atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
	l        net.Listener
}

func startTCPCutter(t *testing.T, upstream string) *tcpCutter {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &tcpCutter{Port: l.Addr().(*net.TCPAddr).Port, l: l}
	go func() {
		for {
			down, err := l.Accept()
			if err != nil {
				return
			}
			c.accepted.Add(1)
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				down.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, down, up)
			c.mu.Unlock()
			go func() { io.Copy(up, down); up.Close() }()
			go func() { io.Copy(down, up); down.Close() }()
		}
	}()
	t.Cleanup(func() { l.Close(); c.cut() })
	return c
}

// cut closes every connection forwarded so far; it returns how many.
func (c *tcpCutter) cut() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.conns) / 2
	for _, cn := range c.conns {
		cn.Close()
	}
	c.conns = nil
	return n
}

func TestSFTPStore(t *testing.T) {
	s := startSSHD(t)
	im := makeS3Image(t, 4<<20, 71)
	storeDir := filepath.Join(s.Root, "store")
	store := s.url(s.Port, storeDir)
	// make writes the chunks over sftp.
	index := filepath.Join(t.TempDir(), "img.caibx")
	camount(t, "make", "--store="+store, index, im.raw)
	x := readIndex(t, index)
	for _, c := range x.Chunks {
		if _, err := os.Stat(chunkFile(storeDir, c)); err != nil {
			t.Fatalf("chunk %s not written over sftp: %v", c.ID, err)
		}
	}
	t.Run("extract", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out")
		camount(t, "extract", "--store="+store, index, out)
		checkFile(t, out, im.src)
		// casync reads what camount wrote over sftp.
		if _, err := exec.LookPath("casync"); err == nil {
			out2 := filepath.Join(t.TempDir(), "out2")
			runCmd(t, "casync", "extract", "--store="+storeDir, index, out2)
			checkFile(t, out2, im.src)
		}
	})
	t.Run("push-and-index-url", func(t *testing.T) {
		pub := s.url(s.Port, filepath.Join(s.Root, "pub")+"/")
		out := camount(t, "push", "--from="+im.store, "--to="+pub+"default.castr", "--index-to="+pub, im.index)
		if !strings.Contains(out, "published "+pub+"img.caibx") {
			t.Errorf("push: %q", out)
		}
		o := filepath.Join(t.TempDir(), "out")
		camount(t, "extract", pub+"img.caibx", o) // store derived: default.castr beside it
		checkFile(t, o, im.src)
		mnt := remoteMount(t, pub+"img.caibx")
		checkFile(t, filepath.Join(mnt, "img"), im.src)
		// Back from sftp to a local store.
		d := t.TempDir()
		camount(t, "push", "--from="+pub+"default.castr", "--to="+filepath.Join(d, "s"), "--index-to="+d, pub+"img.caibx")
		camount(t, "extract", "--store="+filepath.Join(d, "s"), filepath.Join(d, "img.caibx"), filepath.Join(d, "out"))
		checkFile(t, filepath.Join(d, "out"), im.src)
	})
	t.Run("agent", func(t *testing.T) {
		needCmd(t, "ssh-agent", "ssh-add")
		sock := filepath.Join(t.TempDir(), "agent.sock")
		agent := exec.Command("ssh-agent", "-D", "-a", sock)
		if err := agent.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { agent.Process.Kill(); agent.Wait() }()
		for i := 0; i < 100; i++ {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		add := exec.Command("ssh-add", filepath.Join(s.Home, ".ssh", "id_ed25519"))
		add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
		if out, err := add.CombinedOutput(); err != nil {
			t.Fatalf("ssh-add: %v %s", err, out)
		}
		// A home with known_hosts but no key file: only the agent has it.
		home := t.TempDir()
		os.Mkdir(filepath.Join(home, ".ssh"), 0o700)
		kh, _ := os.ReadFile(filepath.Join(s.Home, ".ssh", "known_hosts"))
		os.WriteFile(filepath.Join(home, ".ssh", "known_hosts"), kh, 0o600)
		d := t.TempDir()
		if _, stderr, code := camountIn(t, d, []string{"HOME=" + home, "SSH_AUTH_SOCK=" + sock}, "extract", "--store="+store, index, "out"); code != 0 {
			t.Fatalf("extract with the agent's key: %s", stderr)
		}
		checkFile(t, filepath.Join(d, "out"), im.src)
		if _, stderr, code := camountIn(t, d, []string{"HOME=" + home}, "extract", "--store="+store, index, "out2"); code == 0 || !strings.Contains(stderr, "authentication as") {
			t.Fatalf("extract without any key: exit %d, %s", code, stderr)
		}
	})
	t.Run("killed-connection-mid-read", func(t *testing.T) {
		cut := startTCPCutter(t, fmt.Sprintf("127.0.0.1:%d", s.Port))
		s.writeKnownHosts(t, cut.Port, s.HostPub)
		defer s.writeKnownHosts(t, s.Port, s.HostPub)
		mnt := remoteMount(t, "--store="+s.url(cut.Port, storeDir), "--cache-size", "0", "--http-timeout", "5s", index)
		f, err := os.Open(filepath.Join(mnt, "img"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		half := len(im.src) / 2
		buf := make([]byte, half)
		if _, err := io.ReadFull(f, buf); err != nil || !bytes.Equal(buf, im.src[:half]) {
			t.Fatalf("first half: %v (or WRONG DATA)", err)
		}
		if n := cut.cut(); n == 0 {
			t.Fatal("no connection to cut")
		}
		before := cut.accepted.Load()
		rest, err := io.ReadAll(f)
		if err != nil || !bytes.Equal(rest, im.src[half:]) {
			t.Fatalf("after the connection was killed: %v (or WRONG DATA)", err)
		}
		if cut.accepted.Load() == before {
			t.Fatal("the second half was read without connecting again: the test cut nothing in use")
		}
	})
	t.Run("wrong-host-key", func(t *testing.T) {
		other := sshKeygen(t, filepath.Join(t.TempDir(), "otherkey"))
		s.writeKnownHosts(t, s.Port, other)
		defer s.writeKnownHosts(t, s.Port, s.HostPub)
		d := t.TempDir()
		_, stderr, code := camountIn(t, d, nil, "extract", "--store="+store, index, "out")
		if code == 0 || !strings.Contains(stderr, "does not match known_hosts") {
			t.Fatalf("wrong host key: exit %d, %s", code, stderr)
		}
		if _, err := os.Stat(filepath.Join(d, "out")); err == nil {
			t.Error("output written although the host was refused")
		}
		// An unknown host is refused too.
		s.writeKnownHosts(t, s.Port+1, s.HostPub)
		_, stderr, code = camountIn(t, d, nil, "make", "--store="+store+"-2", filepath.Join(d, "m.caibx"), im.raw)
		if code == 0 || !strings.Contains(stderr, "not in known_hosts") {
			t.Fatalf("unknown host: exit %d, %s", code, stderr)
		}
	})
	t.Run("missing-chunk", func(t *testing.T) {
		c := x.Chunks[len(x.Chunks)/2]
		if err := os.Remove(chunkFile(storeDir, c)); err != nil {
			t.Fatal(err)
		}
		_, err := tryCamount("extract", "--store="+store, index, filepath.Join(t.TempDir(), "out"))
		if err == nil || !strings.Contains(err.Error(), "not found") || !strings.Contains(err.Error(), c.ID.String()) {
			t.Fatalf("missing chunk: %v", err)
		}
		// make again repairs the store: it writes only the missing chunk.
		before := objectMtimes(t, storeDir)
		camount(t, "make", "--store="+store, index, im.raw)
		after := objectMtimes(t, storeDir)
		if len(after) != len(before)+1 {
			t.Fatalf("make wrote %d chunks, want the 1 missing", len(after)-len(before))
		}
	})
	t.Run("gc", func(t *testing.T) {
		extra := filepath.Join(storeDir, "ffff", strings.Repeat("f", 64)+".cacnk")
		os.MkdirAll(filepath.Dir(extra), 0o755)
		os.WriteFile(extra, []byte("x"), 0o644)
		old := time.Now().Add(-2 * time.Hour)
		os.Chtimes(extra, old, old)
		out := camount(t, "gc", "--store="+store, index)
		if !strings.Contains(out, "removed 1 chunks") {
			t.Errorf("gc: %q", out)
		}
		if _, err := os.Stat(extra); err == nil {
			t.Error("gc kept the unreferenced chunk")
		}
		o := filepath.Join(t.TempDir(), "out")
		camount(t, "extract", "--store="+store, index, o)
		checkFile(t, o, im.src)
	})
}
