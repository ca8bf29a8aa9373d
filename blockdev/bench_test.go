package blockdev

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
)

// BenchmarkRead measures one 4 KiB structured READ round trip (QD1) over a
// unix socket from an in-memory source, and its allocations.
func BenchmarkRead(b *testing.B) {
	for _, size := range []int{4096, 1 << 20} {
		for _, slices := range []bool{false, true} {
			name := byteName(size)
			if slices {
				name += "-slices"
			}
			b.Run(name, func(b *testing.B) {
				var src Source = &memSource{data: randomData(8 << 20)}
				if slices {
					src = &sliceSource{memSource: src.(*memSource), cold: -1}
				}
				srv, err := NewServer([]Export{{Name: "a", Source: src}}, Options{})
				if err != nil {
					b.Fatal(err)
				}
				_, path := startServerB(b, srv)
				c := dialB(b, path)
				hdr := make([]byte, 20)
				buf := make([]byte, size+8)
				req := make([]byte, requestSize)
				binary.BigEndian.PutUint32(req, requestMagic)
				binary.BigEndian.PutUint32(req[24:], uint32(size))
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					off := uint64(i*size) % (8<<20 - uint64(size))
					off &^= 511
					binary.BigEndian.PutUint64(req[8:], uint64(i))
					binary.BigEndian.PutUint64(req[16:], off)
					if _, err := c.Write(req); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(c, hdr); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(c, buf); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func byteName(n int) string {
	if n >= 1<<20 {
		return "1MiB"
	}
	return "4KiB"
}

func startServerB(b *testing.B, s *Server) (*Server, string) {
	path := b.TempDir() + "/nbd.sock"
	l, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go s.Serve(ctx, l)
	b.Cleanup(cancel)
	return s, path
}

// dialB connects and negotiates structured replies with GO.
func dialB(b *testing.B, path string) net.Conn {
	c, err := net.Dial("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	br := bufio.NewReader(c)
	io.ReadFull(br, make([]byte, 18))
	script := []byte{0, 0, 0, 3}
	script = append(script, opt(optStructuredReply, nil)...)
	script = append(script, opt(optGo, infoData("a", infoBlockSize))...)
	c.Write(script)
	// STRUCTURED_REPLY ack, INFO_BLOCK_SIZE, INFO_EXPORT, ACK
	for _, n := range []int{20, 20 + 14, 20 + 12, 20} {
		if _, err := io.ReadFull(br, make([]byte, n)); err != nil {
			b.Fatal(err)
		}
	}
	if br.Buffered() != 0 {
		b.Fatal("unexpected handshake bytes")
	}
	return c
}
