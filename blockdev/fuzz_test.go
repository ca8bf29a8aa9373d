package blockdev

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// scriptConn is a net.Conn whose client side is a fixed byte script; what
// the server writes is counted and discarded.
type scriptConn struct {
	r       *bytes.Reader
	written int
}

func (c *scriptConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error)      { c.written += len(p); return len(p), nil }
func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return nil }
func (c *scriptConn) RemoteAddr() net.Addr             { return nil }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

func fuzzServer(t testing.TB) *Server {
	data := make([]byte, 3<<20+100)
	for i := range data {
		data[i] = byte(i * 7)
	}
	src := &memSource{data: data, zeros: []Extent{{Offset: 5000, Length: 70000, Zero: true}}, failOff: 2 << 20, failLen: 10}
	// "a" also hands out slices (declining around 1 MiB) and per-connection views.
	sliced := &sliceSource{memSource: src, cold: 1 << 20, coldLen: 4096}
	s, err := NewServer([]Export{{Name: "a", Description: "d", Source: sliced}, {Name: "b", Source: plainSource{src}}}, Options{MaxInFlightBytes: MaxPayload})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serveScript runs ServeConn on a script and fails if it does not end.
func serveScript(t *testing.T, s *Server, script []byte) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeConn(context.Background(), &scriptConn{r: bytes.NewReader(script)})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("ServeConn did not finish on input %q", script)
	}
}

func opt(o uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, optMagic)
	b = binary.BigEndian.AppendUint32(b, o)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func req(flags, typ uint16, cookie, off uint64, length uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, requestMagic)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cookie)
	b = binary.BigEndian.AppendUint64(b, off)
	return binary.BigEndian.AppendUint32(b, length)
}

// FuzzOptions feeds arbitrary handshakes (client flags and options) to
// the server: it must never panic or hang.
func FuzzOptions(f *testing.F) {
	flags := []byte{0, 0, 0, 3}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	f.Add(cat(flags, opt(optList, nil), opt(optAbort, nil)))
	f.Add(cat(flags, opt(optStructuredReply, nil), opt(optListMetaContext, metaData("a")), opt(optSetMetaContext, metaData("a", "base:allocation")), opt(optGo, infoData("a", 0, 1, 2, 3))))
	f.Add(cat(flags, opt(optInfo, infoData("b", 3)), opt(optExportName, []byte("b"))))
	f.Add(cat(flags, opt(optStartTLS, nil), opt(optExtendedHeaders, nil), opt(77, []byte("xyz"))))
	f.Add(cat(flags, opt(optInfo, []byte{0, 0, 0, 200, 1}), opt(optSetMetaContext, []byte{0, 0, 0, 1, 'a', 255, 255, 255, 255})))
	s := fuzzServer(f)
	f.Fuzz(func(t *testing.T, script []byte) {
		serveScript(t, s, script)
	})
}

// FuzzRequests feeds arbitrary transmission-phase bytes after a fixed
// handshake (structured replies and base:allocation on, or neither).
func FuzzRequests(f *testing.F) {
	f.Add(false, req(0, cmdRead, 1, 0, 4096))
	f.Add(true, bytes.Join([][]byte{req(0, cmdRead, 1, 4096, 65536), req(1, cmdBlockStatus, 2, 0, 1<<20), req(0, cmdCache, 3, 0, 1<<20), req(0, cmdDisc, 4, 0, 0)}, nil))
	f.Add(true, bytes.Join([][]byte{req(0, cmdWrite, 1, 0, 8), []byte("12345678"), req(0, cmdTrim, 2, 0, 512), req(cmdFlagDF, cmdRead, 3, 2<<20, 512), req(cmdFlagReqOne, cmdBlockStatus, 4, 1<<30, 512)}, nil))
	f.Add(false, bytes.Join([][]byte{req(0, cmdRead, 1, 1<<64-1, 4096), req(0, 99, 2, 0, 0), req(0, cmdWrite, 3, 0, 1<<31)}, nil))
	s := fuzzServer(f)
	hs := func(structured bool) []byte {
		b := []byte{0, 0, 0, 3}
		if structured {
			b = append(b, opt(optStructuredReply, nil)...)
			b = append(b, opt(optSetMetaContext, metaData("a", metaBaseAllocation))...)
		}
		return append(b, opt(optGo, infoData("a", infoBlockSize))...)
	}
	f.Fuzz(func(t *testing.T, structured bool, script []byte) {
		serveScript(t, s, append(hs(structured), script...))
	})
}

// The fuzz seeds also run as a plain test; this checks the script
// harness drives the whole session.
func TestScriptSession(t *testing.T) {
	s := fuzzServer(t)
	script := append([]byte{0, 0, 0, 3}, opt(optGo, infoData("a"))...)
	script = append(script, req(0, cmdRead, 1, 0, 4096)...)
	c := &scriptConn{r: bytes.NewReader(script)}
	if err := s.ServeConn(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	// greeting 18, INFO_BLOCK_SIZE 20+14, INFO_EXPORT 20+12, ACK 20, reply 16+4096
	if want := 18 + 34 + 32 + 20 + 16 + 4096; c.written != want && c.written != want-4096-16 {
		t.Errorf("server wrote %d bytes, want %d", c.written, want)
	}
}
