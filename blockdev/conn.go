package blockdev

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net"
	"sync"
)

// conn is one connection in the transmission phase.
//
// One goroutine (serve) reads requests; READ and CACHE run in their own
// goroutines, bounded by budget, and reply as they finish. Replies are
// written whole under wmu, so they never interleave on the socket.
type conn struct {
	ctx    context.Context // cancelled when the connection ends
	cancel context.CancelFunc
	s      *Server
	nc     net.Conn
	br     *bufio.Reader
	st     *session
	x      *export
	src    Source // the export's source, or this connection's view of it
	slicer Slicer // src's, if it has one
	log    *slog.Logger
	wg     sync.WaitGroup // request goroutines
	bud    budget
	hdr    [requestSize]byte // request header, used by serve only
	bsBuf  []byte            // block status scratch, used by serve only

	wmu     sync.Mutex // guards the fields below and writes to nc
	werr    error      // first write error; later replies are dropped
	wbuf    []byte     // a small reply, header and data together
	vec     [][]byte   // header and data of a large reply (writev)
	rhdr    [32]byte   // reply header scratch
	smallSz int
}

func newConn(ctx context.Context, cancel context.CancelFunc, s *Server, nc net.Conn, br *bufio.Reader, st *session, log *slog.Logger) *conn {
	c := &conn{ctx: ctx, cancel: cancel, s: s, nc: nc, br: br, st: st, x: st.exp, log: log, smallSz: 16 << 10}
	c.bud.init(s.opt.MaxInFlight, s.opt.MaxInFlightBytes)
	c.wbuf = make([]byte, 0, c.smallSz+64)
	c.src = c.x.Source
	if cs, ok := c.src.(ConnSourcer); ok {
		c.src = cs.ConnSource()
	}
	c.slicer, _ = c.src.(Slicer)
	return c
}

// close releases the connection's view of the source.
func (c *conn) close() {
	if c.src != c.x.Source {
		if cl, ok := c.src.(io.Closer); ok {
			cl.Close()
		}
	}
}

// serve reads and dispatches requests until DISC, an error or ctx ends.
func (c *conn) serve() error {
	defer c.close()
	for {
		if _, err := io.ReadFull(c.br, c.hdr[:]); err != nil {
			c.cancel()
			c.wg.Wait()
			if c.ctx.Err() != nil && !errors.Is(err, io.EOF) {
				return nil // server shutdown or write failure closed the socket
			}
			if errors.Is(err, io.EOF) {
				c.log.Debug("nbd: client disconnected without NBD_CMD_DISC")
				return nil
			}
			return fmt.Errorf("nbd: reading request: %w", err)
		}
		r, err := parseRequest(c.hdr[:])
		if err != nil {
			c.cancel()
			c.wg.Wait()
			c.log.Warn("nbd: protocol error, disconnecting", "err", err)
			return fmt.Errorf("nbd: %w", err)
		}
		done, err := c.dispatch(r)
		if err != nil || done {
			if err != nil {
				c.cancel()
			}
			c.wg.Wait() // DISC: finish in-flight requests first
			return err
		}
	}
}

