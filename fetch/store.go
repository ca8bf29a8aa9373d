// Package fetch gets chunks from stores, verifies them and serves reads of a
// blob described by an index. Stores return the stored (usually compressed)
// bytes; decoding and verification against the chunk ID happen in one place
// (DecodeChunk), so no store can hand out unverified data.
package fetch

import (
	"context"
	"errors"
	"fmt"

	"github.com/camount/camount/chunker"
)

// ErrNotFound is returned (possibly wrapped) by a Store that does not have
// a chunk, and by the fetches of indexes that do not exist.
var ErrNotFound = errors.New("not found")

// notFoundError is ErrNotFound in a server's own words (the status of an
// HTTP answer), which need no "not found" after them.
type notFoundError struct{ msg string }

func (e *notFoundError) Error() string        { return e.msg }
func (e *notFoundError) Is(target error) bool { return target == ErrNotFound }

// Store is a source of stored chunk bytes.
//
// Get returns the bytes as stored (compressed with zstd, xz or gzip, or raw),
// or an error wrapping ErrNotFound when the store lacks the chunk. Errors not
// wrapping ErrNotFound are failures of the store (I/O, network). Get must be
// safe for concurrent use and must honour ctx. String names the store in logs
// and errors.
type Store interface {
	Get(ctx context.Context, id chunker.ID) ([]byte, error)
	String() string
}

// CorruptChunkError reports stored bytes that do not decode to the chunk
// they should be: bad compression, wrong size, or a digest mismatch.
type CorruptChunkError struct {
	ID    chunker.ID
	Store string // store the bytes came from, if known
	Err   error
}

func (e *CorruptChunkError) Error() string {
	if e.Store != "" {
		return fmt.Sprintf("chunk %s from %s is corrupt: %v", e.ID, e.Store, e.Err)
	}
	return fmt.Sprintf("chunk %s is corrupt: %v", e.ID, e.Err)
}

func (e *CorruptChunkError) Unwrap() error { return e.Err }

// Seeder is implemented by stores of local data (seed sets, package
// seed) placed before the real stores: what they serve is not copied into
// the disk cache, and a chunk they lack that the next store serves is not
// counted as a failover.
type Seeder interface{ IsSeed() bool }

func isSeed(st Store) bool {
	s, ok := st.(Seeder)
	return ok && s.IsSeed()
}
