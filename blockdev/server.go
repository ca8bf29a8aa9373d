// Package blockdev serves read-only block devices: an NBD server (fixed
// newstyle protocol) over any Source, and later kernel attachment of such
// a server to /dev/nbdN. It depends only on the standard library and
// golang.org/x/sys; it never knows where the bytes come from.
//
// # Contract
//
// A Source must be safe for concurrent use: the server calls
// ReadAtContext from many goroutines at once (requests on one connection
// are served concurrently and answered as they finish, matched by
// cookie). The ctx passed in is cancelled when the client goes away or
// the server shuts down. Any error other than a context error is reported
// to the client as EIO; a short read without error is an EIO too.
//
// A Source may also implement Extenter (for the base:allocation metadata
// context: zero runs are reported as HOLE|ZERO), Prefetcher (for
// NBD_CMD_CACHE) and BlockSizer (the preferred block size advertised).
//
// A Source may also implement Slicer (zero-copy replies from immutable
// buffers such as a chunk cache) and ConnSourcer (a view per connection).
//
// Exports are read-only. The export size is the source size rounded up to
// a multiple of 512; the padding reads as zeros.
package blockdev

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Source is the bytes of one export.
type Source interface {
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
	Size() int64
}

// Extent is a run of a source with one allocation status.
type Extent struct {
	Offset, Length int64
	// Zero is set when the run reads as zeros (a zero chunk); it is
	// reported as HOLE|ZERO in base:allocation.
	Zero bool
}

// Extenter is implemented by sources that know which ranges read as
// zeros. Extents describes [off, off+length): sorted, non-overlapping
// extents; gaps are treated as data, and extents may extend beyond the
// range (they are clipped).
type Extenter interface {
	Extents(off, length int64) ([]Extent, error)
}

// Prefetcher is implemented by sources that can fetch a range in the
// background. Prefetch must return promptly; it is a hint (NBD_CMD_CACHE).
type Prefetcher interface {
	Prefetch(off, length int64)
}

// BlockSizer is implemented by sources with a natural I/O size (e.g. the
// average chunk size). The advertised preferred block size is this
// rounded down to a power of two within [4096, 2 MiB]; default 4096.
type BlockSizer interface {
	PreferredBlockSize() int64
}

// Slicer is implemented by sources that can hand out their bytes without
// a copy. Slices appends to dst slices that together hold exactly
// [off, off+n) (off+n is within Size) and that nobody modifies afterwards;
// the server writes them to the socket as they are. ok=false (with a nil
// error) makes the server fall back to ReadAtContext, e.g. when some of
// the range would have to be fetched first.
type Slicer interface {
	Slices(ctx context.Context, dst [][]byte, off int64, n int) (out [][]byte, ok bool, err error)
}

// ConnSourcer is implemented by sources that give each client connection
// its own view, e.g. a stream that detects sequential reads for readahead.
// The server calls ConnSource when a connection enters the transmission
// phase, reads (and slices) through the view, and closes it when the
// connection ends if it is an io.Closer. The view must have the same size;
// Extenter, Prefetcher and BlockSizer are taken from the export's Source.
type ConnSourcer interface {
	ConnSource() Source
}

// Export is one named export.
type Export struct {
	Name        string // "" is allowed; with one export "" also selects it
	Description string // sent as NBD_INFO_DESCRIPTION when asked
	Source      Source
}

// DefaultMaxServerInFlightBytes is Options.MaxServerInFlightBytes's
// default: four 4 MiB reads at once keep two cores decoding, and with the
// chunks they hold stay well within the 64 MiB over the chunk cache that
// issue 15.5 allows for 16 connections at queue depth 16 (at 64 MiB the
// read buffers alone took it).
const DefaultMaxServerInFlightBytes = 16 << 20

// Options configure a Server. The zero value is usable.
type Options struct {
	// Logger receives connection and error logs; nil discards them.
	Logger *slog.Logger
	// MaxConnections bounds simultaneous client connections; further
	// clients have their options refused with a policy error. 0: no limit.
	MaxConnections int
	// MaxInFlight bounds concurrently served requests per connection
	// (further requests wait unread on the socket). 0: 128.
	MaxInFlight int
	// MaxInFlightBytes bounds read buffers per connection. 0: 64 MiB
	// (never less than MaxPayload).
	MaxInFlightBytes int
	// MaxServerInFlightBytes bounds the read buffers of all connections
	// together, so that memory does not grow with the number of clients
	// (16 connections at queue depth 16 would otherwise hold up to 16 ×
	// MaxInFlightBytes). A read also holds the chunks it copies from, so
	// reads in flight cost up to about twice this. Reads are let in first
	// come, first served; a read larger than the bound runs alone.
	// 0: DefaultMaxServerInFlightBytes.
	MaxServerInFlightBytes int
	// HandshakeTimeout bounds the option negotiation. 0: 30 s; <0: none.
	HandshakeTimeout time.Duration
	// TLS, if set, lets clients upgrade the connection with
	// NBD_OPT_STARTTLS (the NBD protocol's in-session upgrade); nil: no
	// TLS (STARTTLS is refused). See TLSConfigFromDir.
	TLS *tls.Config
	// TLSServer, if set instead of TLS, runs the TLS handshake after
	// STARTTLS: for TLS with pre-shared keys (package tlspsk), which
	// crypto/tls lacks.
	TLSServer TLSServer
	// RequireTLS refuses every option other than STARTTLS and ABORT
	// before TLS is up (NBD_REP_ERR_TLS_REQD; a plain EXPORT_NAME is
	// disconnected): the protocol's FORCEDTLS mode. Needs TLS.
	RequireTLS bool
}

// TLSServer runs the server side of a TLS handshake on a connection
// whose NBD_OPT_STARTTLS was just acknowledged. It returns the secured
// connection and, for the log, the name the client proved (a PSK
// username; "" if none).
type TLSServer interface {
	Handshake(nc net.Conn) (net.Conn, string, error)
}

// TLSEnabled tells whether the options offer TLS.
func (o *Options) TLSEnabled() bool { return o.TLS != nil || o.TLSServer != nil }

// export is an Export with what the server derives from its source.
type export struct {
	Export
	srcSize   int64
	size      int64 // srcSize rounded up to MinBlockSize
	preferred uint32
	extenter  Extenter
	prefetch  Prefetcher
}

// Server is an NBD server over a fixed set of read-only exports.
type Server struct {
	opt     Options
	log     *slog.Logger
	exports map[string]*export
	names   []string // sorted
	active  atomic.Int64
	bud     budget // read buffers of all connections (MaxServerInFlightBytes)
	wg      sync.WaitGroup
}

