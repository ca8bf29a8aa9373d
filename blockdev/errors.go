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
//	context.Canceled / DeadlineExceeded (connection or server closing) → ESHUTDOWN
//	anything else from the source (missing or corrupt chunk, I/O)      → EIO
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
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ESHUTDOWN
	}
	return EIO
}

func invalidf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}