// dispatch handles one request; done reports NBD_CMD_DISC.
func (c *conn) dispatch(r request) (done bool, err error) {
	switch r.typ {
	case cmdRead:
		allowed := uint16(0)
		if c.st.structured {
			allowed = cmdFlagDF
		}
		if err := c.check(r, allowed, true); err != nil {
			return false, c.fail(r, err)
		}
		if r.length == 0 {
			return false, c.ok(r, nil)
		}
		// A small read of cached data, with no further request waiting,
		// is answered from this goroutine (no handoff: QD1 latency); all
		// else runs in its own goroutine. The reply fits in the socket
		// buffer, so this goroutine does not wait on a client that
		// reads replies only after sending requests.
		if c.slicer != nil && r.length <= inlineMax && c.br.Buffered() == 0 && c.readSlices(r, nil) {
			return false, c.writeErr()
		}
		n := int(r.length)
		c.bud.acquire(n)
		c.s.bud.acquire(n) // the server's bound over all connections
		c.wg.Add(1)
		go c.read(r)
		return false, nil

	case cmdWrite:
		if r.length > maxWritePayload {
			return false, fmt.Errorf("nbd: WRITE of %d bytes is larger than %d, disconnecting", r.length, maxWritePayload)
		}
		if _, err := io.CopyN(io.Discard, c.br, int64(r.length)); err != nil {
			return false, fmt.Errorf("nbd: reading WRITE payload: %w", err)
		}
		return false, c.writeCmd(r)

	case cmdTrim, cmdWriteZeroes:
		return false, c.writeCmd(r)

	case cmdFlush:
		if err := c.checkFlags(r, 0); err != nil {
			return false, c.fail(r, err)
		}
		return false, c.ok(r, nil)

	case cmdCache:
		if err := c.check(r, 0, false); err != nil {
			return false, c.fail(r, err)
		}
		if c.x.prefetch != nil {
			if r.length > 0 {
				c.x.prefetch.Prefetch(int64(r.offset), int64(r.length))
			}
			return false, c.ok(r, nil)
		}
		c.bud.acquire(cacheChunk)
		c.wg.Add(1)
		go c.cacheByReading(r)
		return false, nil

	case cmdBlockStatus:
		if err := c.checkFlags(r, cmdFlagReqOne); err != nil {
			return false, c.fail(r, err)
		}
		if !c.st.structured || !c.st.metaAlloc {
			return false, c.fail(r, invalidf("BLOCK_STATUS without the base:allocation metadata context"))
		}
		if err := c.check(r, cmdFlagReqOne, false); err != nil {
			return false, c.fail(r, err)
		}
		if r.length == 0 {
			return false, c.fail(r, invalidf("BLOCK_STATUS of length 0"))
		}
		var aerr error
		c.bsBuf, aerr = c.x.allocation(c.bsBuf[:0], int64(r.offset), int64(r.length), r.flags&cmdFlagReqOne != 0)
		if aerr != nil {
			return false, c.fail(r, aerr)
		}
		return false, c.blockStatus(r.cookie, c.bsBuf)

	case cmdDisc:
		return true, nil
	}
	return false, c.fail(r, invalidf("unknown %s", commandName(r.typ)))
}

// writeCmd answers WRITE, TRIM and WRITE_ZEROES on the read-only export.
func (c *conn) writeCmd(r request) error {
	if err := c.checkFlags(r, cmdFlagFUA|cmdFlagNoHole|cmdFlagFastZero); err != nil {
		return c.fail(r, err)
	}
	return c.fail(r, ErrReadOnly)
}

func (c *conn) checkFlags(r request, allowed uint16) error {
	if r.flags&^allowed != 0 {
		return invalidf("%s with unsupported flags 0x%x", commandName(r.typ), r.flags&^allowed)
	}
	return nil
}

// check validates flags, range and (for a client that asked for block
// sizes) alignment; payload limits the length to MaxPayload.
func (c *conn) check(r request, allowed uint16, payload bool) error {
	if err := c.checkFlags(r, allowed); err != nil {
		return err
	}
	size := uint64(c.x.size)
	if r.offset > size || uint64(r.length) > size-r.offset {
		return invalidf("%s of %d bytes at offset %d is beyond the end of the export (%d bytes)", commandName(r.typ), r.length, r.offset, size)
	}
	if payload && r.length > MaxPayload {
		return invalidf("%s of %d bytes is larger than the maximum payload %d", commandName(r.typ), r.length, MaxPayload)
	}
	if c.st.strict && (r.offset|uint64(r.length))%MinBlockSize != 0 {
		return invalidf("%s of %d bytes at offset %d is not aligned to %d bytes", commandName(r.typ), r.length, r.offset, MinBlockSize)
	}
	return nil
}

// inlineMax bounds the READs the request loop answers itself from a
// Slicer's buffers.
const inlineMax = 64 << 10

// writeErr returns the connection's write error, if any.
func (c *conn) writeErr() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.werr
}

func (c *conn) read(r request) {
	defer c.wg.Done()
	n := int(r.length)
	defer c.bud.release(n)
	defer c.s.bud.release(n)
	holes := c.zeroRuns(r)
	if len(holes) == 1 && holes[0] == [2]int64{0, int64(n)} {
		// all zeros: one hole chunk, nothing to fetch
		var pre [12]byte
		binary.BigEndian.PutUint64(pre[:], r.offset)
		binary.BigEndian.PutUint32(pre[8:], r.length)
		c.structured(r.cookie, replyTypeOffsetHole, pre[:], nil)
		return
	}
	if c.slicer != nil && c.readSlices(r, holes) {
		return
	}
	bp := getBuf(n)
	defer putBuf(bp)
	buf := (*bp)[:n]
	if err := c.x.readAt(c.ctx, c.src, buf, int64(r.offset)); err != nil {
		c.fail(r, err)
		return
	}
	if holes != nil {
		c.okHoles(r, [][]byte{buf}, holes)
		return
	}
	c.ok(r, buf)
}