// NewServer checks the exports and returns a server for them.
func NewServer(exports []Export, opt Options) (*Server, error) {
	if len(exports) == 0 {
		return nil, errors.New("nbd server: no exports")
	}
	if opt.TLS != nil && opt.TLSServer != nil {
		return nil, errors.New("nbd server: give TLS or TLSServer, not both")
	}
	if opt.RequireTLS && !opt.TLSEnabled() {
		return nil, errors.New("nbd server: TLS is required but no TLS configuration is given")
	}
	s := &Server{opt: opt, log: opt.Logger, exports: map[string]*export{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.opt.MaxInFlight <= 0 {
		s.opt.MaxInFlight = 128
	}
	if s.opt.MaxInFlightBytes <= 0 {
		s.opt.MaxInFlightBytes = 64 << 20
	}
	if s.opt.MaxInFlightBytes < MaxPayload {
		s.opt.MaxInFlightBytes = MaxPayload
	}
	if s.opt.MaxServerInFlightBytes <= 0 {
		s.opt.MaxServerInFlightBytes = DefaultMaxServerInFlightBytes
	}
	s.bud.init(1<<30, s.opt.MaxServerInFlightBytes)
	if s.opt.HandshakeTimeout == 0 {
		s.opt.HandshakeTimeout = 30 * time.Second
	}
	for _, e := range exports {
		if e.Source == nil {
			return nil, fmt.Errorf("nbd export %q: no source", e.Name)
		}
		if len(e.Name) > maxStringLen || strings.ContainsRune(e.Name, 0) {
			return nil, fmt.Errorf("nbd export %q: name must be at most %d bytes without NUL", e.Name, maxStringLen)
		}
		if _, dup := s.exports[e.Name]; dup {
			return nil, fmt.Errorf("nbd export %q: duplicate name", e.Name)
		}
		size := e.Source.Size()
		if size < 0 {
			return nil, fmt.Errorf("nbd export %q: negative size %d", e.Name, size)
		}
		x := &export{Export: e, srcSize: size, size: (size + MinBlockSize - 1) &^ (MinBlockSize - 1), preferred: 4096}
		x.extenter, _ = e.Source.(Extenter)
		x.prefetch, _ = e.Source.(Prefetcher)
		if bs, ok := e.Source.(BlockSizer); ok {
			x.preferred = preferredSize(bs.PreferredBlockSize())
		}
		s.exports[e.Name] = x
		s.names = append(s.names, e.Name)
	}
	sort.Strings(s.names)
	return s, nil
}

// preferredSize rounds n down to a power of two in [4096, 2 MiB].
func preferredSize(n int64) uint32 {
	p := uint32(4096)
	for int64(p)*2 <= n && p < 2<<20 {
		p *= 2
	}
	return p
}

// ExportSize returns the size the named export is served with (the source
// size padded to a multiple of 512), and whether it exists.
func (s *Server) ExportSize(name string) (int64, bool) {
	x := s.lookup(name)
	if x == nil {
		return 0, false
	}
	return x.size, true
}

// lookup finds an export; "" selects the only export when there is one.
func (s *Server) lookup(name string) *export {
	if x, ok := s.exports[name]; ok {
		return x
	}
	if name == "" && len(s.exports) == 1 {
		return s.exports[s.names[0]]
	}
	return nil
}

// Serve accepts connections on l until ctx is cancelled or Accept fails,
// serving each with ServeConn. On cancellation it closes l, ends every
// connection (in-flight requests see a cancelled context) and returns nil
// once all connection goroutines are done.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				s.wg.Wait()
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				delay = min(max(delay*2, 5*time.Millisecond), time.Second)
				s.log.Warn("nbd: accept", "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			cancel()
			s.wg.Wait()
			return fmt.Errorf("nbd server: accept on %s: %w", l.Addr(), err)
		}
		delay = 0
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.ServeConn(ctx, nc); err != nil {
				s.log.Debug("nbd: connection ended", "remote", remoteName(nc), "err", err)
			}
		}()
	}
}

func remoteName(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.String()
	}
	return "local"
}

// ServeConn runs the handshake and then the transmission phase on nc, and
// closes nc when done. It returns nil when the client disconnected cleanly
// (NBD_OPT_ABORT, NBD_CMD_DISC) or ctx was cancelled.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) error {
	defer nc.Close()
	n := s.active.Add(1)
	defer s.active.Add(-1)
	refuse := s.opt.MaxConnections > 0 && n > int64(s.opt.MaxConnections)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	log := s.log.With("remote", remoteName(nc))
	if refuse {
		log.Warn("nbd: refusing a client: too many connections", "max_connections", s.opt.MaxConnections)
	}
	if s.opt.HandshakeTimeout > 0 {
		nc.SetDeadline(time.Now().Add(s.opt.HandshakeTimeout))
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	h := &handshake{s: s, nc: nc, br: br, log: log, refuse: refuse}
	// After STARTTLS h.nc is the TLS connection: closing it sends TLS's
	// close_notify before the socket closes.
	defer func() { h.nc.Close() }()
	st, err := h.run()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if st == nil { // aborted by the client
		return nil
	}
	nc.SetDeadline(time.Time{})
	log.Debug("nbd: transmission", "export", st.exp.Name, "structured", st.structured, "base_allocation", st.metaAlloc, "tls", h.tls)
	c := newConn(ctx, cancel, s, h.nc, h.br, st, log)
	return c.serve()
}

