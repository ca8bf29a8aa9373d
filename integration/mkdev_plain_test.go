package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMkdevPlainBlob: 'camount mkdev FILE' serves a plain image file (not
// an index) as a read-only block device, as casync mkdev does with a blob:
// /dev/nbdN where the kernel has NBD (checked in TestVMNBD,
// mkdev-plain-blob), else a read-only loop device on the file. --what=blob
// names a plain file whatever its name; NODE works as for an index.
func TestMkdevPlainBlob(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("/dev/loop-control is absent: the loop module is not loaded")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	data := randomBytes(1<<20+100, 11) // a partial last sector
	os.WriteFile(img, data, 0o644)
	odd := filepath.Join(dir, "disk.caidx-not")
	os.WriteFile(odd, data[:64<<10], 0o644)
	for _, c := range []struct {
		args []string
		want []byte
	}{
		{[]string{img}, data[:1<<20]},
		{[]string{"--what=blob", odd}, data[:64<<10]},
	} {
		node := filepath.Join(dir, "node")
		p := startMkdev(t, append(c.args, node)...)
		got, err := os.ReadFile(node)
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("mkdev %s: %s read %d bytes (%v), want the image's %d", strings.Join(c.args, " "), p.dev, len(got), err, len(c.want))
		}
		if ro, _ := os.ReadFile("/sys/block/" + filepath.Base(p.dev) + "/ro"); strings.TrimSpace(string(ro)) != "1" {
			t.Errorf("%s is not read-only (ro=%q)", p.dev, ro)
		}
		if f, err := os.OpenFile(p.dev, os.O_WRONLY, 0); err == nil {
			_, werr := f.WriteAt([]byte("x"), 0)
			f.Close()
			if werr == nil {
				t.Errorf("a write to %s succeeded", p.dev)
			}
		}
		if err := p.stop(t); err != nil {
			t.Errorf("mkdev after SIGTERM: %v\nstderr: %s", err, p.stderr)
		}
		if _, err := os.Lstat(node); err == nil {
			t.Errorf("NODE left after mkdev ended")
		}
	}
	if b, _ := os.ReadFile(img); !bytes.Equal(b, data) {
		t.Error("the image file changed")
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{dir}, "want a .caibx index (or a plain image file, --what=blob)"},
		{[]string{"--what=blob", dir}, "is a directory"},
	} {
		_, err := tryCamount(append([]string{"mkdev"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("mkdev %s: %v, want an error containing %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}