// Structured READ replies of at least holeReadMin bytes send the zero
// runs (zero chunks) of at least holeMin bytes as OFFSET_HOLE chunks.
const (
	holeReadMin = 128 << 10
	holeMin     = 4096
)

// zeroRuns returns the zero runs of a READ worth sending as holes, as
// [start, end) relative to the request's offset, or nil.
func (c *conn) zeroRuns(r request) [][2]int64 {
	if !c.st.structured || r.flags&cmdFlagDF != 0 || c.x.extenter == nil || r.length < holeReadMin {
		return nil
	}
	off := int64(r.offset)
	end := off + int64(r.length)
	qend := min(end, c.x.srcSize)
	if off >= qend {
		return nil
	}
	exts, err := c.x.extenter.Extents(off, qend-off)
	if err != nil {
		return nil
	}
	var runs [][2]int64
	pos := off
	for _, e := range exts {
		if !e.Zero || e.Length <= 0 {
			continue
		}
		s, t := max(e.Offset, pos), min(e.Offset+e.Length, end)
		if e.Offset+e.Length >= c.x.srcSize {
			t = end // the padding past the source is zeros too
		}
		if t-s >= holeMin {
			runs = append(runs, [2]int64{s - off, t - off})
			pos = t
		}
	}
	return runs
}

// zeroPad backs the padding past the source's end (less than 512 bytes).
var zeroPad [MinBlockSize]byte

var vecPool = sync.Pool{New: func() any { v := make([][]byte, 0, 16); return &v }}

// readSlices answers a READ from the source's own buffers (Slicer), with
// holes for the zero runs given; it returns false, having sent nothing,
// when the source declines.
func (c *conn) readSlices(r request, holes [][2]int64) bool {
	vp := vecPool.Get().(*[][]byte)
	defer func() { clear(*vp); *vp = (*vp)[:0]; vecPool.Put(vp) }()
	off, n := int64(r.offset), int64(r.length)
	m := max(min(n, c.x.srcSize-off), 0)
	v := (*vp)[:0]
	if m > 0 {
		var ok bool
		var err error
		v, ok, err = c.slicer.Slices(c.ctx, v, off, int(m))
		*vp = v
		if err != nil {
			c.fail(r, err)
			return true
		}
		if !ok {
			return false
		}
		got := int64(0)
		for _, b := range v {
			got += int64(len(b))
		}
		if got != m {
			c.fail(r, fmt.Errorf("source sliced %d bytes for a read of %d at offset %d", got, m, off))
			return true
		}
	}
	if n > m {
		v = append(v, zeroPad[:n-m])
		*vp = v
	}
	if holes != nil {
		c.okHoles(r, v, holes)
		return true
	}
	c.okVec(r, v)
	return true
}

