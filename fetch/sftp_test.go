package fetch

import (
	"strings"
	"testing"
)

func TestParseSFTPLocation(t *testing.T) {
	for _, c := range []struct {
		in, user, host, path, err string
	}{
		{in: "sftp://h/srv/store", host: "h:22", path: "/srv/store"},
		{in: "sftp://bob@h:2222/srv/store/", user: "bob", host: "h:2222", path: "/srv/store"},
		{in: "sftp://[::1]/x", host: "[::1]:22", path: "/x"},
		{in: "sftp://h/", err: "no path"},
		{in: "sftp:///x", err: "no host"},
		{in: "sftp://bob:secret@h/x", err: "a password does not belong"},
		{in: "sftp://h/x?y=1", err: "no query"},
	} {
		l, err := ParseSFTPLocation(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: %v, want error with %q", c.in, err, c.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("%s: error shows the password: %v", c.in, err)
			}
			continue
		}
		if err != nil || l.User != c.user || l.Host != c.host || l.Path != c.path {
			t.Errorf("%s: %+v %v", c.in, l, err)
		}
	}
}
