package blockdev

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// memSource is an in-memory Source with optional zero extents, an
// injected failure range, a delay and a prefetch recorder.
type memSource struct {
	data     []byte
	zeros    []Extent // reported by Extents
	failOff  int64    // reads touching [failOff, failOff+failLen) fail
	failLen  int64
	delay    func(off int64) time.Duration
	prefetch atomic.Int64 // bytes asked for by Prefetch
}

func (m *memSource) Size() int64 { return int64(len(m.data)) }

func (m *memSource) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if m.delay != nil {
		select {
		case <-time.After(m.delay(off)):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if m.failLen > 0 && off < m.failOff+m.failLen && off+int64(len(p)) > m.failOff {
		return 0, errors.New("chunk 1234 is corrupt")
	}
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memSource) Extents(off, length int64) ([]Extent, error) { return m.zeros, nil }
func (m *memSource) Prefetch(off, length int64)                  { m.prefetch.Add(length) }

// plainSource hides the optional interfaces.
type plainSource struct{ Source }

func randomData(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// startServer serves exports on a unix socket and returns its path.
func startServer(t *testing.T, exports []Export, opt Options) (*Server, string) {
	t.Helper()
	s, err := NewServer(exports, opt)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "nbd.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
	})
	return s, path
}

// client is a minimal NBD client for tests.
type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, path string) *client {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

func (c *client) read(n int) []byte {
	c.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c.br, b); err != nil {
		c.t.Fatalf("client read %d bytes: %v", n, err)
	}
	return b
}

func (c *client) write(b []byte) {
	c.t.Helper()
	if _, err := c.c.Write(b); err != nil {
		c.t.Fatalf("client write: %v", err)
	}
}

func (c *client) greet(cflags uint32) {
	c.t.Helper()
	b := c.read(18)
	if binary.BigEndian.Uint64(b) != nbdMagic || binary.BigEndian.Uint64(b[8:]) != optMagic {
		c.t.Fatalf("bad greeting % x", b)
	}
	if f := binary.BigEndian.Uint16(b[16:]); f != flagFixedNewstyle|flagNoZeroes {
		c.t.Fatalf("handshake flags %#x", f)
	}
	c.write(binary.BigEndian.AppendUint32(nil, cflags))
}

func (c *client) option(o uint32, data []byte) {
	c.t.Helper()
	b := binary.BigEndian.AppendUint64(nil, optMagic)
	b = binary.BigEndian.AppendUint32(b, o)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	c.write(append(b, data...))
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (c *client) optReply() optReply {
	c.t.Helper()
	b := c.read(20)
	if binary.BigEndian.Uint64(b) != optReplyMagic {
		c.t.Fatalf("bad option reply magic % x", b)
	}
	r := optReply{opt: binary.BigEndian.Uint32(b[8:]), typ: binary.BigEndian.Uint32(b[12:])}
	r.data = c.read(int(binary.BigEndian.Uint32(b[16:])))
	return r
}

// replies reads option replies up to and including the final one.
func (c *client) replies() []optReply {
	c.t.Helper()
	var rs []optReply
	for {
		r := c.optReply()
		rs = append(rs, r)
		if r.typ == repAck || r.typ&repErrBit != 0 {
			return rs
		}
	}
}

func infoData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

func metaData(name string, queries ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

type exportInfo struct {
	size  uint64
	flags uint16
	min   uint32
	pref  uint32
	max   uint32
	name  string
	desc  string
}

// goExport negotiates structured replies and base:allocation (if asked)
// and enters transmission with GO.
func (c *client) goExport(name string, structured, meta bool) exportInfo {
	c.t.Helper()
	c.greet(flagFixedNewstyle | flagNoZeroes)
	if structured {
		c.option(optStructuredReply, nil)
		if r := c.replies(); r[len(r)-1].typ != repAck {
			c.t.Fatalf("STRUCTURED_REPLY: %+v", r)
		}
	}
	if meta {
		c.option(optSetMetaContext, metaData(name, metaBaseAllocation))
		rs := c.replies()
		if len(rs) != 2 || rs[0].typ != repMetaContext || string(rs[0].data[4:]) != metaBaseAllocation || rs[1].typ != repAck {
			c.t.Fatalf("SET_META_CONTEXT: %+v", rs)
		}
	}
	c.option(optGo, infoData(name, infoBlockSize, infoName, infoDescription))
	var info exportInfo
	for _, r := range c.replies() {
		switch {
		case r.typ == repInfo:
			switch binary.BigEndian.Uint16(r.data) {
			case infoExport:
				info.size = binary.BigEndian.Uint64(r.data[2:])
				info.flags = binary.BigEndian.Uint16(r.data[10:])
			case infoBlockSize:
				info.min = binary.BigEndian.Uint32(r.data[2:])
				info.pref = binary.BigEndian.Uint32(r.data[6:])
				info.max = binary.BigEndian.Uint32(r.data[10:])
			case infoName:
				info.name = string(r.data[2:])
			case infoDescription:
				info.desc = string(r.data[2:])
			}
		case r.typ != repAck:
			c.t.Fatalf("GO: reply %+v", r)
		}
	}
	return info
}

func (c *client) request(flags, typ uint16, cookie, off uint64, length uint32, payload []byte) {
	c.t.Helper()
	b := make([]byte, requestSize, requestSize+len(payload))
	binary.BigEndian.PutUint32(b, requestMagic)
	binary.BigEndian.PutUint16(b[4:], flags)
	binary.BigEndian.PutUint16(b[6:], typ)
	binary.BigEndian.PutUint64(b[8:], cookie)
	binary.BigEndian.PutUint64(b[16:], off)
	binary.BigEndian.PutUint32(b[24:], length)
	c.write(append(b, payload...))
}

// simpleReply reads a simple reply header.
func (c *client) simpleReply() (errno uint32, cookie uint64) {
	c.t.Helper()
	b := c.read(16)
	if binary.BigEndian.Uint32(b) != simpleReplyMagic {
		c.t.Fatalf("bad simple reply magic % x", b)
	}
	return binary.BigEndian.Uint32(b[4:]), binary.BigEndian.Uint64(b[8:])
}

type chunk struct {
	flags, typ uint16
	cookie     uint64
	payload    []byte
}

// anyReply reads one simple reply (with dataLen bytes of data when it is
// a success) or one structured chunk.
func (c *client) anyReply(dataLen func(cookie uint64) int) chunk {
	c.t.Helper()
	m, err := c.br.Peek(4)
	if err != nil {
		c.t.Fatalf("reading reply: %v", err)
	}
	switch binary.BigEndian.Uint32(m) {
	case simpleReplyMagic:
		errno, cookie := c.simpleReply()
		ch := chunk{flags: replyFlagDone, typ: 0xffff, cookie: cookie}
		if errno == 0 {
			ch.payload = c.read(dataLen(cookie))
		} else {
			ch.payload = binary.BigEndian.AppendUint32(nil, errno)
		}
		return ch
	case structReplyMagic:
		return c.chunk()
	}
	c.t.Fatalf("bad reply magic % x", m)
	return chunk{}
}

func (c *client) chunk() chunk {
	c.t.Helper()
	b := c.read(20)
	if binary.BigEndian.Uint32(b) != structReplyMagic {
		c.t.Fatalf("bad structured reply magic % x", b)
	}
	return chunk{
		flags:   binary.BigEndian.Uint16(b[4:]),
		typ:     binary.BigEndian.Uint16(b[6:]),
		cookie:  binary.BigEndian.Uint64(b[8:]),
		payload: c.read(int(binary.BigEndian.Uint32(b[16:]))),
	}
}

// chunkErr returns the error value of a structured ERROR chunk.
func chunkErr(t *testing.T, ch chunk) uint32 {
	t.Helper()
	if ch.typ != replyTypeError || ch.flags&replyFlagDone == 0 {
		t.Fatalf("want a final ERROR chunk, got type %#x flags %#x", ch.typ, ch.flags)
	}
	return binary.BigEndian.Uint32(ch.payload)
}

func TestStructuredSession(t *testing.T) {
	data := randomData(1<<20 + 1000) // not a multiple of 512: padded
	src := &memSource{data: data, zeros: []Extent{{Offset: 4096 + 100, Length: 10000, Zero: true}, {Offset: 1<<20 - 300, Length: 1300, Zero: true}}}
	for i := 4096 + 100; i < 4096+100+10000; i++ {
		data[i] = 0
	}
	for i := 1<<20 - 300; i < len(data); i++ {
		data[i] = 0
	}
	_, path := startServer(t, []Export{{Name: "disk", Description: "a test disk", Source: src}}, Options{})
	c := dial(t, path)
	info := c.goExport("disk", true, true)
	wantSize := uint64(1<<20 + 1024)
	if info.size != wantSize {
		t.Errorf("size %d, want %d", info.size, wantSize)
	}
	if info.flags != 0x587 {
		t.Errorf("transmission flags %#x, want 0x587 (as nbdkit -r file)", info.flags)
	}
	if info.min != 512 || info.pref != 4096 || info.max != MaxPayload || info.name != "disk" || info.desc != "a test disk" {
		t.Errorf("info %+v", info)
	}

	// READ: one OFFSET_DATA chunk with DONE.
	c.request(0, cmdRead, 1, 8192, 65536, nil)
	ch := c.chunk()
	if ch.cookie != 1 || ch.typ != replyTypeOffsetData || ch.flags != replyFlagDone {
		t.Fatalf("read chunk %+v", ch)
	}
	if binary.BigEndian.Uint64(ch.payload) != 8192 || !bytes.Equal(ch.payload[8:], data[8192:8192+65536]) {
		t.Fatal("read data differs")
	}
	// the padded tail reads as zeros
	c.request(0, cmdRead, 2, wantSize-1024, 1024, nil)
	ch = c.chunk()
	if !bytes.Equal(ch.payload[8:8+1000], data[1<<20:]) || !bytes.Equal(ch.payload[8+1000:], make([]byte, 24)) {
		t.Fatal("tail read differs")
	}
	// beyond the end, misaligned, unknown flag, too large: EINVAL, the connection survives
	for i, r := range []request{
		{typ: cmdRead, offset: wantSize - 512, length: 1024},
		{typ: cmdRead, offset: wantSize + 512, length: 512},
		{typ: cmdRead, offset: 1<<64 - 512, length: 1024},
		{typ: cmdRead, offset: 100, length: 512},
		{typ: cmdRead, flags: cmdFlagFUA, length: 512},
		{typ: cmdBlockStatus, offset: wantSize, length: 512},
		{typ: 42, length: 512},
	} {
		c.request(r.flags, r.typ, uint64(100+i), r.offset, r.length, nil)
		ch := c.anyReply(nil)
		code := binary.BigEndian.Uint32(ch.payload)
		if ch.typ == replyTypeError {
			code = chunkErr(t, ch)
		}
		if ch.cookie != uint64(100+i) || code != EINVAL {
			t.Errorf("request %+v: cookie %d error %d, want EINVAL", r, ch.cookie, code)
		}
	}
	// writes: EPERM, WRITE's payload is drained
	c.request(0, cmdWrite, 3, 0, 4096, make([]byte, 4096))
	if e, ck := c.simpleReply(); e != EPERM || ck != 3 {
		t.Errorf("WRITE: error %d cookie %d", e, ck)
	}
	c.request(0, cmdTrim, 4, 0, 4096, nil)
	if e, _ := c.simpleReply(); e != EPERM {
		t.Errorf("TRIM: error %d", e)
	}
	c.request(cmdFlagNoHole, cmdWriteZeroes, 5, 0, 4096, nil)
	if e, _ := c.simpleReply(); e != EPERM {
		t.Errorf("WRITE_ZEROES: error %d", e)
	}
	c.request(0, cmdFlush, 6, 0, 0, nil)
	if e, _ := c.simpleReply(); e != 0 {
		t.Errorf("FLUSH: error %d", e)
	}
	c.request(0, cmdCache, 7, 0, 1<<20, nil)
	if e, _ := c.simpleReply(); e != 0 {
		t.Errorf("CACHE: error %d", e)
	}
	if src.prefetch.Load() != 1<<20 {
		t.Errorf("CACHE prefetched %d bytes", src.prefetch.Load())
	}
	// BLOCK_STATUS: zero runs shrunk to 512 boundaries, the last one
	// extended over the padding.
	c.request(0, cmdBlockStatus, 8, 0, uint32(wantSize), nil)
	ch = c.chunk()
	if ch.typ != replyTypeBlockStatus || ch.flags != replyFlagDone || binary.BigEndian.Uint32(ch.payload) != metaAllocationID {
		t.Fatalf("block status chunk %+v", ch)
	}
	got := descriptors(ch.payload[4:])
	zs, ze := int64(4096+512), int64(4096+100+10000)&^511
	want := [][2]uint32{{uint32(zs), 0}, {uint32(ze - zs), 3}, {uint32((1<<20-300+511)&^511 - ze), 0}, {uint32(int64(wantSize) - (1<<20-300+511)&^511), 3}}
	if !equalDescs(got, want) {
		t.Errorf("block status %v, want %v", got, want)
	}
	c.request(cmdFlagReqOne, cmdBlockStatus, 9, 0, 1024, nil)
	ch = c.chunk()
	if got := descriptors(ch.payload[4:]); !equalDescs(got, [][2]uint32{{1024, 0}}) {
		t.Errorf("REQ_ONE block status %v", got)
	}
	// DF read, zero-length read
	c.request(cmdFlagDF, cmdRead, 10, 0, 512, nil)
	if ch := c.chunk(); ch.typ != replyTypeOffsetData {
		t.Errorf("DF read: %+v", ch)
	}
	c.request(0, cmdRead, 11, 0, 0, nil)
	if ch := c.chunk(); ch.typ != replyTypeNone || ch.flags != replyFlagDone {
		t.Errorf("empty read: %+v", ch)
	}
	// DISC: the server closes the connection.
	c.request(0, cmdDisc, 12, 0, 0, nil)
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Errorf("after DISC: %v, want EOF", err)
	}
}

func descriptors(b []byte) [][2]uint32 {
	var d [][2]uint32
	for ; len(b) >= 8; b = b[8:] {
		d = append(d, [2]uint32{binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])})
	}
	return d
}

