package catar

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestExtractFresh: into a new or empty directory, entries are created
// under their own names, and owner and mode are set only where creation
// did not already give them; the result is the archive's tree whatever
// the target directory passes on to new entries (a set-group-ID bit, a
// default ACL) and whatever the umask takes away.
func TestExtractFresh(t *testing.T) {
	src := t.TempDir()
	big := bytes.Repeat([]byte("fresh extract "), inlineExtractSize/14+100) // streamed path
	files := []struct {
		name string
		mode os.FileMode
		data []byte
	}{
		{"a/plain", 0o644, []byte("plain")},
		{"a/b/exec", 0o755, []byte("#!/bin/sh\n")},
		{"a/b/writable", 0o666, []byte("umask would take w")},
		{"a/ro", 0o444, []byte("read-only")},
		{"a/none", 0o000, []byte("no access")},
		{"a/setuid", 0o755 | os.ModeSetuid, []byte("suid")},
		{"big", 0o640, big},
		{"empty", 0o600, nil},
	}
	for _, f := range files {
		p := filepath.Join(src, f.name)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, f.data, 0o600))
		must(t, os.Chmod(p, f.mode))
	}
	must(t, os.Symlink("a/plain", filepath.Join(src, "link")))
	must(t, syscall.Mkfifo(filepath.Join(src, "a/fifo"), 0o620))
	if os.Geteuid() == 0 { // before the chmod: chown clears set-ID bits
		must(t, os.Lchown(filepath.Join(src, "a/plain"), 1234, 5678))
		must(t, os.Lchown(filepath.Join(src, "link"), 0, 4321))
		must(t, os.Chown(filepath.Join(src, "a/b"), 1000, 1000))
	}
	must(t, syscall.Chmod(filepath.Join(src, "a/b"), 0o2775)) // os.Chmod would drop 0o2000
	arch := encodeDir(t, src)
	encode := func(dir string, features uint64) []byte {
		var b bytes.Buffer
		_, err := Encode(context.Background(), &b, dir, EncodeOptions{Features: features})
		must(t, err)
		return b.Bytes()
	}

	check := func(name, out string) {
		t.Helper()
		must(t, Extract(context.Background(), NewDecoder(bytes.NewReader(arch)), out, ExtractOptions{}))
		want, got := arch, encodeDir(t, out)
		if name == "directory with a default ACL" {
			// Directories made in it inherit the default ACL, as
			// with casync; the files' modes are what counts here.
			want, got = encode(src, DefaultFeatures&^WithACL), encode(out, DefaultFeatures&^WithACL)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: extracted tree differs from the archive:\n%s\n---\n%s", name, decodeAll(t, got), decodeAll(t, want))
		}
		filepath.Walk(out, func(p string, fi os.FileInfo, err error) error {
			if strings.HasPrefix(filepath.Base(p), ".#") {
				t.Errorf("%s: temporary file left: %s", name, p)
			}
			return nil
		})
	}
	check("new directory", filepath.Join(t.TempDir(), "new", "out"))
	check("empty directory", t.TempDir())

	// New entries of a set-group-ID directory take its group.
	sgid := t.TempDir()
	if os.Geteuid() == 0 {
		must(t, os.Chown(sgid, 0, 4242))
	}
	must(t, syscall.Chmod(sgid, 0o2777))
	check("set-group-ID directory", sgid)

	// New entries of a directory with a default ACL take their mode
	// from it, not from the umask.
	if _, err := exec.LookPath("setfacl"); err == nil {
		acl := t.TempDir()
		if out, err := exec.Command("setfacl", "-d", "-m", "u::rwx,g::rwx,o::rwx", acl).CombinedOutput(); err != nil {
			t.Logf("no default ACL (%v: %s): case skipped", err, out)
		} else {
			check("directory with a default ACL", acl)
		}
	}

	// Under a umask that takes everything, modes are still restored.
	old := syscall.Umask(0o777)
	defer syscall.Umask(old)
	check("umask 0777", t.TempDir())
}
