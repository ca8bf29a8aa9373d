package main

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"

	"github.com/camount/camount/blockdev"
)

func TestNBDListenWarning(t *testing.T) {
	tc := &tls.Config{}
	for _, c := range []struct {
		addr net.Addr
		o    blockdev.Options
		want string
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, blockdev.Options{}, ""},
		{&net.TCPAddr{IP: net.IPv6loopback}, blockdev.Options{}, ""},
		{&net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, blockdev.Options{}, ""},
		{&net.TCPAddr{IP: net.IPv4zero}, blockdev.Options{}, "without TLS"},
		{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 1)}, blockdev.Options{}, "without TLS"},
		{&net.TCPAddr{IP: net.IPv4zero}, blockdev.Options{TLS: tc}, "--tls=require refuses"},
		{&net.TCPAddr{IP: net.IPv4zero}, blockdev.Options{TLS: tc, RequireTLS: true}, ""},
	} {
		got := nbdListenWarning(c.addr, c.o)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%v tls=%v require=%v: %q, want %q", c.addr, c.o.TLS != nil, c.o.RequireTLS, got, c.want)
		}
	}
}

func TestNBDTLSFlags(t *testing.T) {
	for _, c := range []struct {
		f   nbdTLSFlags
		err string
	}{
		{nbdTLSFlags{}, ""},
		{nbdTLSFlags{mode: "off"}, ""},
		{nbdTLSFlags{mode: "on"}, "needs --tls-certificates"},
		{nbdTLSFlags{mode: "require"}, "needs --tls-certificates"},
		{nbdTLSFlags{mode: "maybe", certs: "/x"}, "want off, on or require"},
		{nbdTLSFlags{mode: "off", certs: "/x"}, "--tls=off"},
		{nbdTLSFlags{certs: "/nonexistent"}, "server-cert.pem"},
		{nbdTLSFlags{psk: "/nonexistent.psk"}, "TLS-PSK key file"},
		{nbdTLSFlags{psk: "/x.psk", certs: "/x"}, "give one"},
		{nbdTLSFlags{mode: "off", psk: "/x.psk"}, "--tls=off"},
	} {
		var o blockdev.Options
		err := c.f.apply(&o)
		if c.err == "" {
			if err != nil || o.TLSEnabled() {
				t.Errorf("%+v: %v", c.f, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%+v: %v, want %q", c.f, err, c.err)
		}
	}
}