func equalDescs(a, b [][2]uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSimpleRepliesAndErrors(t *testing.T) {
	data := randomData(256 << 10)
	src := &memSource{data: data, failOff: 100 << 10, failLen: 1}
	_, path := startServer(t, []Export{{Name: "a", Source: plainSource{src}}}, Options{})
	c := dial(t, path)
	info := c.goExport("a", false, false)
	if info.flags != 0x507 {
		t.Errorf("flags %#x, want 0x507 (no DF without structured replies)", info.flags)
	}
	c.request(0, cmdRead, 1, 0, 4096, nil)
	if e, ck := c.simpleReply(); e != 0 || ck != 1 {
		t.Fatalf("read: error %d cookie %d", e, ck)
	}
	if !bytes.Equal(c.read(4096), data[:4096]) {
		t.Fatal("data differs")
	}
	// a failing chunk: EIO, no data, the connection goes on
	c.request(0, cmdRead, 2, 96<<10, 8192, nil)
	if e, ck := c.simpleReply(); e != EIO || ck != 2 {
		t.Fatalf("failed read: error %d cookie %d", e, ck)
	}
	// DF without structured replies, BLOCK_STATUS without a context: EINVAL
	c.request(cmdFlagDF, cmdRead, 3, 0, 512, nil)
	if e, _ := c.simpleReply(); e != EINVAL {
		t.Errorf("DF read: error %d", e)
	}
	c.request(0, cmdBlockStatus, 4, 0, 512, nil)
	if e, _ := c.simpleReply(); e != EINVAL {
		t.Errorf("block status: error %d", e)
	}
	// CACHE without a Prefetcher reads the range
	c.request(0, cmdCache, 5, 0, 64<<10, nil)
	if e, _ := c.simpleReply(); e != 0 {
		t.Errorf("cache: error %d", e)
	}
	c.request(0, cmdRead, 6, 200<<10, 4096, nil)
	if e, _ := c.simpleReply(); e != 0 {
		t.Fatalf("read after errors: %d", e)
	}
	if !bytes.Equal(c.read(4096), data[200<<10:200<<10+4096]) {
		t.Fatal("data differs")
	}
}

func TestStructuredReadError(t *testing.T) {
	src := &memSource{data: randomData(64 << 10), failOff: 0, failLen: 1}
	_, path := startServer(t, []Export{{Name: "a", Source: src}}, Options{})
	c := dial(t, path)
	c.goExport("a", true, false)
	c.request(0, cmdRead, 1, 0, 4096, nil)
	ch := c.chunk()
	if code := chunkErr(t, ch); code != EIO {
		t.Errorf("error %d, want EIO", code)
	}
	if n := binary.BigEndian.Uint16(ch.payload[4:]); int(n) != len(ch.payload)-6 || !bytes.Contains(ch.payload[6:], []byte("corrupt")) {
		t.Errorf("error message %q", ch.payload[6:])
	}
}

func TestOptions(t *testing.T) {
	src := &memSource{data: randomData(4096)}
	_, path := startServer(t, []Export{{Name: "one", Source: src}, {Name: "two", Source: src}}, Options{})
	c := dial(t, path)
	c.greet(flagFixedNewstyle | flagNoZeroes)

	c.option(optList, nil)
	rs := c.replies()
	if len(rs) != 3 || string(rs[0].data[4:]) != "one" || string(rs[1].data[4:]) != "two" || rs[2].typ != repAck {
		t.Errorf("LIST: %+v", rs)
	}
	c.option(optList, []byte{1})
	if r := c.replies(); r[0].typ != repErrInvalid {
		t.Errorf("LIST with data: %+v", r)
	}
	c.option(optStartTLS, nil) // no TLS configured: refused by policy
	if r := c.replies(); len(r) != 1 || r[0].typ != repErrPolicy || r[0].opt != optStartTLS {
		t.Errorf("STARTTLS without TLS: %+v", r)
	}
	for _, o := range []uint32{optExtendedHeaders, 99} {
		c.option(o, nil)
		if r := c.replies(); len(r) != 1 || r[0].typ != repErrUnsup || r[0].opt != o {
			t.Errorf("%s: %+v", optionName(o), r)
		}
	}
	c.option(optInfo, infoData("nope"))
	if r := c.replies(); r[0].typ != repErrUnknown {
		t.Errorf("INFO unknown: %+v", r)
	}
	c.option(optGo, infoData("")) // "" is no export when there are two
	if r := c.replies(); r[0].typ != repErrUnknown {
		t.Errorf("GO default: %+v", r)
	}
	c.option(optInfo, []byte{0, 0, 0, 9, 'a'})
	if r := c.replies(); r[0].typ != repErrInvalid {
		t.Errorf("INFO malformed: %+v", r)
	}
	c.option(optSetMetaContext, metaData("one", metaBaseAllocation))
	if r := c.replies(); r[0].typ != repErrInvalid {
		t.Errorf("SET_META_CONTEXT before STRUCTURED_REPLY: %+v", r)
	}
	c.option(optStructuredReply, nil)
	c.replies()
	c.option(optListMetaContext, metaData("one"))
	if r := c.replies(); len(r) != 2 || string(r[0].data[4:]) != metaBaseAllocation {
		t.Errorf("LIST_META_CONTEXT: %+v", r)
	}
	c.option(optListMetaContext, metaData("one", "base:"))
	if r := c.replies(); len(r) != 2 || r[0].typ != repMetaContext {
		t.Errorf("LIST_META_CONTEXT base: %+v", r)
	}
	c.option(optSetMetaContext, metaData("one", "qemu:dirty-bitmap:x", "base:"))
	if r := c.replies(); len(r) != 1 || r[0].typ != repAck {
		t.Errorf("SET_META_CONTEXT nothing: %+v", r)
	}
	c.option(optInfo, infoData("two"))
	rs = c.replies()
	if rs[len(rs)-1].typ != repAck {
		t.Errorf("INFO: %+v", rs)
	}
	// a big option is refused with TOO_BIG, then the session goes on
	c.option(optInfo, make([]byte, maxOptionLen+1))
	if r := c.replies(); r[0].typ != repErrTooBig {
		t.Errorf("big option: %+v", r)
	}
	c.option(optAbort, nil)
	if r := c.replies(); r[0].typ != repAck {
		t.Errorf("ABORT: %+v", r)
	}
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Errorf("after ABORT: %v", err)
	}
}

