package location

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		value  string
		use    Use
		path   string // want a local path
		scheme string // want a URL of this scheme
		err    string // want an error containing this
	}{
		{value: "dir", use: WriteStore, path: "dir"},
		{value: "./a:b", use: WriteStore, path: "./a:b"},
		{value: "a:b", use: WriteStore, path: "a:b"},
		{value: "/x/y://z", use: WriteStore, path: "/x/y://z"},
		{value: "./http://x", use: Output, path: "./http://x"},
		{value: "file:///tmp/s", use: WriteStore, path: "/tmp/s"},
		{value: "file://localhost/tmp/s", use: ReadStore, path: "/tmp/s"},
		{value: "FILE:///tmp/s", use: Cache, path: "/tmp/s"},
		{value: "file://host/tmp/s", use: ReadStore, err: `not host "host"`},
		{value: "http://h/x", use: ReadStore, scheme: "http"},
		{value: "HTTPS://h/x", use: Index, scheme: "https"},
		{value: "http://127.0.0.1:9/x", use: WriteStore, err: "--f http://127.0.0.1:9/x: http:// URLs are not supported for a chunk store to write (supported: local paths, file:// and s3+http://, s3+https://, sftp:// URLs)"},
		{value: "s3+http://h/b/x", use: WriteStore, scheme: "s3+http"},
		{value: "s3+https://h/b/x", use: Cache, err: "s3+https:// URLs are not supported for a cache"},
		{value: "ftp://h/x", use: ReadStore, err: "ftp:// URLs are not supported for a chunk store (supported: local paths, file:// and http://, https://, s3+http://, s3+https://, sftp:// URLs)"},
		{value: "ftp://u:secret@h/x", use: ReadStore, err: "ftp://u:xxxxx@h/x"},
		{value: "http:///x", use: ReadStore, err: "without a host"},
		{value: "", use: Output, err: "empty"},
		{value: "http://h/x", use: Cache, err: "not supported for a cache"},
	} {
		l, err := Parse("--f", c.value, c.use)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrUnsupported) {
				t.Errorf("Parse(%q, %v) = %+v, %v; want error with %q", c.value, c.use, l, err, c.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("error shows the password: %v", err)
			}
		case err != nil:
			t.Errorf("Parse(%q, %v): %v", c.value, c.use, err)
		case c.path != "" && (!l.IsLocal() || l.Path != c.path):
			t.Errorf("Parse(%q) = %+v, want local %q", c.value, l, c.path)
		case c.scheme != "" && (l.IsLocal() || l.Scheme != c.scheme):
			t.Errorf("Parse(%q) = %+v, want a %s URL", c.value, l, c.scheme)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"http://u:secret@h/x.caibx?sig=1": "http://u:xxxxx@h/x.caibx?sig=1",
		"http://u@h/x":                    "http://u@h/x",
		"http://h/x":                      "http://h/x",
		"/a:b@c":                          "/a:b@c",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	txt := `GET http://u:p%40ss@h:80/a/b.cacnk: 500; store https://x:y@s/q`
	got := RedactText(txt)
	if strings.Contains(got, "p%40ss") || strings.Contains(got, ":y@") || !strings.Contains(got, "http://u:xxxxx@h:80/a/b.cacnk") || !strings.Contains(got, "https://x:xxxxx@s/q") {
		t.Errorf("RedactText = %q", got)
	}
	if got := WithoutSecrets("http://u:secret@h/i/x.caibx?sig=abc#f"); got != "http://h/i/x.caibx" {
		t.Errorf("WithoutSecrets = %q", got)
	}
}

func TestBaseStripQuery(t *testing.T) {
	if got := Base("http://h/d/b%20l+ob.caibx?sig=a"); got != "b l+ob.caibx" {
		t.Errorf("Base = %q", got)
	}
	if got := StripQuery("http://h/d/x.caidx?sig=a#f"); got != "http://h/d/x.caidx" {
		t.Errorf("StripQuery = %q", got)
	}
	if got := StripQuery("./a?b.caidx"); got != "./a?b.caidx" {
		t.Errorf("StripQuery(local) = %q", got)
	}
}
