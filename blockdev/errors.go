package blockdev

import (
	"context"
	"errors"
	"fmt"
)

// Sentinel errors for conditions the server detects itself; each maps to
// one NBD error value in ErrorCode.
var (
	// ErrInvalid: out of range, misaligned, unknown command or flag.
	ErrInvalid = errors.New("invalid request")
	// ErrReadOnly: a write to the read-only export.
	ErrReadOnly = errors.New("export is read-only")
	// ErrTooLarge: a request longer than the maximum payload.
	ErrTooLarge = errors.New("request too large")
)

// ErrorCode turns an error into the NBD error value sent to the client.
// It is the single place where errors meet the wire:
//
//	nil                              → 0
//	ErrInvalid                       → EINVAL
//	ErrReadOnly                      → EPERM
//	ErrTooLarge                      → EOVERFLOW
//	context.Canceled (the connection or the server is closing)     → ESHUTDOWN
//	anything else from the source (missing or corrupt chunk, I/O,
//	a timeout inside the source)                                   → EIO
//
// The server sends ESHUTDOWN only when its own context for the request
// has ended; a cancellation from inside the source is an EIO.
func ErrorCode(err error) uint32 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrInvalid):
		return EINVAL
	case errors.Is(err, ErrReadOnly):
		return EPERM
	case errors.Is(err, ErrTooLarge):
		return EOVERFLOW
	case errors.Is(err, context.Canceled):
		return ESHUTDOWN
	}
	return EIO
}

func invalidf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}
