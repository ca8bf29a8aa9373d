package blockdev

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestGenlAttrsRoundTrip(t *testing.T) {
	b := appendAttrs(nil, []nlattr{
		attrU64(nbdAttrSizeBytes, 1<<30),
		attrString(9, "nbd"),
		attrNested(nbdAttrSockets, attrNested(nbdSockItem, attrU32(nbdSockFD, 7))),
	})
	if len(b)%4 != 0 {
		t.Fatalf("encoded length %d is not 4-aligned", len(b))
	}
	m, err := parseAttrs(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 3 || len(m[nbdAttrSizeBytes]) != 8 || string(m[9]) != "nbd\x00" {
		t.Fatalf("parsed %v", m)
	}
	socks, err := parseAttrs(m[nbdAttrSockets])
	if err != nil {
		t.Fatal(err)
	}
	item, err := parseAttrs(socks[nbdSockItem])
	if err != nil || len(item[nbdSockFD]) != 4 || item[nbdSockFD][0] != 7 {
		t.Fatalf("nested: %v, %v", item, err)
	}
	for _, bad := range [][]byte{{1}, {3, 0, 1, 0}, {200, 0, 1, 0, 0, 0, 0, 0}} {
		if _, err := parseAttrs(bad); err == nil {
			t.Errorf("parseAttrs(%v) accepted malformed input", bad)
		}
	}
}

func TestGenlUnknownFamily(t *testing.T) {
	c, err := dialGenl()
	if err != nil {
		t.Skipf("no generic netlink here: %v", err)
	}
	defer c.Close()
	if _, err := c.family("camount-none"); !errors.Is(err, ErrNoGenlFamily) {
		t.Fatalf("unknown family: err = %v, want ErrNoGenlFamily", err)
	}
	if id, err := c.family("nlctrl"); err != nil || id != 0x10 {
		t.Fatalf("family nlctrl = %d, %v; want 16", id, err)
	}
}

func TestNBDIndex(t *testing.T) {
	if n, err := NBDIndex("/dev/nbd3"); err != nil || n != 3 {
		t.Errorf("NBDIndex(/dev/nbd3) = %d, %v", n, err)
	}
	for _, p := range []string{"/dev/nbd", "/dev/nbd0p1", "/dev/loop0", "nbdx"} {
		if _, err := NBDIndex(p); !errors.Is(err, ErrNotNBD) {
			t.Errorf("NBDIndex(%q) err = %v, want ErrNotNBD", p, err)
		}
	}
	if err := DetachNBD("/dev/sda"); !errors.Is(err, ErrNotNBD) {
		t.Errorf("DetachNBD(/dev/sda) err = %v, want ErrNotNBD", err)
	}
}

func TestAttachNBDBadArgs(t *testing.T) {
	serve := func(ctx context.Context, nc net.Conn) error { return nc.Close() }
	for _, c := range []struct {
		size int64
		opt  KernelOptions
		want string
	}{
		{0, KernelOptions{}, "not a positive multiple"},
		{1000, KernelOptions{}, "not a positive multiple"},
		{4096, KernelOptions{BlockSize: 300}, "power of two"},
		{4096, KernelOptions{BlockSize: 1 << 20}, "power of two"},
	} {
		_, err := AttachNBD(context.Background(), c.size, serve, c.opt)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("AttachNBD(%d, %+v) err = %v, want %q", c.size, c.opt, err, c.want)
		}
	}
}

// kbytesSource is an in-memory Source.
type kbytesSource struct{ b []byte }

func (m *kbytesSource) Size() int64 { return int64(len(m.b)) }
func (m *kbytesSource) ReadAtContext(_ context.Context, p []byte, off int64) (int, error) {
	return copy(p, m.b[off:]), nil
}

// TestAttachNBDKernel attaches a real /dev/nbdN where the kernel has NBD
// (the VM test runs it there); on a kernel without it, it checks the error.
func TestAttachNBDKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for /dev/nbdN")
	}
	err := LoadNBDModule("")
	if err != nil {
		if !errors.Is(err, ErrNoKernelNBD) {
			t.Fatalf("LoadNBDModule: %v, want an ErrNoKernelNBD", err)
		}
		t.Skipf("the kernel has no NBD (%v); the VM test covers /dev/nbdN", err)
	}
	data := make([]byte, 4<<20)
	rand.Read(data)
	srv, err := NewServer([]Export{{Name: "x", Source: &kbytesSource{data}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{"netlink", "ioctl"} {
		t.Run(method, func(t *testing.T) {
			d, err := AttachNBD(context.Background(), int64(len(data)), func(ctx context.Context, nc net.Conn) error {
				return srv.ServeTransmission(ctx, nc, "x")
			}, KernelOptions{Method: method})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Detach()
			ro, _ := os.ReadFile("/sys/block/" + d.Path()[5:] + "/ro")
			if strings.TrimSpace(string(ro)) != "1" {
				t.Errorf("%s ro = %q", d.Path(), ro)
			}
			got, err := os.ReadFile(d.Path())
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("reading %s: %d bytes, equal %v, err %v", d.Path(), len(got), bytes.Equal(got, data), err)
			}
			if err := d.Detach(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-d.Done():
			case <-time.After(time.Second):
				t.Fatal("Done not closed after Detach")
			}
			if nbdConnected(d.Index()) {
				t.Fatalf("%s still connected", d.Path())
			}
		})
	}
}