// okHoles sends a structured READ reply as OFFSET_DATA chunks for the data
// in v (the whole range) and OFFSET_HOLE chunks for the zero runs, in
// order, the last one flagged DONE.
func (c *conn) okHoles(r request, v [][]byte, holes [][2]int64) error {
	n := int64(r.length)
	type seg struct {
		hole bool
		s, e int64
	}
	segs := make([]seg, 0, 2*len(holes)+1)
	pos := int64(0)
	for _, h := range holes {
		if h[0] > pos {
			segs = append(segs, seg{false, pos, h[0]})
		}
		segs = append(segs, seg{true, h[0], h[1]})
		pos = h[1]
	}
	if pos < n {
		segs = append(segs, seg{false, pos, n})
	}
	hdrs := make([]byte, 0, 32*len(segs)) // never reallocated: vec points into it
	vec := make([][]byte, 0, len(v)+2*len(segs))
	for i, sg := range segs {
		flags := uint16(0)
		if i == len(segs)-1 {
			flags = replyFlagDone
		}
		start := len(hdrs)
		hdrs = binary.BigEndian.AppendUint32(hdrs, structReplyMagic)
		hdrs = binary.BigEndian.AppendUint16(hdrs, flags)
		if sg.hole {
			hdrs = binary.BigEndian.AppendUint16(hdrs, replyTypeOffsetHole)
			hdrs = binary.BigEndian.AppendUint64(hdrs, r.cookie)
			hdrs = binary.BigEndian.AppendUint32(hdrs, 12)
			hdrs = binary.BigEndian.AppendUint64(hdrs, r.offset+uint64(sg.s))
			hdrs = binary.BigEndian.AppendUint32(hdrs, uint32(sg.e-sg.s))
			vec = append(vec, hdrs[start:])
			continue
		}
		hdrs = binary.BigEndian.AppendUint16(hdrs, replyTypeOffsetData)
		hdrs = binary.BigEndian.AppendUint64(hdrs, r.cookie)
		hdrs = binary.BigEndian.AppendUint32(hdrs, uint32(8+sg.e-sg.s))
		hdrs = binary.BigEndian.AppendUint64(hdrs, r.offset+uint64(sg.s))
		vec = append(vec, hdrs[start:])
		vec = appendRange(vec, v, sg.s, sg.e)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	bufs := net.Buffers(vec)
	if _, err := bufs.WriteTo(c.nc); err != nil {
		c.werr = fmt.Errorf("nbd: writing reply: %w", err)
		c.cancel()
		return c.werr
	}
	return nil
}

// appendRange appends to dst the parts of v (buffers laid end to end)
// that cover [s, e).
func appendRange(dst, v [][]byte, s, e int64) [][]byte {
	pos := int64(0)
	for _, b := range v {
		bs, be := pos, pos+int64(len(b))
		pos = be
		if be <= s {
			continue
		}
		if bs >= e {
			break
		}
		dst = append(dst, b[max(s, bs)-bs:min(e, be)-bs])
	}
	return dst
}

const cacheChunk = 1 << 20

// cacheByReading serves CACHE for a source without Prefetcher by reading
// the range (so a caching source keeps it) and discarding the bytes.
func (c *conn) cacheByReading(r request) {
	defer c.wg.Done()
	defer c.bud.release(cacheChunk)
	bp := getBuf(cacheChunk)
	defer putBuf(bp)
	off, end := int64(r.offset), int64(r.offset)+int64(r.length)
	for off < end {
		n := min(end-off, cacheChunk)
		if err := c.x.readAt(c.ctx, c.src, (*bp)[:n], off); err != nil {
			c.fail(r, err)
			return
		}
		off += n
	}
	c.ok(r, nil)
}

// ok sends a successful reply: data for READ (a structured OFFSET_DATA
// chunk or a simple reply with data), or an empty success.
func (c *conn) ok(r request, data []byte) error {
	if r.typ == cmdRead && c.st.structured {
		if len(data) == 0 {
			return c.structured(r.cookie, replyTypeNone, nil, nil)
		}
		var off [8]byte
		binary.BigEndian.PutUint64(off[:], r.offset)
		return c.structured(r.cookie, replyTypeOffsetData, off[:], data)
	}
	return c.simple(r.cookie, 0, data)
}

// okVec is ok for READ data held in several buffers.
func (c *conn) okVec(r request, v [][]byte) error {
	var pre []byte
	var typ uint16
	var off [8]byte
	if c.st.structured {
		binary.BigEndian.PutUint64(off[:], r.offset)
		pre, typ = off[:], replyTypeOffsetData
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var h []byte
	if c.st.structured {
		h = c.structHeader(r.cookie, typ, pre, int(r.length))
	} else {
		h = c.simpleHeader(r.cookie, 0)
	}
	return c.writeVecLocked(h, v, int(r.length))
}

// fail sends an error reply for err (mapped by ErrorCode); READ and
// BLOCK_STATUS get a structured ERROR chunk with a message when
// structured replies are on.
func (c *conn) fail(r request, err error) error {
	code := ErrorCode(err)
	if code == ESHUTDOWN && c.ctx.Err() == nil {
		code = EIO // cancelled inside the source, not by us
	}
	switch code {
	case EIO:
		c.log.Warn("nbd: request failed", "cmd", commandName(r.typ), "offset", r.offset, "length", r.length, "err", err)
	case ESHUTDOWN:
	default:
		c.log.Debug("nbd: request refused", "cmd", commandName(r.typ), "offset", r.offset, "length", r.length, "err", err)
	}
	if c.st.structured && (r.typ == cmdRead || r.typ == cmdBlockStatus) {
		msg := err.Error()
		if len(msg) > maxStringLen {
			msg = msg[:maxStringLen]
		}
		var p [6]byte
		binary.BigEndian.PutUint32(p[:], code)
		binary.BigEndian.PutUint16(p[4:], uint16(len(msg)))
		return c.structured(r.cookie, replyTypeError, p[:], []byte(msg))
	}
	return c.simple(r.cookie, code, nil)
}

func (c *conn) blockStatus(cookie uint64, descs []byte) error {
	var id [4]byte
	binary.BigEndian.PutUint32(id[:], metaAllocationID)
	return c.structured(cookie, replyTypeBlockStatus, id[:], descs)
}

// simple writes a simple reply.
func (c *conn) simple(cookie uint64, code uint32, data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(c.simpleHeader(cookie, code), data)
}

// structured writes one structured reply chunk with the DONE flag: the
// fixed part of the payload (pre) followed by data.
func (c *conn) structured(cookie uint64, typ uint16, pre, data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(c.structHeader(cookie, typ, pre, len(data)), data)
}

// simpleHeader builds a simple reply header in the scratch. wmu held.
func (c *conn) simpleHeader(cookie uint64, code uint32) []byte {
	h := c.rhdr[:16]
	binary.BigEndian.PutUint32(h, simpleReplyMagic)
	binary.BigEndian.PutUint32(h[4:], code)
	binary.BigEndian.PutUint64(h[8:], cookie)
	return h
}

// structHeader builds a final structured chunk header followed by pre,
// for dataLen more bytes, in the scratch. wmu held.
func (c *conn) structHeader(cookie uint64, typ uint16, pre []byte, dataLen int) []byte {
	h := c.rhdr[:20+len(pre)]
	binary.BigEndian.PutUint32(h, structReplyMagic)
	binary.BigEndian.PutUint16(h[4:], replyFlagDone)
	binary.BigEndian.PutUint16(h[6:], typ)
	binary.BigEndian.PutUint64(h[8:], cookie)
	binary.BigEndian.PutUint32(h[16:], uint32(len(pre)+dataLen))
	copy(h[20:], pre)
	return h
}

// writeVecLocked writes a header and data held in several buffers (total
// bytes): small replies copied into one buffer, others with writev.
func (c *conn) writeVecLocked(h []byte, v [][]byte, total int) error {
	if c.werr != nil {
		return c.werr
	}
	if total <= c.smallSz {
		b := append(c.wbuf[:0], h...)
		for _, d := range v {
			b = append(b, d...)
		}
		return c.writeLocked(b, nil)
	}
	c.vec = append(append(c.vec[:0], h), v...)
	bufs := net.Buffers(c.vec)
	_, err := bufs.WriteTo(c.nc)
	clear(c.vec)
	if err != nil {
		c.werr = fmt.Errorf("nbd: writing reply: %w", err)
		c.cancel()
		return c.werr
	}
	return nil
}

// writeLocked writes header and data as one reply: small replies copied
// into one buffer, large ones with writev. The first error ends the
// connection.
func (c *conn) writeLocked(h, data []byte) error {
	if c.werr != nil {
		return c.werr
	}
	var err error
	switch {
	case len(data) == 0:
		_, err = c.nc.Write(h)
	case len(data) <= c.smallSz:
		b := append(append(c.wbuf[:0], h...), data...)
		_, err = c.nc.Write(b)
	default:
		c.vec = append(c.vec[:0], h, data)
		bufs := net.Buffers(c.vec)
		_, err = bufs.WriteTo(c.nc)
		clear(c.vec)
	}
	if err != nil {
		c.werr = fmt.Errorf("nbd: writing reply: %w", err)
		c.cancel()
		return c.werr
	}
	return nil
}

// readAt fills p from the export at off: source bytes, then zeros for the
// padding past the source's end.
func (x *export) readAt(ctx context.Context, src Source, p []byte, off int64) error {
	if off >= x.srcSize {
		clear(p)
		return nil
	}
	m := min(int64(len(p)), x.srcSize-off)
	n, err := src.ReadAtContext(ctx, p[:m], off)
	if int64(n) < m {
		if err == nil || errors.Is(err, io.EOF) {
			err = fmt.Errorf("short read of %d bytes at offset %d from a source of %d bytes: %w", n, off, x.srcSize, io.ErrUnexpectedEOF)
		}
		return err
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	clear(p[m:])
	return nil
}

// maxDescriptors bounds the descriptors of one BLOCK_STATUS reply (the
// server may describe less than asked; the client asks again).
const maxDescriptors = 1 << 16

// allocation appends base:allocation descriptors (u32 length, u32 flags)
// for [off, off+length) to dst. Zero runs are shrunk to 512-byte
// boundaries (the rest reported as data, which is always safe); a zero
// run reaching the source's end covers the padding too. With one, only
// the first descriptor is returned.
func (x *export) allocation(dst []byte, off, length int64, one bool) ([]byte, error) {
	end := off + length
	pos := off
	var last uint32 = 1 << 31 // flags of the last descriptor; none yet
	n := 0
	emit := func(to int64, flags uint32) bool {
		if to <= pos {
			return true
		}
		if n > 0 && flags == last && !one {
			i := len(dst) - 8
			binary.BigEndian.PutUint32(dst[i:], binary.BigEndian.Uint32(dst[i:])+uint32(to-pos))
		} else {
			if n >= maxDescriptors || one && n == 1 {
				return false
			}
			dst = binary.BigEndian.AppendUint32(dst, uint32(to-pos))
			dst = binary.BigEndian.AppendUint32(dst, flags)
			n++
			last = flags
		}
		pos = to
		return !one
	}
	if x.extenter != nil && off < x.srcSize {
		qend := min(end, x.srcSize)
		exts, err := x.extenter.Extents(off, qend-off)
		if err != nil {
			return dst, err
		}
		for _, e := range exts {
			if !e.Zero || e.Length <= 0 {
				continue
			}
			zs := (max(e.Offset, pos) + MinBlockSize - 1) &^ (MinBlockSize - 1)
			ze := (e.Offset + e.Length) &^ (MinBlockSize - 1)
			if e.Offset+e.Length >= x.srcSize {
				ze = x.size
			}
			ze = min(ze, end)
			if zs >= ze {
				continue
			}
			if !emit(zs, 0) || !emit(ze, stateHole|stateZero) {
				return dst, nil
			}
		}
	}
	emit(end, 0)
	return dst, nil
}

// budget bounds the requests (and their buffer bytes) in flight: one per
// connection, and one over all connections (Server.bud). Requests are let
// in first come, first served, so a large request waiting for room is not
// passed forever by small ones from other connections; one request is
// always let in when nothing is in flight, whatever its size.
type budget struct {
	mu             sync.Mutex
	cond           sync.Cond
	n, bytes       int
	maxN, maxBytes int
	next, turn     uint64 // tickets: the next to hand out, the one whose turn it is
}

func (b *budget) init(maxN, maxBytes int) {
	b.cond.L = &b.mu
	b.maxN, b.maxBytes = maxN, maxBytes
}

func (b *budget) acquire(size int) {
	b.mu.Lock()
	t := b.next
	b.next++
	for t != b.turn || b.n > 0 && (b.n >= b.maxN || b.bytes+size > b.maxBytes) {
		b.cond.Wait()
	}
	b.turn++
	b.n++
	b.bytes += size
	b.mu.Unlock()
	b.cond.Broadcast() // the next in line may fit too
}

func (b *budget) release(size int) {
	b.mu.Lock()
	b.n--
	b.bytes -= size
	b.mu.Unlock()
	b.cond.Broadcast()
}

// Read buffers come from pools by power-of-two size class, 4 KiB to
// MaxPayload, so steady-state reads allocate nothing.
const minBufShift = 12

var bufPools [26 - minBufShift]sync.Pool // classes 4 KiB … 32 MiB (MaxPayload)

func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

func getBuf(n int) *[]byte {
	k := bufClass(n)
	if v := bufPools[k].Get(); v != nil {
		return v.(*[]byte)
	}
	b := make([]byte, 1<<(k+minBufShift))
	return &b
}

func putBuf(b *[]byte) {
	bufPools[bufClass(cap(*b))].Put(b)
}
