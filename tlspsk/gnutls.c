//go:build cgo && gnutls

#include "gnutls.h"

#include <errno.h>

// The transport: GnuTLS reads and writes the Go connection through these
// (the Go side returns -1 on an error it keeps for the caller).
static ssize_t pull_cb(gnutls_transport_ptr_t p, void *buf, size_t n) {
	ssize_t r = camountTLSPSKPull((uintptr_t)p, buf, n);
	if (r < 0) {
		errno = EIO;
		return -1;
	}
	return r;
}

static ssize_t push_cb(gnutls_transport_ptr_t p, const void *buf, size_t n) {
	ssize_t r = camountTLSPSKPush((uintptr_t)p, (void *)buf, n);
	if (r < 0) {
		errno = EIO;
		return -1;
	}
	return r;
}

// Reads block (the Go connection's deadlines bound them), so data is
// always "available".
static int pull_timeout_cb(gnutls_transport_ptr_t p, unsigned int ms) {
	(void)p;
	(void)ms;
	return 1;
}

int camount_psk_session(gnutls_session_t *s, gnutls_psk_server_credentials_t cred, uintptr_t h) {
	int r = gnutls_init(s, GNUTLS_SERVER);
	if (r < 0)
		return r;
	// nbdkit's choice for PSK: the normal set plus the PSK key exchanges
	// (TLS 1.3 uses PSK with (EC)DHE by default).
	r = gnutls_priority_set_direct(*s, "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK", NULL);
	if (r >= 0)
		r = gnutls_credentials_set(*s, GNUTLS_CRD_PSK, cred);
	if (r < 0) {
		gnutls_deinit(*s);
		return r;
	}
	gnutls_transport_set_ptr(*s, (gnutls_transport_ptr_t)h);
	gnutls_transport_set_push_function(*s, push_cb);
	gnutls_transport_set_pull_function(*s, pull_cb);
	gnutls_transport_set_pull_timeout_function(*s, pull_timeout_cb);
	gnutls_handshake_set_timeout(*s, 0);
	return 0;
}