func TestExportName(t *testing.T) {
	data := randomData(8192)
	_, path := startServer(t, []Export{{Name: "x", Source: &memSource{data: data}}}, Options{})
	for _, nz := range []bool{false, true} {
		c := dial(t, path)
		f := uint32(flagFixedNewstyle)
		if nz {
			f |= flagNoZeroes
		}
		c.greet(f)
		c.option(optExportName, []byte("")) // the only export is the default
		b := c.read(10)
		if binary.BigEndian.Uint64(b) != 8192 || binary.BigEndian.Uint16(b[8:]) != 0x507 {
			t.Errorf("EXPORT_NAME reply % x", b)
		}
		if !nz && !bytes.Equal(c.read(124), make([]byte, 124)) {
			t.Error("no zero padding")
		}
		c.request(0, cmdRead, 7, 4096, 4096, nil)
		if e, ck := c.simpleReply(); e != 0 || ck != 7 || !bytes.Equal(c.read(4096), data[4096:]) {
			t.Errorf("read after EXPORT_NAME: %d %d", e, ck)
		}
	}
	// an unknown export name ends the connection
	c := dial(t, path)
	c.greet(flagFixedNewstyle)
	c.option(optExportName, []byte("nope"))
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Errorf("unknown EXPORT_NAME: %v", err)
	}
	// unknown client flags end the connection
	c = dial(t, path)
	c.greet(1 << 7)
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Errorf("bad client flags: %v", err)
	}
}

