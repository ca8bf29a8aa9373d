package blockdev

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// startTLS answers NBD_OPT_STARTTLS: an ACK, then the TLS handshake on
// the same socket; option haggling goes on inside TLS. What was
// negotiated in the clear (structured replies, metadata contexts) is
// forgotten, so that nothing a man in the middle may have injected
// survives the upgrade.
func (h *handshake) startTLS(opt uint32, data []byte) (*session, bool, error) {
	switch {
	case !h.s.opt.TLSEnabled():
		return nil, false, h.replyErr(opt, repErrPolicy, "TLS is not enabled on this server (camount nbd --tls=on or --tls=require)")
	case len(data) != 0:
		return nil, false, h.replyErr(opt, repErrInvalid, "STARTTLS takes no data")
	case h.tls:
		return nil, false, h.replyErr(opt, repErrInvalid, "TLS is already running on this connection")
	case h.br.Buffered() != 0:
		// The client must wait for our reply before the TLS handshake.
		return nil, true, errors.New("nbd handshake: client sent data after STARTTLS before the reply")
	}
	if err := h.reply(opt, repAck, nil); err != nil {
		return nil, true, err
	}
	var args []any
	if ts := h.s.opt.TLSServer; ts != nil {
		sc, user, err := ts.Handshake(h.nc)
		if err != nil {
			h.log.Warn("nbd: TLS handshake failed", "err", err)
			return nil, true, fmt.Errorf("nbd handshake: %w", err)
		}
		h.nc = sc
		args = []any{"psk_user", user}
	} else {
		tc := tls.Server(h.nc, h.s.opt.TLS)
		if err := tc.Handshake(); err != nil {
			// Too late to go on in the clear: the ACK was sent.
			h.log.Warn("nbd: TLS handshake failed", "err", err)
			return nil, true, fmt.Errorf("nbd handshake: TLS: %w", err)
		}
		h.nc = tc
		cs := tc.ConnectionState()
		args = []any{"version", tls.VersionName(cs.Version)}
		if len(cs.PeerCertificates) > 0 {
			args = append(args, "client", cs.PeerCertificates[0].Subject.String())
		}
	}
	h.br.Reset(h.nc)
	h.tls = true
	h.structured, h.metaAlloc, h.metaExport = false, false, ""
	h.log.Debug("nbd: TLS started", args...)
	return nil, false, nil
}

// TLSConfigFromDir loads X.509 credentials from a directory in nbdkit's
// (and qemu's) layout: server-cert.pem and server-key.pem (required), and
// ca-cert.pem (optional: when present, clients must present a certificate
// signed by it). TLS 1.2 is the minimum, as the NBD protocol asks.
func TLSConfigFromDir(dir string) (*tls.Config, error) {
	certFile := filepath.Join(dir, "server-cert.pem")
	keyFile := filepath.Join(dir, "server-key.pem")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificates in %s (want server-cert.pem and server-key.pem): %w", dir, err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	caFile := filepath.Join(dir, "ca-cert.pem")
	pem, err := os.ReadFile(caFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return cfg, nil
	case err != nil:
		return nil, fmt.Errorf("TLS CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("TLS CA certificate %s: no PEM certificate in it", caFile)
	}
	cfg.ClientCAs = pool
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	return cfg, nil
}
