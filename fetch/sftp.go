package fetch

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/location"
)

// sftp stores use github.com/pkg/sftp over golang.org/x/crypto/ssh: the
// well-kept SFTP client and SSH implementation of Go, with the user's SSH
// agent, keys and known_hosts as ssh(1) uses them.

// SFTPOptions configure sftp stores and index locations. Zero values are
// the documented defaults.
type SFTPOptions struct {
	// HTTP gives the per-request timeout and the retry policy (Timeout,
	// Retries, Backoff, MaxBackoff, Log), as for HTTP stores.
	HTTP HTTPOptions
	// KnownHosts are known_hosts files; nil means ~/.ssh/known_hosts and
	// /etc/ssh/ssh_known_hosts (those that exist). A host not in them, or
	// presenting another key, is refused.
	KnownHosts []string
	// Identities are private key files (unencrypted; keys with a passphrase
	// belong in the agent); nil means ~/.ssh/id_ed25519, id_ecdsa and id_rsa
	// (those that exist). The agent at $SSH_AUTH_SOCK is asked first.
	Identities []string
	// Conns is the number of SSH connections used at once (requests are
	// pipelined on each); 0 means 4.
	Conns int
}

// SFTPLocation is a parsed sftp://[USER@]HOST[:PORT]/PATH.
type SFTPLocation struct {
	User string // "" means the current user
	Host string // host[:port], port 22 when absent
	Path string // absolute path on the server
	raw  string
}

func (l SFTPLocation) String() string { return location.Redact(l.raw) } // no password shown

// IsSFTPURL reports whether s is an sftp:// URL.
func IsSFTPURL(s string) bool { return strings.HasPrefix(s, "sftp://") }

// ParseSFTPLocation parses sftp://[USER@]HOST[:PORT]/PATH. The path is
// absolute on the server (sftp://h/srv/store is /srv/store), as desync
// reads it; a password in the URL is refused (use keys or the agent).
func ParseSFTPLocation(s string) (SFTPLocation, error) {
	u, err := url.Parse(s)
	if err != nil {
		return SFTPLocation{}, fmt.Errorf("sftp location %s: %w", s, err)
	}
	if u.Scheme != "sftp" {
		return SFTPLocation{}, fmt.Errorf("sftp location %s: scheme %q is not sftp", s, u.Scheme)
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			return SFTPLocation{}, fmt.Errorf("sftp location %s: a password does not belong in the URL (use an SSH key or the agent)", u.Redacted())
		}
	}
	if u.Host == "" {
		return SFTPLocation{}, fmt.Errorf("sftp location %s: no host", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return SFTPLocation{}, fmt.Errorf("sftp location %s: no query or fragment expected", s)
	}
	p := path.Clean("/" + u.Path)
	if p == "/" {
		return SFTPLocation{}, fmt.Errorf("sftp location %s: no path (want sftp://[USER@]HOST[:PORT]/PATH)", s)
	}
	l := SFTPLocation{Host: u.Host, Path: p, raw: s}
	if u.User != nil {
		l.User = u.User.Username()
	}
	if u.Port() == "" {
		l.Host = net.JoinHostPort(u.Hostname(), "22")
	}
	return l, nil
}

// SFTPError is a failure that asking again will not fix: the host key is
// unknown or has changed, authentication failed, permission is denied.
type SFTPError struct {
	Location string
	Msg      string
	Err      error
}

func (e *SFTPError) Error() string {
	return fmt.Sprintf("sftp %s: %s", location.Redact(e.Location), e.Msg)
}

func (e *SFTPError) Unwrap() error { return e.Err }

// sftpConn is one SSH connection with its SFTP session.
type sftpConn struct {
	ssh  *ssh.Client
	sftp *sftp.Client
}

func (c *sftpConn) close() {
	c.sftp.Close()
	c.ssh.Close()
}

