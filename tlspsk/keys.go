// Package tlspsk is the server side of TLS with pre-shared keys (TLS-PSK,
// RFC 4279 and TLS 1.3's external PSKs), which Go's crypto/tls lacks, for
// camount nbd --tls-psk. The handshake and the records are GnuTLS's — the
// library nbdkit, libnbd and qemu use for the same purpose — reached
// through cgo when camount is built with the gnutls tag (the Makefile
// sets it when GnuTLS's headers are installed: libgnutls28-dev). Without
// it, Load says so and nothing else changes.
package tlspsk

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
)

// checkKeys checks a key file in psktool's format (one "USERNAME:HEXKEY"
// line per client, as nbdkit and qemu read it) and returns how many keys
// it holds, so that a bad file is refused when the server starts, with
// its line named, rather than at a client's first handshake.
func checkKeys(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("TLS-PSK key file: %w", err)
	}
	n := 0
	names := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimRight(sc.Bytes(), "\r")
		if len(bytes.TrimSpace(text)) == 0 {
			continue
		}
		name, key, ok := bytes.Cut(text, []byte(":"))
		switch {
		case !ok:
			return 0, fmt.Errorf("TLS-PSK key file %s, line %d: want USERNAME:HEXKEY (psktool's format)", path, line)
		case len(name) == 0:
			return 0, fmt.Errorf("TLS-PSK key file %s, line %d: empty username", path, line)
		case len(key) == 0 || len(key)%2 != 0:
			return 0, fmt.Errorf("TLS-PSK key file %s, line %d: the key of %q is not an even number of hex digits", path, line, name)
		}
		if _, err := hex.DecodeString(string(key)); err != nil {
			return 0, fmt.Errorf("TLS-PSK key file %s, line %d: the key of %q is not hex: %v", path, line, name, err)
		}
		if prev, dup := names[string(name)]; dup {
			return 0, fmt.Errorf("TLS-PSK key file %s, line %d: username %q again (first on line %d)", path, line, name, prev)
		}
		names[string(name)] = line
		n++
	}
	if n == 0 {
		return 0, fmt.Errorf("TLS-PSK key file %s holds no key (make one with: psktool -u NAME -p %s)", path, path)
	}
	return n, nil
}
