package tlspsk

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckKeys(t *testing.T) {
	for _, c := range []struct {
		file string
		n    int
		err  string
	}{
		{"alice:0123456789abcdef\n", 1, ""},
		{"alice:00ff\r\n\nbob:ABCD\n", 2, ""},
		{"", 0, "holds no key"},
		{"alice 00ff\n", 0, "line 1: want USERNAME:HEXKEY"},
		{"alice:00ff\n:00ff\n", 0, "line 2: empty username"},
		{"alice:0ff\n", 0, "not an even number"},
		{"alice:zz\n", 0, "not hex"},
		{"alice:00\nalice:11\n", 0, `line 2: username "alice" again (first on line 1)`},
	} {
		p := filepath.Join(t.TempDir(), "keys.psk")
		os.WriteFile(p, []byte(c.file), 0o600)
		n, err := checkKeys(p)
		if c.err == "" {
			if err != nil || n != c.n {
				t.Errorf("%q: %d keys, %v; want %d", c.file, n, err, c.n)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%q: %v, want %q", c.file, err, c.err)
		}
	}
	if _, err := checkKeys("/nonexistent/keys.psk"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}