// sftpClient holds a small pool of connections to one server, dialled on
// first use and again after a connection fails.
type sftpClient struct {
	loc    SFTPLocation
	config *ssh.ClientConfig
	r      *retrier
	next   atomic.Uint32

	mu    sync.Mutex
	conns []*sftpConn // guarded by mu; nil slots are dialled on demand
	dirs  sync.Map    // directories known to exist
}

func newSFTPClient(loc SFTPLocation, o SFTPOptions) (*sftpClient, error) {
	name := loc.User
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		} else {
			name = os.Getenv("USER")
		}
	}
	home, _ := os.UserHomeDir()
	known := o.KnownHosts
	if known == nil {
		for _, f := range []string{filepath.Join(home, ".ssh", "known_hosts"), "/etc/ssh/ssh_known_hosts"} {
			if _, err := os.Stat(f); err == nil {
				known = append(known, f)
			}
		}
	}
	if len(known) == 0 {
		return nil, &SFTPError{Location: loc.raw, Msg: "no known_hosts file (~/.ssh/known_hosts): the server's host key cannot be checked; connect once with ssh(1) to record it"}
	}
	hostKeys, err := knownhosts.New(known...)
	if err != nil {
		return nil, &SFTPError{Location: loc.raw, Msg: fmt.Sprintf("reading known_hosts: %v", err), Err: err}
	}
	ids := o.Identities
	if ids == nil {
		for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			ids = append(ids, filepath.Join(home, ".ssh", n))
		}
	}
	auth := ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
		var signers []ssh.Signer
		if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
			if c, err := net.Dial("unix", sock); err == nil {
				if s, err := agent.NewClient(c).Signers(); err == nil {
					signers = append(signers, s...)
				}
				// The signers use the agent connection when signing; it
				// is closed with the process (one per dial).
			}
		}
		for _, f := range ids {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			s, err := ssh.ParsePrivateKey(b)
			if err != nil {
				continue // a key with a passphrase: use the agent
			}
			signers = append(signers, s)
		}
		return signers, nil
	})
	n := o.Conns
	if n <= 0 {
		n = 4
	}
	c := &sftpClient{loc: loc, r: newRetrier(o.HTTP), conns: make([]*sftpConn, n)}
	c.config = &ssh.ClientConfig{
		User:              name,
		Auth:              []ssh.AuthMethod{auth},
		HostKeyCallback:   hostKeys,
		HostKeyAlgorithms: knownAlgorithms(hostKeys, loc.Host),
		Timeout:           c.r.o.timeout(),
	}
	return c, nil
}

// knownAlgorithms returns the key types known_hosts holds for host, so the
// server is asked for a key that can be checked (not one of another type,
// which would look like a changed key); nil when it holds none.
func knownAlgorithms(cb ssh.HostKeyCallback, host string) []string {
	var ke *knownhosts.KeyError
	err := cb(host, &net.TCPAddr{IP: net.IPv4zero}, probeKey{})
	if !errors.As(err, &ke) || len(ke.Want) == 0 {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	for _, k := range ke.Want {
		for _, a := range algorithmsFor(k.Key.Type()) {
			if !seen[a] {
				seen[a] = true
				algos = append(algos, a)
			}
		}
	}
	return algos
}

func algorithmsFor(keyType string) []string {
	if keyType == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{keyType}
}

// probeKey is a public key no known_hosts line holds: checking it yields
// the KeyError that lists the keys known for a host.
type probeKey struct{}

func (probeKey) Type() string                        { return "camount-probe" }
func (probeKey) Marshal() []byte                     { return []byte("camount-probe") }
func (probeKey) Verify([]byte, *ssh.Signature) error { return errors.New("probe key") }

// conn returns connection slot i, dialling it if needed.
func (c *sftpClient) conn(ctx context.Context, i int) (*sftpConn, error) {
	c.mu.Lock()
	if cn := c.conns[i]; cn != nil {
		c.mu.Unlock()
		return cn, nil
	}
	c.mu.Unlock()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", c.loc.Host)
	if err != nil {
		return nil, &NetworkError{URL: c.loc.raw, Attempts: 1, Msg: fmt.Sprintf("sftp %s: %v", c.loc, err)}
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl) // the handshake; cleared below
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, c.loc.Host, c.config)
	if err != nil {
		nc.Close()
		return nil, c.handshakeError(err)
	}
	nc.SetDeadline(time.Time{})
	sshc := ssh.NewClient(sc, chans, reqs)
	sc2, err := sftp.NewClient(sshc, sftp.UseConcurrentReads(true), sftp.UseConcurrentWrites(true))
	if err != nil {
		sshc.Close()
		return nil, &SFTPError{Location: c.loc.raw, Msg: fmt.Sprintf("starting the sftp subsystem: %v", err), Err: err}
	}
	cn := &sftpConn{ssh: sshc, sftp: sc2}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.conns[i]; old != nil { // dialled meanwhile by another request
		cn.close()
		return old, nil
	}
	c.conns[i] = cn
	return cn, nil
}

// handshakeError explains a failed SSH handshake; host key and
// authentication failures are permanent.
func (c *sftpClient) handshakeError(err error) error {
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(err, &ke) && len(ke.Want) > 0:
		return &SFTPError{Location: c.loc.raw, Err: err, Msg: fmt.Sprintf("the host key of %s does not match known_hosts (line %d of %s): refusing to connect (someone may be intercepting the connection, or the host key changed)", c.loc.Host, ke.Want[0].Line, ke.Want[0].Filename)}
	case errors.As(err, &ke):
		return &SFTPError{Location: c.loc.raw, Err: err, Msg: fmt.Sprintf("%s is not in known_hosts: refusing to connect to an unknown host (connect once with ssh(1) to record its key)", c.loc.Host)}
	case errors.As(err, &re):
		return &SFTPError{Location: c.loc.raw, Err: err, Msg: fmt.Sprintf("the host key of %s is revoked in known_hosts", c.loc.Host)}
	case strings.Contains(err.Error(), "unable to authenticate"):
		return &SFTPError{Location: c.loc.raw, Err: err, Msg: fmt.Sprintf("authentication as %s failed (no key from $SSH_AUTH_SOCK or ~/.ssh/id_* was accepted): %v", c.config.User, err)}
	}
	return &NetworkError{URL: c.loc.raw, Attempts: 1, Msg: fmt.Sprintf("sftp %s: SSH handshake: %v", c.loc, err)}
}

// drop closes slot i if it still holds cn, so the next request dials anew.
func (c *sftpClient) drop(i int, cn *sftpConn) {
	c.mu.Lock()
	if c.conns[i] == cn {
		c.conns[i] = nil
	}
	c.mu.Unlock()
	cn.close()
}

// close closes every connection.
func (c *sftpClient) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, cn := range c.conns {
		if cn != nil {
			cn.close()
			c.conns[i] = nil
		}
	}
}

// classify maps an sftp error to ErrNotFound, a permanent *SFTPError or a
// transient error (the connection is then dropped).
func (c *sftpClient) classify(op, p string, err error) (error, bool) {
	var se *SFTPError
	var ne *NetworkError
	switch {
	case err == nil:
		return nil, false
	case errors.As(err, &se), errors.As(err, &ne):
		return err, false
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("sftp %s: %s %s: %w", c.loc, op, p, ErrNotFound), false
	case errors.Is(err, fs.ErrPermission):
		return &SFTPError{Location: c.loc.raw, Err: err, Msg: fmt.Sprintf("%s %s: permission denied", op, p)}, false
	}
	var st *sftp.StatusError
	if errors.As(err, &st) {
		// The server answered: the connection is fine; failures such as
		// "no space" or "op unsupported" will not pass by asking again.
		return &SFTPError{Location: c.loc.raw, Err: err, Msg: fmt.Sprintf("%s %s: %v", op, p, err)}, false
	}
	return &NetworkError{URL: c.loc.raw, Attempts: 1, Msg: fmt.Sprintf("sftp %s: %s %s: %v", c.loc, op, p, err)}, true
}

func sftpTransient(err error) bool {
	var se *SFTPError
	return !errors.As(err, &se) && !errors.Is(err, ErrNotFound)
}

