//go:build !(cgo && gnutls)

package tlspsk

import (
	"errors"
	"net"
)

// Available tells whether this build has TLS-PSK.
const Available = false

// Keys would be a loaded key file; this build has no GnuTLS.
type Keys struct{}

// Load checks the key file, then says that this build cannot use it.
func Load(path string) (*Keys, error) {
	if _, err := checkKeys(path); err != nil {
		return nil, err
	}
	return nil, errors.New("TLS-PSK needs GnuTLS, and this camount was built without it: install libgnutls28-dev and build again with make build (it adds -tags=gnutls), or use --tls-certificates=DIR")
}

// Handshake is never reached: Load fails.
func (k *Keys) Handshake(nc net.Conn) (net.Conn, string, error) {
	return nil, "", errors.New("TLS-PSK: this camount was built without GnuTLS")
}