// Requests on one connection are served concurrently and answered as they
// finish: a slow request does not hold back a fast one.
func TestConcurrentOutOfOrder(t *testing.T) {
	data := randomData(4 << 20)
	src := &memSource{data: data, delay: func(off int64) time.Duration {
		if off == 0 {
			return 300 * time.Millisecond
		}
		return 0
	}}
	_, path := startServer(t, []Export{{Name: "a", Source: src}}, Options{})
	c := dial(t, path)
	c.goExport("a", true, false)
	c.request(0, cmdRead, 1, 0, 4096, nil)
	const n = 200
	for i := 1; i <= n; i++ {
		c.request(0, cmdRead, uint64(1+i), uint64(i)*16384, 16384, nil)
	}
	seen := map[uint64]bool{}
	for i := 0; i <= n; i++ {
		ch := c.chunk()
		if seen[ch.cookie] {
			t.Fatalf("cookie %d answered twice", ch.cookie)
		}
		seen[ch.cookie] = true
		off := binary.BigEndian.Uint64(ch.payload)
		if !bytes.Equal(ch.payload[8:], data[off:off+uint64(len(ch.payload)-8)]) {
			t.Fatalf("cookie %d: data differs", ch.cookie)
		}
		if i == 0 && ch.cookie == 1 {
			t.Error("the slow request was answered first")
		}
	}
	if !seen[1] || len(seen) != n+1 {
		t.Errorf("answered %d requests", len(seen))
	}
}

// A client that vanishes mid-request cancels the request; the server
// goes on serving others.
func TestClientVanishes(t *testing.T) {
	started := make(chan struct{}, 1)
	cancelled := make(chan struct{}, 1)
	src := &blockingSource{started: started, cancelled: cancelled}
	_, path := startServer(t, []Export{{Name: "a", Source: src}}, Options{})
	c := dial(t, path)
	c.goExport("a", false, false)
	c.request(0, cmdRead, 1, 0, 4096, nil)
	<-started
	c.c.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the read was not cancelled when the client went away")
	}
	c = dial(t, path)
	c.goExport("a", false, false)
	c.request(0, cmdFlush, 1, 0, 0, nil)
	if e, _ := c.simpleReply(); e != 0 {
		t.Errorf("flush: %d", e)
	}
}

type blockingSource struct{ started, cancelled chan struct{} }

func (b *blockingSource) Size() int64 { return 1 << 20 }
func (b *blockingSource) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	b.started <- struct{}{}
	<-ctx.Done()
	b.cancelled <- struct{}{}
	return 0, ctx.Err()
}