// call runs fn on a pooled connection with the retry policy. pkg/sftp
// takes no context, so an attempt that outlives its deadline (a stalled
// or killed server) is ended by closing its connection.
func (c *sftpClient) call(ctx context.Context, op, p string, fn func(*sftp.Client) error) error {
	return c.r.do(ctx, "sftp "+op+" "+c.loc.raw+" "+p, sftpTransient, func(ctx context.Context) error {
		i := int(c.next.Add(1)) % len(c.conns)
		cn, err := c.conn(ctx, i)
		if err != nil {
			return err
		}
		done := make(chan error, 1)
		go func() { done <- fn(cn.sftp) }()
		select {
		case err := <-done:
			err, broken := c.classify(op, p, err)
			if broken {
				c.drop(i, cn)
			}
			return err
		case <-ctx.Done():
			c.drop(i, cn) // fn returns once its connection is closed
			<-done
			return ctx.Err()
		}
	})
}

// readFile reads a whole file of at most limit bytes.
func (c *sftpClient) readFile(ctx context.Context, p string, limit int64) ([]byte, error) {
	var b []byte
	err := c.call(ctx, "read", p, func(s *sftp.Client) error {
		f, err := s.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		if st.Size() > limit {
			return &SFTPError{Location: c.loc.raw, Msg: fmt.Sprintf("%s: %d bytes is more than %d", p, st.Size(), limit)}
		}
		buf := bytes.NewBuffer(make([]byte, 0, st.Size()+1))
		if _, err := buf.ReadFrom(io.LimitReader(f, limit+1)); err != nil {
			return err
		}
		if int64(buf.Len()) != st.Size() {
			return fmt.Errorf("%s: read %d bytes of %d: %w", p, buf.Len(), st.Size(), io.ErrUnexpectedEOF)
		}
		b = buf.Bytes()
		return nil
	})
	return b, err
}

// writeFile replaces p atomically: a temporary file beside it, renamed
// into place (posix-rename@openssh.com, else a plain rename).
func (c *sftpClient) writeFile(ctx context.Context, p string, data []byte, mode os.FileMode) error {
	dir := path.Dir(p)
	return c.call(ctx, "write", p, func(s *sftp.Client) error {
		if _, ok := c.dirs.Load(dir); !ok {
			if err := s.MkdirAll(dir); err != nil {
				return err
			}
			c.dirs.Store(dir, true)
		}
		var rnd [8]byte
		rand.Read(rnd[:])
		tmp := p + "." + hex.EncodeToString(rnd[:]) + ".tmp"
		f, err := s.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
		if err != nil {
			return err
		}
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			s.Chmod(tmp, mode)
			if err = s.PosixRename(tmp, p); err != nil {
				var st *sftp.StatusError
				if errors.As(err, &st) {
					err = s.Rename(tmp, p)
				}
			}
		}
		if err != nil {
			s.Remove(tmp)
		}
		return err
	})
}

// SFTPStore is a .castr store in a directory reached over SFTP, in
// casync's layout (PATH/<first 4 hex>/<hex>.cacnk). Reads and writes
// retry transient failures (a dropped connection is dialled again); an
// unknown or changed host key, failed authentication or denied permission
// is reported at once.
type SFTPStore struct {
	c *sftpClient
}

// NewSFTPStore returns a store for sftp://[USER@]HOST[:PORT]/PATH. It
// reads known_hosts now and connects on first use.
func NewSFTPStore(location string, o SFTPOptions) (*SFTPStore, error) {
	loc, err := ParseSFTPLocation(location)
	if err != nil {
		return nil, err
	}
	c, err := newSFTPClient(loc, o)
	if err != nil {
		return nil, err
	}
	return &SFTPStore{c: c}, nil
}

func (s *SFTPStore) String() string { return s.c.loc.raw }

func (s *SFTPStore) path(id chunker.ID) string { return s.c.loc.Path + "/" + chunkName(id) }

