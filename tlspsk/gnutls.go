//go:build cgo && gnutls

package tlspsk

/*
#cgo pkg-config: gnutls
#include <stdlib.h>
#include "gnutls.h"
*/
import "C"

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"runtime/cgo"
	"sync"
	"time"
	"unsafe"
)

// Available tells whether this build has TLS-PSK.
const Available = true

// Keys are the server's credentials: a psktool key file loaded by GnuTLS.
type Keys struct {
	cred C.gnutls_psk_server_credentials_t
}

// Load checks a psktool key file (USERNAME:HEXKEY lines) and loads it.
// GnuTLS reads the file again at each handshake, so keys can be added or
// revoked without a restart, as with nbdkit.
func Load(path string) (*Keys, error) {
	if _, err := checkKeys(path); err != nil {
		return nil, err
	}
	k := &Keys{}
	if r := C.gnutls_psk_allocate_server_credentials(&k.cred); r < 0 {
		return nil, fmt.Errorf("TLS-PSK: %s", gnutlsError(r))
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	if r := C.gnutls_psk_set_server_credentials_file(k.cred, cpath); r < 0 {
		C.gnutls_psk_free_server_credentials(k.cred)
		return nil, fmt.Errorf("TLS-PSK key file %s: %s", path, gnutlsError(r))
	}
	return k, nil
}

func gnutlsError(r C.int) string {
	return C.GoString(C.gnutls_strerror(r))
}

// conn is a TLS session over a Go connection.
type conn struct {
	nc      net.Conn
	h       cgo.Handle
	s       C.gnutls_session_t
	rmu     sync.Mutex // one reader at a time (GnuTLS allows one reader and one writer at once)
	wmu     sync.Mutex
	rerr    error // the transport's last error, for the caller (under rmu, or the handshake)
	werr    error // under wmu
	once    sync.Once
	closing chan struct{}
}

// Handshake runs the server side of a TLS-PSK handshake on nc and returns
// the secured connection and the client's username.
func (k *Keys) Handshake(nc net.Conn) (net.Conn, string, error) {
	c := &conn{nc: nc, closing: make(chan struct{})}
	c.h = cgo.NewHandle(c)
	if r := C.camount_psk_session(&c.s, k.cred, C.uintptr_t(c.h)); r < 0 {
		c.h.Delete()
		return nil, "", fmt.Errorf("TLS-PSK session: %s", gnutlsError(r))
	}
	for {
		r := C.gnutls_handshake(c.s)
		if r >= 0 {
			break
		}
		if C.gnutls_error_is_fatal(r) == 0 {
			continue
		}
		err := fmt.Errorf("TLS-PSK handshake: %s", gnutlsError(r))
		if e := firstErr(c.rerr, c.werr); e != nil {
			err = fmt.Errorf("TLS-PSK handshake: %w", e)
		}
		C.gnutls_deinit(c.s)
		c.h.Delete()
		return nil, "", err
	}
	user := C.GoString(C.gnutls_psk_server_get_username(c.s))
	runtime.KeepAlive(k)
	return c, user, nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

//export camountTLSPSKPull
func camountTLSPSKPull(h C.uintptr_t, buf unsafe.Pointer, n C.size_t) C.ssize_t {
	c := cgo.Handle(h).Value().(*conn)
	got, err := c.nc.Read(unsafe.Slice((*byte)(buf), int(n)))
	if got > 0 {
		return C.ssize_t(got)
	}
	if err == io.EOF {
		return 0
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	c.rerr = err
	return -1
}

//export camountTLSPSKPush
func camountTLSPSKPush(h C.uintptr_t, buf unsafe.Pointer, n C.size_t) C.ssize_t {
	c := cgo.Handle(h).Value().(*conn)
	put, err := c.nc.Write(unsafe.Slice((*byte)(buf), int(n)))
	if err != nil && put == 0 {
		c.werr = err
		return -1
	}
	return C.ssize_t(put)
}

func (c *conn) isClosed() bool {
	select {
	case <-c.closing:
		return true
	default:
		return false
	}
}

func (c *conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.isClosed() {
		return 0, net.ErrClosed
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		c.rerr = nil
		r := C.gnutls_record_recv(c.s, unsafe.Pointer(&p[0]), C.size_t(len(p)))
		switch {
		case r > 0:
			return int(r), nil
		case r == 0:
			return 0, io.EOF
		case r == C.GNUTLS_E_AGAIN || r == C.GNUTLS_E_INTERRUPTED:
			continue
		case c.rerr != nil:
			return 0, c.rerr
		case r == C.GNUTLS_E_PREMATURE_TERMINATION:
			return 0, io.ErrUnexpectedEOF
		default:
			return 0, fmt.Errorf("TLS-PSK: %s", gnutlsError(C.int(r)))
		}
	}
}

func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.isClosed() {
		return 0, net.ErrClosed
	}
	done := 0
	for done < len(p) {
		c.werr = nil
		r := C.gnutls_record_send(c.s, unsafe.Pointer(&p[done]), C.size_t(len(p)-done))
		switch {
		case r >= 0:
			done += int(r)
		case r == C.GNUTLS_E_AGAIN || r == C.GNUTLS_E_INTERRUPTED:
		case c.werr != nil:
			return done, c.werr
		default:
			return done, fmt.Errorf("TLS-PSK: %s", gnutlsError(C.int(r)))
		}
	}
	return done, nil
}

// Close sends TLS's close_notify (for up to a second), closes the socket,
// which ends a Read blocked in it, and frees the session once no Read or
// Write is inside GnuTLS.
func (c *conn) Close() error {
	var err error
	c.once.Do(func() {
		// A Write blocked on a client that does not read ends too.
		c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		c.wmu.Lock()
		close(c.closing)
		C.gnutls_bye(c.s, C.GNUTLS_SHUT_WR)
		c.wmu.Unlock()
		err = c.nc.Close()
		c.rmu.Lock()
		c.wmu.Lock()
		C.gnutls_deinit(c.s)
		c.h.Delete()
		c.wmu.Unlock()
		c.rmu.Unlock()
	})
	return err
}

func (c *conn) LocalAddr() net.Addr                { return c.nc.LocalAddr() }
func (c *conn) RemoteAddr() net.Addr               { return c.nc.RemoteAddr() }
func (c *conn) SetDeadline(t time.Time) error      { return c.nc.SetDeadline(t) }
func (c *conn) SetReadDeadline(t time.Time) error  { return c.nc.SetReadDeadline(t) }
func (c *conn) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }
