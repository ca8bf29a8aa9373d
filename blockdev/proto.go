package blockdev

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire constants of the NBD protocol (fixed newstyle), from the NBD
// project's doc/proto.md. All integers on the wire are big-endian.
const (
	nbdMagic      = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic      = 0x49484156454f5054 // "IHAVEOPT"
	optReplyMagic = 0x0003e889045565a9

	// handshake flags (server) and client flags
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	// options
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10
	optExtendedHeaders = 11

	// option reply types
	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repMetaContext = 4
	repErrBit      = 1 << 31
	repErrUnsup    = repErrBit + 1
	repErrPolicy   = repErrBit + 2
	repErrInvalid  = repErrBit + 3
	repErrTLSReqd  = repErrBit + 5
	repErrUnknown  = repErrBit + 6
	repErrShutdown = repErrBit + 7
	repErrTooBig   = repErrBit + 9

	// information types of NBD_OPT_INFO / NBD_OPT_GO
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3

	// transmission flags
	tflagHasFlags     = 1 << 0
	tflagReadOnly     = 1 << 1
	tflagSendFlush    = 1 << 2
	tflagSendDF       = 1 << 7
	tflagCanMultiConn = 1 << 8
	tflagSendCache    = 1 << 10

	// requests and replies
	requestMagic     = 0x25609513
	simpleReplyMagic = 0x67446698
	structReplyMagic = 0x668e33ef
	requestSize      = 28

	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7

	cmdFlagFUA      = 1 << 0
	cmdFlagNoHole   = 1 << 1
	cmdFlagDF       = 1 << 2
	cmdFlagReqOne   = 1 << 3
	cmdFlagFastZero = 1 << 4

	replyFlagDone = 1

	replyTypeNone        = 0
	replyTypeOffsetData  = 1
	replyTypeOffsetHole  = 2
	replyTypeBlockStatus = 5
	replyTypeError       = 0x8001

	// base:allocation flags
	stateHole = 1
	stateZero = 2

	// NBD error values
	EPERM     = 1
	EIO       = 5
	ENOMEM    = 12
	EINVAL    = 22
	ENOSPC    = 28
	EOVERFLOW = 75
	ENOTSUP   = 95
	ESHUTDOWN = 108
)

const (
	metaBaseAllocation = "base:allocation"
	// metaAllocationID is the context ID the server hands out for
	// base:allocation (the only context it offers).
	metaAllocationID = 1

	// MaxPayload is the largest READ the server accepts (and advertises
	// as the maximum payload): 32 MiB, the limit clients already obey.
	MaxPayload = 32 << 20
	// MinBlockSize is the advertised minimum block size. Export sizes are
	// padded with zeros to a multiple of it.
	MinBlockSize = 512

	maxOptionLen    = 64 << 10 // larger options are answered ERR_TOO_BIG
	maxOptionDrain  = 16 << 20 // larger options end the connection
	maxOptions      = 1024     // options per handshake before a hard disconnect
	maxStringLen    = 4096     // protocol limit for names and queries
	maxMetaQueries  = 128
	maxWritePayload = MaxPayload // WRITE payloads up to this are read and discarded
)

// request is one transmission-phase request header.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	offset uint64
	length uint32
}

var errBadRequestMagic = errors.New("bad request magic")

// parseRequest decodes a 28-byte request header.
func parseRequest(b []byte) (request, error) {
	if len(b) < requestSize {
		return request{}, fmt.Errorf("request header is %d bytes, want %d", len(b), requestSize)
	}
	if m := binary.BigEndian.Uint32(b); m != requestMagic {
		return request{}, fmt.Errorf("%w 0x%08x", errBadRequestMagic, m)
	}
	return request{
		flags:  binary.BigEndian.Uint16(b[4:]),
		typ:    binary.BigEndian.Uint16(b[6:]),
		cookie: binary.BigEndian.Uint64(b[8:]),
		offset: binary.BigEndian.Uint64(b[16:]),
		length: binary.BigEndian.Uint32(b[24:]),
	}, nil
}

// errOptionInvalid marks a syntactically invalid option payload
// (answered with NBD_REP_ERR_INVALID).
var errOptionInvalid = errors.New("invalid option data")

