package blockdev

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func needLoop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("no /dev/loop-control (loop module not loaded)")
	}
}

func TestLoopAttachReadOnly(t *testing.T) {
	needLoop(t)
	file := filepath.Join(t.TempDir(), "img")
	data := make([]byte, 3<<20)
	rand.Read(data)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := AttachLoop(file, LoopOptions{PartScan: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Detach(5 * time.Second) })
	if got := LoopAttachedTo(d.Index()); got != file {
		t.Errorf("backing file of %s = %q, want %q", d.Path(), got, file)
	}
	ro, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(d.Path()), "ro"))
	if err != nil || strings.TrimSpace(string(ro)) != "1" {
		t.Errorf("%s ro = %q, %v; want 1", d.Path(), ro, err)
	}
	got, err := os.ReadFile(d.Path())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("%s: %d bytes differ from the file's %d", d.Path(), len(got), len(data))
	}
	if f, err := os.OpenFile(d.Path(), os.O_WRONLY, 0); err == nil {
		_, werr := f.Write(make([]byte, 512))
		f.Close()
		if werr == nil {
			t.Error("write to the read-only loop device succeeded")
		}
	}
	if err := d.Detach(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if b := LoopAttachedTo(d.Index()); b == file {
		t.Errorf("%s still attached to %s after Detach", d.Path(), b)
	}
}

func TestLoopAttachErrors(t *testing.T) {
	needLoop(t)
	if _, err := AttachLoop(filepath.Join(t.TempDir(), "missing"), LoopOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v, want ErrNotExist", err)
	}
	for _, p := range []string{"/dev/sda", "/dev/loop", "loopx", "/dev/loop-1"} {
		if _, err := LoopIndex(p); !errors.Is(err, ErrNotLoop) {
			t.Errorf("LoopIndex(%q) err = %v, want ErrNotLoop", p, err)
		}
	}
	if n, err := LoopIndex("/dev/loop12"); err != nil || n != 12 {
		t.Errorf("LoopIndex(/dev/loop12) = %d, %v", n, err)
	}
}
