package blockdev

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// A small generic netlink client: just what the kernel attach needs
// (resolve a family by name, send one command with attributes, collect the
// replies up to the ACK). Netlink integers are in host byte order; camount
// runs on little-endian Linux (amd64, arm64), and attributes are encoded
// with binary.NativeEndian to stay correct elsewhere.

// ErrNoGenlFamily is returned when a generic netlink family is not
// registered (its kernel module is not loaded or the kernel lacks it).
var ErrNoGenlFamily = errors.New("generic netlink family not registered")

// nlattr is one netlink attribute: a type and either raw data or nested
// attributes.
type nlattr struct {
	typ    uint16
	data   []byte
	nested []nlattr
}

func attrU32(t uint16, v uint32) nlattr {
	return nlattr{typ: t, data: binary.NativeEndian.AppendUint32(nil, v)}
}

func attrU64(t uint16, v uint64) nlattr {
	return nlattr{typ: t, data: binary.NativeEndian.AppendUint64(nil, v)}
}

func attrString(t uint16, s string) nlattr {
	return nlattr{typ: t, data: append([]byte(s), 0)}
}

func attrNested(t uint16, a ...nlattr) nlattr {
	return nlattr{typ: t | unix.NLA_F_NESTED, nested: a}
}

func nlaAlign(n int) int { return (n + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1) }

// appendAttrs encodes attributes (nested ones recursively).
func appendAttrs(b []byte, attrs []nlattr) []byte {
	for _, a := range attrs {
		start := len(b)
		b = append(b, 0, 0, 0, 0)
		if a.nested != nil {
			b = appendAttrs(b, a.nested)
		} else {
			b = append(b, a.data...)
		}
		binary.NativeEndian.PutUint16(b[start:], uint16(len(b)-start))
		binary.NativeEndian.PutUint16(b[start+2:], a.typ)
		for len(b)%unix.NLA_ALIGNTO != 0 {
			b = append(b, 0)
		}
	}
	return b
}

// parseAttrs decodes one level of attributes into a map by type (the
// NLA_F_NESTED and byte-order bits masked off). Malformed input is an error.
func parseAttrs(b []byte) (map[uint16][]byte, error) {
	m := map[uint16][]byte{}
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("netlink: truncated attribute header (%d bytes)", len(b))
		}
		l := int(binary.NativeEndian.Uint16(b))
		t := binary.NativeEndian.Uint16(b[2:]) & 0x3fff
		if l < 4 || l > len(b) {
			return nil, fmt.Errorf("netlink: attribute %d has bad length %d (%d bytes left)", t, l, len(b))
		}
		m[t] = b[4:l]
		b = b[min(nlaAlign(l), len(b)):]
	}
	return m, nil
}

// genlConn is a NETLINK_GENERIC socket.
type genlConn struct {
	fd  int
	seq atomic.Uint32
}

func dialGenl() (*genlConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_GENERIC)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	// Replies that never come must not hang the caller.
	tv := unix.Timeval{Sec: 30}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return &genlConn{fd: fd}, nil
}

func (c *genlConn) Close() error { return unix.Close(c.fd) }

// request sends a generic netlink command with NLM_F_ACK and returns the
// attributes of every non-error reply message before the ACK. A negative
// errno in the ACK is returned as a syscall.Errno.
func (c *genlConn) request(family uint16, cmd, version uint8, attrs []nlattr) ([]map[uint16][]byte, error) {
	seq := c.seq.Add(1)
	b := make([]byte, unix.NLMSG_HDRLEN, 256)
	b = append(b, cmd, version, 0, 0)
	b = appendAttrs(b, attrs)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], family)
	binary.NativeEndian.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(b[8:], seq)
	binary.NativeEndian.PutUint32(b[12:], 0)
	if err := unix.Sendto(c.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("netlink send: %w", err)
	}
	var out []map[uint16][]byte
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return nil, fmt.Errorf("netlink receive: %w", err)
		}
		msgs := buf[:n]
		for len(msgs) >= unix.NLMSG_HDRLEN {
			l := int(binary.NativeEndian.Uint32(msgs))
			typ := binary.NativeEndian.Uint16(msgs[4:])
			mseq := binary.NativeEndian.Uint32(msgs[8:])
			if l < unix.NLMSG_HDRLEN || l > len(msgs) {
				return nil, fmt.Errorf("netlink: bad message length %d", l)
			}
			body := msgs[unix.NLMSG_HDRLEN:l]
			msgs = msgs[min(nlaAlign(l), len(msgs)):]
			if mseq != seq {
				continue // a stale reply
			}
			switch typ {
			case unix.NLMSG_ERROR:
				if len(body) < 4 {
					return nil, errors.New("netlink: truncated error message")
				}
				if e := int32(binary.NativeEndian.Uint32(body)); e != 0 {
					return out, unix.Errno(-e)
				}
				return out, nil // the ACK
			case unix.NLMSG_DONE:
				return out, nil
			default:
				if len(body) < unix.GENL_HDRLEN {
					return nil, errors.New("netlink: truncated generic netlink header")
				}
				// The attributes must outlive buf, which the next
				// receive overwrites.
				m, err := parseAttrs(bytes.Clone(body[unix.GENL_HDRLEN:]))
				if err != nil {
					return nil, err
				}
				out = append(out, m)
			}
		}
	}
}

// family resolves a generic netlink family name to its id. A family the
// kernel does not know gives an error wrapping ErrNoGenlFamily.
func (c *genlConn) family(name string) (uint16, error) {
	replies, err := c.request(unix.GENL_ID_CTRL, unix.CTRL_CMD_GETFAMILY, 1,
		[]nlattr{attrString(unix.CTRL_ATTR_FAMILY_NAME, name)})
	if errors.Is(err, unix.ENOENT) {
		return 0, fmt.Errorf("netlink family %q: %w", name, ErrNoGenlFamily)
	}
	if err != nil {
		return 0, fmt.Errorf("netlink family %q: %w", name, err)
	}
	for _, m := range replies {
		if id, ok := m[unix.CTRL_ATTR_FAMILY_ID]; ok && len(id) >= 2 {
			return binary.NativeEndian.Uint16(id), nil
		}
	}
	return 0, fmt.Errorf("netlink family %q: reply without an id", name)
}

// osErr wraps err with the path, like *os.PathError, for syscall errors.
func osErr(op, path string, err error) error {
	return &os.PathError{Op: op, Path: path, Err: err}
}
