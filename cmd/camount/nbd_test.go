package main

import (
	"net"
	"strings"
	"testing"
)

func TestParseListen(t *testing.T) {
	for _, c := range []struct{ in, network, addr, err string }{
		{"unix:///run/x.sock", "unix", "/run/x.sock", ""},
		{"unix:rel.sock", "unix", "rel.sock", ""},
		{"/abs/x.sock", "unix", "/abs/x.sock", ""},
		{"tcp://127.0.0.1:10809", "tcp", "127.0.0.1:10809", ""},
		{"tcp://127.0.0.1", "tcp", "127.0.0.1:10809", ""},
		{"tcp://[::1]:0/", "tcp", "[::1]:0", ""},
		{"localhost:9000", "tcp", "localhost:9000", ""},
		{"tcp://:10809", "", "", "give a host"},
		{"tcp://127.0.0.1:99999", "", "", "bad port"},
		{"unix://", "", "", "empty"},
		{"bogus", "", "", "want unix"},
	} {
		n, a, err := parseListen(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("parseListen(%q) = %q %q %v, want an error with %q", c.in, n, a, err, c.err)
			}
			continue
		}
		if err != nil || n != c.network || a != c.addr {
			t.Errorf("parseListen(%q) = %q %q %v, want %q %q", c.in, n, a, err, c.network, c.addr)
		}
	}
}

func TestNBDURI(t *testing.T) {
	if got := nbdURI("unix", &net.UnixAddr{Name: "/run/a b.sock", Net: "unix"}, "disk"); got != "nbd+unix:///disk?socket=/run/a%20b.sock" {
		t.Errorf("unix URI %q", got)
	}
	if got := nbdURI("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 10809}, "my disk"); got != "nbd://127.0.0.1:10809/my%20disk" {
		t.Errorf("tcp URI %q", got)
	}
	if got := nbdURI("tcp", &net.TCPAddr{IP: net.IPv6unspecified, Port: 1}, "d"); strings.Contains(got, "[::]") {
		t.Errorf("URI for all addresses %q names [::]", got)
	}
}