func TestMaxConnections(t *testing.T) {
	src := &memSource{data: randomData(4096)}
	_, path := startServer(t, []Export{{Name: "a", Source: src}}, Options{MaxConnections: 1})
	c1 := dial(t, path)
	c1.goExport("a", false, false)
	c2 := dial(t, path)
	c2.greet(flagFixedNewstyle)
	c2.option(optGo, infoData("a"))
	r := c2.replies()
	if r[0].typ != repErrPolicy || !bytes.Contains(r[0].data, []byte("too many connections")) {
		t.Errorf("second connection: %+v", r)
	}
	c2.c.Close()
	c1.request(0, cmdDisc, 1, 0, 0, nil)
	c1.br.ReadByte()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c3 := dial(t, path)
		c3.greet(flagFixedNewstyle)
		c3.option(optGo, infoData("a"))
		if rs := c3.replies(); rs[len(rs)-1].typ == repAck {
			break
		}
		c3.c.Close()
		if time.Now().After(deadline) {
			t.Fatal("a slot never freed up")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServeTransmissionSocketpair(t *testing.T) {
	data := randomData(1 << 20)
	s, err := NewServer([]Export{{Name: "k", Source: &memSource{data: data}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		conns[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- s.ServeTransmission(context.Background(), conns[0], "k") }()
	c := &client{t: t, c: conns[1], br: bufio.NewReader(conns[1])}
	defer c.c.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the kernel keeps many requests in flight
		defer wg.Done()
		for i := 0; i < 128; i++ {
			c.request(0, cmdRead, uint64(i), uint64(i)*8192, 8192, nil)
		}
	}()
	for i := 0; i < 128; i++ {
		e, ck := c.simpleReply()
		if e != 0 || !bytes.Equal(c.read(8192), data[ck*8192:ck*8192+8192]) {
			t.Fatalf("reply %d: error %d or data differs", ck, e)
		}
	}
	wg.Wait()
	c.request(0, cmdDisc, 0, 0, 0, nil)
	if err := <-done; err != nil {
		t.Errorf("ServeTransmission: %v", err)
	}
}

func TestAllocation(t *testing.T) {
	x := &export{srcSize: 10000, size: 10240}
	src := &memSource{data: make([]byte, 10000), zeros: []Extent{{0, 1000, true}, {1000, 2000, false}, {3000, 7000, true}}}
	x.Source, x.extenter = src, src
	b, err := x.allocation(nil, 0, 10240, false)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := descriptors(b), [][2]uint32{{512, 3}, {3072 - 512, 0}, {10240 - 3072, 3}}; !equalDescs(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	b, _ = x.allocation(nil, 512, 1024, true)
	if got := descriptors(b); !equalDescs(got, [][2]uint32{{1024, 0}}) {
		t.Errorf("REQ_ONE got %v", got)
	}
	b, _ = x.allocation(nil, 4096, 1024, false)
	if got := descriptors(b); !equalDescs(got, [][2]uint32{{1024, 3}}) {
		t.Errorf("inside a zero run got %v", got)
	}
	x.extenter = nil
	b, _ = x.allocation(nil, 0, 10240, false)
	if got := descriptors(b); !equalDescs(got, [][2]uint32{{10240, 0}}) {
		t.Errorf("no extenter got %v", got)
	}
}

func TestErrorCode(t *testing.T) {
	for _, c := range []struct {
		err  error
		want uint32
	}{
		{nil, 0},
		{invalidf("x"), EINVAL},
		{ErrReadOnly, EPERM},
		{context.Canceled, ESHUTDOWN},
		{fmt.Errorf("fetching: %w", context.Canceled), ESHUTDOWN},
		{errors.Join(errors.New("http timeout"), context.DeadlineExceeded), EIO},
		{errors.New("chunk not found"), EIO},
		{io.ErrUnexpectedEOF, EIO},
	} {
		if got := ErrorCode(c.err); got != c.want {
			t.Errorf("ErrorCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

func TestPreferredSize(t *testing.T) {
	for n, want := range map[int64]uint32{0: 4096, 5000: 4096, 65536: 65536, 100000: 65536, 1 << 30: 2 << 20} {
		if got := preferredSize(n); got != want {
			t.Errorf("preferredSize(%d) = %d, want %d", n, got, want)
		}
	}
}

// sliceSource hands out its bytes as slices of at most 3000 bytes (a
// chunked cache), declines ranges touching [cold, cold+coldLen), and gives
// each connection a view that counts opens and closes.
type sliceSource struct {
	*memSource
	cold, coldLen int64
	sliced        atomic.Int64
	opened        atomic.Int64
	closed        atomic.Int64
}

func (s *sliceSource) Slices(ctx context.Context, dst [][]byte, off int64, n int) ([][]byte, bool, error) {
	end := off + int64(n)
	if off < s.cold+s.coldLen && end > s.cold {
		return dst, false, nil
	}
	for off < end {
		e := min(end, (off/3000+1)*3000)
		dst = append(dst, s.data[off:e])
		off = e
	}
	s.sliced.Add(1)
	return dst, true, nil
}

type sliceView struct{ *sliceSource }

func (v sliceView) Close() error { v.closed.Add(1); return nil }

func (s *sliceSource) ConnSource() Source {
	s.opened.Add(1)
	return sliceView{s}
}

func TestSlicerAndConnSource(t *testing.T) {
	data := randomData(1<<20 + 300)
	src := &sliceSource{memSource: &memSource{data: data}, cold: 512 << 10, coldLen: 1}
	_, path := startServer(t, []Export{{Name: "s", Source: src}}, Options{})
	for _, structured := range []bool{false, true} {
		c := dial(t, path)
		c.goExport("s", structured, false)
		padded := make([]byte, 1<<20+512)
		copy(padded, data)
		reads := []struct{ off, n uint64 }{{0, 4096}, {4096, 65536}, {0, 1 << 20}, {500 << 10, 64 << 10}, {1<<20 - 4096, 4096 + 512}, {1 << 20, 512}, {12288, 512}}
		for i, rd := range reads {
			c.request(0, cmdRead, uint64(i), rd.off, uint32(rd.n), nil)
		}
		for range reads {
			ch := c.anyReply(func(cookie uint64) int { return int(reads[cookie].n) })
			rd := reads[ch.cookie]
			got := ch.payload
			if structured {
				if ch.typ != replyTypeOffsetData || binary.BigEndian.Uint64(got) != rd.off {
					t.Fatalf("read %+v: chunk type %d", rd, ch.typ)
				}
				got = got[8:]
			}
			if !bytes.Equal(got, padded[rd.off:rd.off+rd.n]) {
				t.Errorf("structured=%v read %+v: data differs", structured, rd)
			}
		}
		c.request(0, cmdDisc, 99, 0, 0, nil)
		c.br.ReadByte()
	}
	if src.sliced.Load() == 0 {
		t.Error("the slice path was never taken")
	}
	deadline := time.Now().Add(5 * time.Second)
	for src.closed.Load() != 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if src.opened.Load() != 2 || src.closed.Load() != 2 {
		t.Errorf("views opened %d closed %d, want 2 and 2", src.opened.Load(), src.closed.Load())
	}
}

// A client that never finishes the handshake is dropped after
// HandshakeTimeout; one that is in transmission is not.
func TestHandshakeTimeout(t *testing.T) {
	src := &memSource{data: randomData(4096)}
	_, path := startServer(t, []Export{{Name: "a", Source: src}}, Options{HandshakeTimeout: 200 * time.Millisecond})
	idle := dial(t, path)
	idle.read(18) // greeting, then silence
	start := time.Now()
	if _, err := idle.br.ReadByte(); err != io.EOF {
		t.Errorf("idle client: %v, want EOF", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("dropped after %v", d)
	}
	c := dial(t, path)
	c.goExport("a", true, false)
	time.Sleep(400 * time.Millisecond)
	c.request(0, cmdRead, 1, 0, 512, nil)
	if ch := c.chunk(); ch.typ != replyTypeOffsetData {
		t.Errorf("read after an idle pause in transmission: %+v", ch)
	}
}

// Cancelling Serve ends connected clients (their in-flight reads see a
// cancelled context) and returns.
func TestServeShutdown(t *testing.T) {
	started := make(chan struct{}, 1)
	cancelled := make(chan struct{}, 1)
	s, err := NewServer([]Export{{Name: "a", Source: &blockingSource{started: started, cancelled: cancelled}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	c := dial(t, path)
	c.goExport("a", false, false)
	c.request(0, cmdRead, 1, 0, 4096, nil)
	<-started
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	<-cancelled
	// at most an ESHUTDOWN reply, then EOF
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := io.Copy(io.Discard, c.br); err != nil || n > 16 {
		t.Errorf("after shutdown: %d bytes, %v; want at most a reply, then EOF", n, err)
	}
}

type cancelledInside struct{ memSource }

func (c *cancelledInside) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return 0, fmt.Errorf("fetch gave up: %w", context.Canceled)
}

// A cancellation from inside the source (not the server closing) is an EIO.
func TestCancelInsideSourceIsEIO(t *testing.T) {
	src := &cancelledInside{memSource{data: make([]byte, 4096)}}
	_, path := startServer(t, []Export{{Name: "a", Source: src}}, Options{})
	c := dial(t, path)
	c.goExport("a", false, false)
	c.request(0, cmdRead, 1, 0, 512, nil)
	if e, _ := c.simpleReply(); e != EIO {
		t.Errorf("error %d, want EIO", e)
	}
}

// A client that did not ask for block sizes in GO (nbd-client does not)
// is not held to them: an unaligned read is served.
func TestUnalignedWithoutBlockSizeRequest(t *testing.T) {
	data := randomData(8192)
	_, path := startServer(t, []Export{{Name: "a", Source: &memSource{data: data}}}, Options{})
	c := dial(t, path)
	c.greet(flagFixedNewstyle | flagNoZeroes)
	c.option(optGo, infoData("a")) // no information requests
	if rs := c.replies(); rs[len(rs)-1].typ != repAck {
		t.Fatalf("GO: %+v", rs)
	}
	c.request(0, cmdRead, 1, 100, 1000, nil)
	if e, _ := c.simpleReply(); e != 0 {
		t.Fatalf("unaligned read: error %d", e)
	}
	if !bytes.Equal(c.read(1000), data[100:1100]) {
		t.Error("data differs")
	}
}

// readStructured reads the chunks of one structured READ reply (until
// DONE) and reassembles them; it returns the data and the chunk types.
func (c *client) readStructured(t *testing.T, cookie, off uint64, n int) ([]byte, []uint16) {
	t.Helper()
	out := make([]byte, n)
	covered := make([]bool, n)
	var types []uint16
	for {
		ch := c.chunk()
		if ch.cookie != cookie {
			t.Fatalf("chunk for cookie %d, want %d", ch.cookie, cookie)
		}
		types = append(types, ch.typ)
		var s, l uint64
		switch ch.typ {
		case replyTypeOffsetData:
			s, l = binary.BigEndian.Uint64(ch.payload)-off, uint64(len(ch.payload)-8)
			copy(out[s:], ch.payload[8:])
		case replyTypeOffsetHole:
			if len(ch.payload) != 12 {
				t.Fatalf("hole chunk of %d bytes", len(ch.payload))
			}
			s, l = binary.BigEndian.Uint64(ch.payload)-off, uint64(binary.BigEndian.Uint32(ch.payload[8:]))
		default:
			t.Fatalf("chunk type %#x", ch.typ)
		}
		if s+l > uint64(n) {
			t.Fatalf("chunk [%d, %d) outside the request of %d", s, s+l, n)
		}
		for i := s; i < s+l; i++ {
			if covered[i] {
				t.Fatalf("byte %d sent twice", i)
			}
			covered[i] = true
		}
		if ch.flags&replyFlagDone != 0 {
			break
		}
	}
	for i, ok := range covered {
		if !ok {
			t.Fatalf("byte %d not covered", i)
		}
	}
	return out, types
}

// Structured reads of at least 128 KiB send zero chunks as holes.
func TestReadHoles(t *testing.T) {
	data := randomData(3<<20 + 100)
	zeros := []Extent{{Offset: 1000, Length: 300000, Zero: true}, {Offset: 400000, Length: 2000, Zero: true}, {Offset: 1 << 20, Length: 1 << 20, Zero: true}, {Offset: 3 << 20, Length: 100, Zero: true}}
	for _, z := range zeros {
		clear(data[z.Offset : z.Offset+z.Length])
	}
	padded := append(append([]byte{}, data...), make([]byte, 412)...)
	mem := &memSource{data: data, zeros: zeros}
	for _, src := range []Source{mem, &sliceSource{memSource: mem, cold: -1}} {
		_, path := startServer(t, []Export{{Name: "a", Source: src}}, Options{})
		c := dial(t, path)
		c.goExport("a", true, false)
		count := func(types []uint16, typ uint16) int {
			k := 0
			for _, x := range types {
				if x == typ {
					k++
				}
			}
			return k
		}
		// data, hole (1000..301000), data incl. a 2000-byte zero run (too short), ...
		c.request(0, cmdRead, 1, 0, 1<<20, nil)
		got, types := c.readStructured(t, 1, 0, 1<<20)
		if !bytes.Equal(got, padded[:1<<20]) || count(types, replyTypeOffsetHole) != 1 || count(types, replyTypeOffsetData) != 2 {
			t.Errorf("%T: read with a hole: chunk types %v, data equal %v", src, types, bytes.Equal(got, padded[:1<<20]))
		}
		// entirely inside a zero run: one hole chunk
		c.request(0, cmdRead, 2, 1<<20, 512<<10, nil)
		if _, types := c.readStructured(t, 2, 1<<20, 512<<10); len(types) != 1 || types[0] != replyTypeOffsetHole {
			t.Errorf("%T: all-zero read: chunk types %v", src, types)
		}
		// the end: a zero run reaching the source's end covers the padding
		c.request(0, cmdRead, 3, 3<<20-(256<<10), 256<<10+512, nil)
		got, _ = c.readStructured(t, 3, 3<<20-(256<<10), 256<<10+512)
		if !bytes.Equal(got, padded[3<<20-(256<<10):]) {
			t.Errorf("%T: tail read differs", src)
		}
		// DF: one data chunk with the zeros in it
		c.request(cmdFlagDF, cmdRead, 4, 0, 1<<20, nil)
		if got, types := c.readStructured(t, 4, 0, 1<<20); len(types) != 1 || types[0] != replyTypeOffsetData || !bytes.Equal(got, padded[:1<<20]) {
			t.Errorf("%T: DF read: chunk types %v", src, types)
		}
	}
}
