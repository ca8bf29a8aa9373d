// Package seed finds chunks of a target index in local data, so that they
// are read from disk instead of fetched: an older version of an image, the
// other partition of an A/B pair, a data file beside its index, a directory
// tree serialised on the fly.
//
// A Seed only reports where chunks lie (Scan); a Set gathers the
// locations of the chunks a target wants from any number of seeds, with
// memory bounded by the target's chunk count (never by the seeds' sizes),
// and serves them as a fetch.Store placed before every other store. Seeded
// bytes are therefore verified by the scheduler exactly like fetched ones
// (fetch.DecodeChunk): a seed that changed after its scan, that lies, or
// that fails with EIO costs a fetch from the next store, never a wrong
// byte.
package seed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/camount/camount/chunker"
)

// Params are what makes chunk IDs comparable: the target index's digest
// and chunk sizes. File and directory seeds are chunked with them; an
// index seed must use the same digest.
type Params struct {
	Digest chunker.Digest
	Chunk  chunker.Params
	// Features are the target index's feature flags: a directory seed is
	// serialised with them (casync's defaults when they name no metadata,
	// as for a blob).
	Features uint64
}

// ParamsOf returns the parameters of a target index.
func ParamsOf(x *chunker.Index) Params {
	return Params{Digest: x.Digest(), Chunk: chunker.Params{Min: x.Min, Avg: x.Avg, Max: x.Max}, Features: x.Flags}
}

// Location is where a chunk's bytes lie in a seed.
type Location struct {
	// R reads the seed's bytes; the chunk is R's [Off, Off+Size).
	R    io.ReaderAt
	Off  int64
	Size int64
	// File is set when the bytes lie as they are in a regular file (or
	// block device) at Off, so that they may be cloned (FICLONERANGE)
	// instead of copied; nil for bytes made on the fly (a directory
	// serialised as an archive).
	File *os.File
	// Data, when a scan reports a chunk, may hold the very bytes it
	// hashed to the chunk's ID: they are the chunk, verified, and may be
	// used as they are, but only during the Found call (the scan reuses
	// the buffer). nil otherwise; a Set never keeps it.
	Data []byte
}

// Found is called by Seed.Scan for each chunk found in the seed. It is
// called from one goroutine at a time per Scan, and must not keep the
// Location's reader past the Seed's Close.
type Found func(id chunker.ID, loc Location)

// A Seed is local data in which chunks of a target may lie.
//
// Implementations: file seeds (a regular file or block device, chunked
// with the target's parameters), index seeds (a .caibx/.caidx whose data
// lies beside it without the suffix: no chunking pass), and directory
// seeds (a tree serialised as a catar with the target's feature flags).
type Seed interface {
	// String names the seed (its path) in errors and logs.
	String() string
	// Scan reports every chunk of the seed to found, in seed order,
	// and returns when the whole seed has been seen, or ctx ends, or
	// reading fails (the error names the seed). Chunks reported before an
	// error stay usable: they are verified when used anyway.
	Scan(ctx context.Context, found Found) error
	// Close releases the seed's files. Locations it reported become
	// unusable (reads fail, and cost a fetch).
	Close() error
}

// ErrDigest is wrapped by the error of an index seed whose digest is not
// the target's: its chunk IDs cannot name the target's chunks.
var ErrDigest = errors.New("seed index uses another digest than the target")

// Open opens the seed at path for a target with parameters p, choosing its
// kind: a path ending in .caibx or .caidx is an index seed (its data lies
// beside it without the suffix), a regular file or block device is a file
// seed (remembered in cache, if not nil). A missing or unreadable path is
// an error naming it.
func Open(path string, p Params, cache *ScanCache) (Seed, error) {
	if isIndexPath(path) {
		return OpenIndex(path, "", p)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("seed %s: %w", path, err)
	}
	switch {
	case st.Mode().IsRegular(), st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		f, err := OpenFile(path, p)
		if err != nil {
			return nil, err
		}
		if cache != nil {
			f.SetCache(cache)
		}
		return f, nil
	case st.IsDir():
		return OpenDir(path, p, cache, false)
	}
	return nil, fmt.Errorf("seed %s: not a regular file, block device, directory or index", path)
}
