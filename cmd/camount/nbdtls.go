package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net"

	"github.com/camount/camount/blockdev"
)

// nbdTLSFlags are nbd's TLS flags, named as nbdkit's.
type nbdTLSFlags struct {
	mode  string // "", off, on, require
	certs string
	psk   string
}

func addNBDTLSFlags(fs *flag.FlagSet) *nbdTLSFlags {
	f := &nbdTLSFlags{}
	fs.StringVar(&f.mode, "tls", "", "`off|on|require`: offer TLS (NBD_OPT_STARTTLS), or refuse clients without it (default: on with --tls-certificates, else off)")
	fs.StringVar(&f.certs, "tls-certificates", "", "`DIR` of X.509 credentials in nbdkit's layout: server-cert.pem, server-key.pem, and ca-cert.pem (if present, client certificates signed by it are required)")
	fs.StringVar(&f.psk, "tls-psk", "", "`FILE` of TLS pre-shared keys (psktool format): not supported yet (Go's TLS has no PSK); use --tls-certificates")
	return f
}

// config returns the server's TLS settings: nil for no TLS.
func (f *nbdTLSFlags) config() (cfg *tls.Config, require bool, err error) {
	if f.psk != "" {
		return nil, false, usagef("--tls-psk: TLS with pre-shared keys is not supported (Go's crypto/tls has no TLS-PSK); use --tls-certificates=DIR")
	}
	mode := f.mode
	if mode == "" {
		mode = "off"
		if f.certs != "" {
			mode = "on"
		}
	}
	switch mode {
	case "off":
		if f.certs != "" {
			return nil, false, usagef("--tls-certificates is given but --tls=off")
		}
		return nil, false, nil
	case "on", "require":
	default:
		return nil, false, usagef("--tls=%q: want off, on or require", f.mode)
	}
	if f.certs == "" {
		return nil, false, usagef("--tls=%s needs --tls-certificates=DIR", mode)
	}
	cfg, err = blockdev.TLSConfigFromDir(f.certs)
	if err != nil {
		return nil, false, fmt.Errorf("--tls-certificates: %w", err)
	}
	return cfg, mode == "require", nil
}

// nbdListenWarning is the warning for a server that listens beyond
// loopback without requiring TLS, or "".
func nbdListenWarning(a net.Addr, o blockdev.Options) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok || ta.IP.IsLoopback() {
		return ""
	}
	switch {
	case o.TLS == nil:
		return "nbd: listening beyond loopback without TLS: anyone who reaches this address can read the images, and nothing protects them on the way; use --tls=require --tls-certificates=DIR"
	case !o.RequireTLS:
		return "nbd: listening beyond loopback with TLS optional (--tls=on): clients without TLS are served too; --tls=require refuses them"
	}
	return ""
}
