package main

import (
	"flag"
	"fmt"
	"net"

	"github.com/camount/camount/blockdev"
	"github.com/camount/camount/tlspsk"
)

// nbdTLSFlags are nbd's TLS flags, named as nbdkit's.
type nbdTLSFlags struct {
	mode  string // "", off, on, require
	certs string
	psk   string
}

func addNBDTLSFlags(fs *flag.FlagSet) *nbdTLSFlags {
	f := &nbdTLSFlags{}
	fs.StringVar(&f.mode, "tls", "", "`off|on|require`: offer TLS (NBD_OPT_STARTTLS), or refuse clients without it (default: on with --tls-certificates or --tls-psk, else off)")
	fs.StringVar(&f.certs, "tls-certificates", "", "`DIR` of X.509 credentials in nbdkit's layout: server-cert.pem, server-key.pem, and ca-cert.pem (if present, client certificates signed by it are required)")
	fs.StringVar(&f.psk, "tls-psk", "", "`FILE` of TLS pre-shared keys, USERNAME:HEXKEY lines as psktool writes them (nbdkit's --tls-psk; through GnuTLS); clients connect with nbds://USERNAME@HOST/NAME?tls-psk-file=FILE")
	return f
}

// apply sets the server's TLS options (none for --tls=off).
func (f *nbdTLSFlags) apply(o *blockdev.Options) error {
	mode := f.mode
	if mode == "" {
		mode = "off"
		if f.certs != "" || f.psk != "" {
			mode = "on"
		}
	}
	switch mode {
	case "off":
		if f.certs != "" || f.psk != "" {
			return usagef("--tls-certificates or --tls-psk is given but --tls=off")
		}
		return nil
	case "on", "require":
	default:
		return usagef("--tls=%q: want off, on or require", f.mode)
	}
	switch {
	case f.certs != "" && f.psk != "":
		return usagef("--tls-certificates and --tls-psk: give one (a client uses one kind of credentials)")
	case f.psk != "":
		keys, err := tlspsk.Load(f.psk)
		if err != nil {
			return fmt.Errorf("--tls-psk: %w", err)
		}
		o.TLSServer = keys
	case f.certs != "":
		cfg, err := blockdev.TLSConfigFromDir(f.certs)
		if err != nil {
			return fmt.Errorf("--tls-certificates: %w", err)
		}
		o.TLS = cfg
	default:
		return usagef("--tls=%s needs --tls-certificates=DIR or --tls-psk=FILE", mode)
	}
	o.RequireTLS = mode == "require"
	return nil
}

// nbdListenWarning is the warning for a server that listens beyond
// loopback without requiring TLS, or "".
func nbdListenWarning(a net.Addr, o blockdev.Options) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok || ta.IP.IsLoopback() {
		return ""
	}
	switch {
	case !o.TLSEnabled():
		return "nbd: listening beyond loopback without TLS: anyone who reaches this address can read the images, and nothing protects them on the way; use --tls=require --tls-certificates=DIR (or --tls-psk=FILE)"
	case !o.RequireTLS:
		return "nbd: listening beyond loopback with TLS optional (--tls=on): clients without TLS are served too; --tls=require refuses them"
	}
	return ""
}