// Get implements Store.
func (s *SFTPStore) Get(ctx context.Context, id chunker.ID) ([]byte, error) {
	return s.c.readFile(ctx, s.path(id), MaxChunkSize)
}

// HasChunk implements WriteStore. As for a local store, a chunk found has
// its modification time refreshed (one SETSTAT request, instead of a
// STAT), so that a gc running meanwhile keeps a chunk a make reuses;
// where the time cannot be set, it is a plain check.
func (s *SFTPStore) HasChunk(ctx context.Context, id chunker.ID) (bool, error) {
	p := s.path(id)
	err := s.c.call(ctx, "stat", p, func(c *sftp.Client) error {
		now := time.Now()
		err := c.Chtimes(p, now, now)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			_, err = c.Stat(p)
		}
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// StoreChunk implements WriteStore.
func (s *SFTPStore) StoreChunk(ctx context.Context, id chunker.ID, stored []byte) error {
	return s.c.writeFile(ctx, s.path(id), stored, 0o444)
}

// ListChunks implements ListStore.
func (s *SFTPStore) ListChunks(ctx context.Context, fn func(ChunkInfo) error) error {
	var dirs []os.FileInfo
	err := s.c.call(ctx, "list", s.c.loc.Path, func(c *sftp.Client) error {
		var err error
		dirs, err = c.ReadDir(s.c.loc.Path)
		return err
	})
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if !d.IsDir() || len(d.Name()) != 4 {
			continue
		}
		var ents []os.FileInfo
		p := s.c.loc.Path + "/" + d.Name()
		err := s.c.call(ctx, "list", p, func(c *sftp.Client) error {
			var err error
			ents, err = c.ReadDir(p)
			return err
		})
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		for _, e := range ents {
			id, ok := chunkIDFromName(d.Name() + "/" + e.Name())
			if !ok || !e.Mode().IsRegular() {
				continue
			}
			if err := fn(ChunkInfo{ID: id, Size: e.Size(), ModTime: e.ModTime()}); err != nil {
				return err
			}
		}
	}
	return nil
}

// RemoveChunk implements ListStore.
func (s *SFTPStore) RemoveChunk(ctx context.Context, id chunker.ID) error {
	err := s.c.call(ctx, "remove", s.path(id), func(c *sftp.Client) error {
		return c.Remove(s.path(id))
	})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// Close closes the store's connections.
func (s *SFTPStore) Close() error { s.c.close(); return nil }

// Retries implements RetryCounter.
func (s *SFTPStore) Retries() int64 { return s.c.r.retries.Load() }

// RefetchCorrupt implements Refetcher.
func (s *SFTPStore) RefetchCorrupt() int { return 1 }

// SFTPFile is one file (an index) at an sftp:// URL.
type SFTPFile struct {
	c *sftpClient
}

// NewSFTPFile returns the file at sftp://[USER@]HOST[:PORT]/PATH.
func NewSFTPFile(location string, o SFTPOptions) (*SFTPFile, error) {
	loc, err := ParseSFTPLocation(location)
	if err != nil {
		return nil, err
	}
	o.Conns = 1
	c, err := newSFTPClient(loc, o)
	if err != nil {
		return nil, err
	}
	return &SFTPFile{c: c}, nil
}

func (f *SFTPFile) String() string { return f.c.loc.raw }

// Read returns the file's bytes (at most limit).
func (f *SFTPFile) Read(ctx context.Context, limit int64) ([]byte, error) {
	defer f.c.close()
	return f.c.readFile(ctx, f.c.loc.Path, limit)
}

// readChanged implements RemoteFile: the file is read whole (no tag).
func (f *SFTPFile) readChanged(ctx context.Context, limit int64, _ string) ([]byte, string, bool, error) {
	b, err := f.Read(ctx, limit)
	return b, "", false, err
}

// Write replaces the file atomically.
func (f *SFTPFile) Write(ctx context.Context, data []byte) error {
	defer f.c.close()
	return f.c.writeFile(ctx, f.c.loc.Path, data, 0o644)
}