// ServeTransmission serves only the transmission phase of the named export
// on nc, with simple replies and no metadata contexts — what the Linux
// kernel speaks after another program did the handshake (kernel attach
// over a socketpair). It closes nc when done.
func (s *Server) ServeTransmission(ctx context.Context, nc net.Conn, name string) error {
	defer nc.Close()
	x := s.lookup(name)
	if x == nil {
		return fmt.Errorf("nbd: no export named %q", name)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	c := newConn(ctx, cancel, s, nc, bufio.NewReaderSize(nc, 64<<10), &session{exp: x}, s.log.With("export", name))
	return c.serve()
}

// session is what the handshake negotiated for the transmission phase.
type session struct {
	exp        *export
	structured bool
	metaAlloc  bool // base:allocation selected for exp
	strict     bool // client committed to the block size constraints
}

func (st *session) transmissionFlags() uint16 {
	f := uint16(tflagHasFlags | tflagReadOnly | tflagSendFlush | tflagSendCache | tflagCanMultiConn)
	if st.structured {
		f |= tflagSendDF
	}
	return f
}

type handshake struct {
	s           *Server
	nc          net.Conn
	br          *bufio.Reader
	log         *slog.Logger
	refuse      bool // over MaxConnections
	warnedPlain bool // a plain client's refusal was logged

	noZeroes   bool
	tls        bool // STARTTLS done: nc is the TLS connection
	structured bool
	metaExport string // export named in the last SET_META_CONTEXT
	metaAlloc  bool   // base:allocation selected by it
	buf        []byte // reply scratch
}

// run negotiates options; it returns the session to serve, or nil after a
// soft disconnect (NBD_OPT_ABORT).
func (h *handshake) run() (*session, error) {
	var b [18]byte
	binary.BigEndian.PutUint64(b[0:], nbdMagic)
	binary.BigEndian.PutUint64(b[8:], optMagic)
	binary.BigEndian.PutUint16(b[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := h.nc.Write(b[:]); err != nil {
		return nil, fmt.Errorf("nbd handshake: %w", err)
	}
	if _, err := io.ReadFull(h.br, b[:4]); err != nil {
		return nil, fmt.Errorf("nbd handshake: reading client flags: %w", err)
	}
	cflags := binary.BigEndian.Uint32(b[:4])
	if cflags&^uint32(flagFixedNewstyle|flagNoZeroes) != 0 {
		return nil, fmt.Errorf("nbd handshake: unknown client flags 0x%x", cflags)
	}
	h.noZeroes = cflags&flagNoZeroes != 0
	for i := 0; ; i++ {
		if i >= maxOptions {
			return nil, fmt.Errorf("nbd handshake: more than %d options", maxOptions)
		}
		var hdr [16]byte
		if _, err := io.ReadFull(h.br, hdr[:]); err != nil {
			return nil, fmt.Errorf("nbd handshake: reading option: %w", err)
		}
		if m := binary.BigEndian.Uint64(hdr[:]); m != optMagic {
			return nil, fmt.Errorf("nbd handshake: bad option magic 0x%016x", m)
		}
		opt := binary.BigEndian.Uint32(hdr[8:])
		length := binary.BigEndian.Uint32(hdr[12:])
		if length > maxOptionLen {
			if length > maxOptionDrain || opt == optExportName {
				return nil, fmt.Errorf("nbd handshake: %s option of %d bytes is too large", optionName(opt), length)
			}
			if _, err := io.CopyN(io.Discard, h.br, int64(length)); err != nil {
				return nil, fmt.Errorf("nbd handshake: reading option: %w", err)
			}
			if err := h.reply(opt, repErrTooBig, fmt.Appendf(nil, "option data of %d bytes is too large", length)); err != nil {
				return nil, err
			}
			continue
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(h.br, data); err != nil {
			return nil, fmt.Errorf("nbd handshake: reading %s data: %w", optionName(opt), err)
		}
		st, done, err := h.option(opt, data)
		if err != nil || done {
			return st, err
		}
	}
}

// reply sends one option reply.
func (h *handshake) reply(opt, typ uint32, data []byte) error {
	b := h.buf[:0]
	b = binary.BigEndian.AppendUint64(b, optReplyMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	b = append(b, data...)
	h.buf = b
	if _, err := h.nc.Write(b); err != nil {
		return fmt.Errorf("nbd handshake: replying to %s: %w", optionName(opt), err)
	}
	return nil
}

func (h *handshake) replyErr(opt, typ uint32, format string, a ...any) error {
	msg := fmt.Sprintf(format, a...)
	h.log.Debug("nbd: option refused", "option", optionName(opt), "msg", msg)
	return h.reply(opt, typ, []byte(msg))
}

func (h *handshake) unknownExport(opt uint32, name string) error {
	return h.replyErr(opt, repErrUnknown, "no export named %q (exports: %s)", name, h.exportList())
}

func (h *handshake) exportList() string {
	q := make([]string, len(h.s.names))
	for i, n := range h.s.names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

func (h *handshake) tooMany(opt uint32) error {
	return h.replyErr(opt, repErrPolicy, "too many connections (the server allows %d)", h.s.opt.MaxConnections)
}

// option handles one option. done reports the end of the handshake: st is
// the session (nil after ABORT).
func (h *handshake) option(opt uint32, data []byte) (st *session, done bool, err error) {
	if h.s.opt.RequireTLS && !h.tls && opt != optStartTLS && opt != optAbort {
		if opt == optExportName {
			// No error reply is possible: the protocol says disconnect.
			h.log.Warn("nbd: refusing a client without TLS (TLS is required)", "option", optionName(opt))
			return nil, true, errors.New("nbd handshake: client asked for an export without TLS, which this server requires")
		}
		if !h.warnedPlain {
			h.warnedPlain = true
			h.log.Warn("nbd: refusing a client without TLS (TLS is required)", "option", optionName(opt))
		}
		return nil, false, h.replyErr(opt, repErrTLSReqd, "this server requires TLS: connect with TLS (nbds://…, e.g. nbdinfo 'nbds://HOST/NAME?tls-certificates=DIR')")
	}
	switch opt {
	case optExportName:
		if h.refuse {
			return nil, true, fmt.Errorf("nbd handshake: too many connections (max %d)", h.s.opt.MaxConnections)
		}
		x := h.s.lookup(string(data))
		if x == nil {
			return nil, true, fmt.Errorf("nbd handshake: EXPORT_NAME: no export named %q", data)
		}
		st := h.session(x, false)
		b := make([]byte, 10, 10+124)
		binary.BigEndian.PutUint64(b, uint64(x.size))
		binary.BigEndian.PutUint16(b[8:], st.transmissionFlags())
		if !h.noZeroes {
			b = b[:10+124]
		}
		if _, err := h.nc.Write(b); err != nil {
			return nil, true, fmt.Errorf("nbd handshake: %w", err)
		}
		return st, true, nil

	case optAbort:
		h.reply(opt, repAck, nil) // the client may already be gone
		return nil, true, nil

	case optList:
		if len(data) != 0 {
			return nil, false, h.replyErr(opt, repErrInvalid, "LIST takes no data")
		}
		if h.refuse {
			return nil, false, h.tooMany(opt)
		}
		for _, n := range h.s.names {
			b := binary.BigEndian.AppendUint32(nil, uint32(len(n)))
			if err := h.reply(opt, repServer, append(b, n...)); err != nil {
				return nil, true, err
			}
		}
		return nil, false, h.reply(opt, repAck, nil)

	case optInfo, optGo:
		name, infos, perr := parseInfoRequest(data)
		if perr != nil {
			return nil, false, h.replyErr(opt, repErrInvalid, "%v", perr)
		}
		if h.refuse {
			return nil, false, h.tooMany(opt)
		}
		x := h.s.lookup(name)
		if x == nil {
			return nil, false, h.unknownExport(opt, name)
		}
		wantBS := false
		st := h.session(x, false)
		for _, t := range infos {
			var b []byte
			switch t {
			case infoName:
				b = append(binary.BigEndian.AppendUint16(nil, infoName), x.Name...)
			case infoDescription:
				if x.Description == "" {
					continue
				}
				b = append(binary.BigEndian.AppendUint16(nil, infoDescription), x.Description...)
			case infoBlockSize:
				wantBS = true
				continue
			default:
				continue
			}
			if err := h.reply(opt, repInfo, b); err != nil {
				return nil, true, err
			}
		}
		// Block sizes are sent even when not asked for (clients must
		// ignore what they do not understand); only a client that asked
		// is held to them.
		b := binary.BigEndian.AppendUint16(nil, infoBlockSize)
		b = binary.BigEndian.AppendUint32(b, MinBlockSize)
		b = binary.BigEndian.AppendUint32(b, x.preferred)
		b = binary.BigEndian.AppendUint32(b, MaxPayload)
		if err := h.reply(opt, repInfo, b); err != nil {
			return nil, true, err
		}
		b = binary.BigEndian.AppendUint16(nil, infoExport)
		b = binary.BigEndian.AppendUint64(b, uint64(x.size))
		b = binary.BigEndian.AppendUint16(b, st.transmissionFlags())
		if err := h.reply(opt, repInfo, b); err != nil {
			return nil, true, err
		}
		if err := h.reply(opt, repAck, nil); err != nil {
			return nil, true, err
		}
		if opt == optInfo {
			return nil, false, nil
		}
		st.strict = wantBS
		return st, true, nil

	case optStructuredReply:
		if len(data) != 0 {
			return nil, false, h.replyErr(opt, repErrInvalid, "STRUCTURED_REPLY takes no data")
		}
		h.structured = true
		return nil, false, h.reply(opt, repAck, nil)

	case optListMetaContext, optSetMetaContext:
		set := opt == optSetMetaContext
		if set {
			h.metaAlloc, h.metaExport = false, ""
		}
		if !h.structured {
			return nil, false, h.replyErr(opt, repErrInvalid, "%s needs structured replies first", optionName(opt))
		}
		name, queries, perr := parseMetaRequest(data)
		if perr != nil {
			return nil, false, h.replyErr(opt, repErrInvalid, "%v", perr)
		}
		if len(queries) > maxMetaQueries {
			return nil, false, h.replyErr(opt, repErrTooBig, "%d queries is too many (max %d)", len(queries), maxMetaQueries)
		}
		if h.s.lookup(name) == nil {
			return nil, false, h.unknownExport(opt, name)
		}
		match := !set && len(queries) == 0
		for _, q := range queries {
			match = match || matchMeta(q, !set)
		}
		if match {
			id := uint32(0)
			if set {
				id = metaAllocationID
				h.metaAlloc, h.metaExport = true, name
			}
			b := binary.BigEndian.AppendUint32(nil, id)
			if err := h.reply(opt, repMetaContext, append(b, metaBaseAllocation...)); err != nil {
				return nil, true, err
			}
		}
		return nil, false, h.reply(opt, repAck, nil)

	case optStartTLS:
		return h.startTLS(opt, data)
	}
	return nil, false, h.replyErr(opt, repErrUnsup, "%s is not supported", optionName(opt))
}

func (h *handshake) session(x *export, strict bool) *session {
	st := &session{exp: x, structured: h.structured, strict: strict}
	// base:allocation applies only if it was selected for this very export.
	if h.metaAlloc && h.s.lookup(h.metaExport) == x {
		st.metaAlloc = true
	}
	return st
}