// parseInfoRequest decodes the data of NBD_OPT_INFO / NBD_OPT_GO: the
// export name and the list of information types requested.
func parseInfoRequest(data []byte) (name string, infos []uint16, err error) {
	if len(data) < 6 {
		return "", nil, fmt.Errorf("%w: %d bytes is too short for INFO/GO", errOptionInvalid, len(data))
	}
	n := binary.BigEndian.Uint32(data)
	if uint64(n) > uint64(len(data)-6) {
		return "", nil, fmt.Errorf("%w: export name length %d exceeds option length %d", errOptionInvalid, n, len(data))
	}
	name = string(data[4 : 4+n])
	rest := data[4+n:]
	count := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*count {
		return "", nil, fmt.Errorf("%w: %d information requests need %d bytes, have %d", errOptionInvalid, count, 2*count, len(rest))
	}
	infos = make([]uint16, count)
	for i := range infos {
		infos[i] = binary.BigEndian.Uint16(rest[2*i:])
	}
	return name, infos, nil
}

// parseMetaRequest decodes the data of NBD_OPT_LIST_META_CONTEXT /
// NBD_OPT_SET_META_CONTEXT: the export name and the queries.
func parseMetaRequest(data []byte) (name string, queries []string, err error) {
	str := func(what string) (string, error) {
		if len(data) < 4 {
			return "", fmt.Errorf("%w: %s length missing", errOptionInvalid, what)
		}
		n := binary.BigEndian.Uint32(data)
		data = data[4:]
		if uint64(n) > uint64(len(data)) {
			return "", fmt.Errorf("%w: %s length %d exceeds the option data", errOptionInvalid, what, n)
		}
		if n > maxStringLen {
			return "", fmt.Errorf("%w: %s is %d bytes, longer than %d", errOptionInvalid, what, n, maxStringLen)
		}
		s := string(data[:n])
		data = data[n:]
		return s, nil
	}
	if name, err = str("export name"); err != nil {
		return "", nil, err
	}
	if len(data) < 4 {
		return "", nil, fmt.Errorf("%w: number of queries missing", errOptionInvalid)
	}
	count := binary.BigEndian.Uint32(data)
	data = data[4:]
	if uint64(count)*4 > uint64(len(data)) {
		return "", nil, fmt.Errorf("%w: %d queries do not fit in %d bytes", errOptionInvalid, count, len(data))
	}
	for i := uint32(0); i < count; i++ {
		q, err := str("query")
		if err != nil {
			return "", nil, err
		}
		queries = append(queries, q)
	}
	if len(data) != 0 {
		return "", nil, fmt.Errorf("%w: %d trailing bytes after the queries", errOptionInvalid, len(data))
	}
	return name, queries, nil
}

// matchMeta returns whether query selects base:allocation. For LIST, the
// namespace wildcard "base:" matches too; for SET it selects nothing.
func matchMeta(query string, list bool) bool {
	if query == metaBaseAllocation {
		return true
	}
	return list && query == "base:"
}

// optionName names an option in logs.
func optionName(o uint32) string {
	switch o {
	case optExportName:
		return "EXPORT_NAME"
	case optAbort:
		return "ABORT"
	case optList:
		return "LIST"
	case optStartTLS:
		return "STARTTLS"
	case optInfo:
		return "INFO"
	case optGo:
		return "GO"
	case optStructuredReply:
		return "STRUCTURED_REPLY"
	case optListMetaContext:
		return "LIST_META_CONTEXT"
	case optSetMetaContext:
		return "SET_META_CONTEXT"
	case optExtendedHeaders:
		return "EXTENDED_HEADERS"
	}
	return fmt.Sprintf("option %d", o)
}

// commandName names a command in logs.
func commandName(t uint16) string {
	switch t {
	case cmdRead:
		return "READ"
	case cmdWrite:
		return "WRITE"
	case cmdDisc:
		return "DISC"
	case cmdFlush:
		return "FLUSH"
	case cmdTrim:
		return "TRIM"
	case cmdCache:
		return "CACHE"
	case cmdWriteZeroes:
		return "WRITE_ZEROES"
	case cmdBlockStatus:
		return "BLOCK_STATUS"
	}
	return fmt.Sprintf("command %d", t)
}
