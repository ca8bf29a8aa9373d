package seed

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/camount/camount/chunker"
)

// IndexSeed is an index (.caibx, .caidx) of local data: the chunks it
// lists are taken to lie in the data file at the offsets it gives, with no
// chunking pass (desync's convention). Nothing is trusted: each chunk is
// verified when used, so a data file that changed since its index was
// made costs fetches, never wrong bytes.
type IndexSeed struct {
	path, data string
	x          *chunker.Index
	f          *os.File
}

// OpenIndex opens an index seed; data is the data file ("" means the index
// path without its .caibx/.caidx suffix). The index must use the target's
// digest (ErrDigest); its chunk sizes may differ (fewer chunks match).
func OpenIndex(path, data string, p Params) (*IndexSeed, error) {
	if data == "" {
		data = strings.TrimSuffix(strings.TrimSuffix(path, ".caibx"), ".caidx")
	}
	xf, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("seed %s: %w", path, err)
	}
	x, err := chunker.ReadIndex(xf)
	xf.Close()
	if err != nil {
		return nil, fmt.Errorf("seed %s: %w", path, err)
	}
	if x.Digest() != p.Digest {
		return nil, fmt.Errorf("seed %s: %w (%s, the target %s)", path, ErrDigest, x.Digest(), p.Digest)
	}
	f, err := os.Open(data)
	if err != nil {
		return nil, fmt.Errorf("seed %s: its data file: %w", path, err)
	}
	return &IndexSeed{path: path, data: data, x: x, f: f}, nil
}

func (s *IndexSeed) String() string { return s.path }

// Scan reports the index's chunks at once.
func (s *IndexSeed) Scan(ctx context.Context, found Found) error {
	for i, c := range s.x.Chunks {
		if i%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		found(c.ID, Location{R: s.f, Off: int64(c.Start), Size: int64(c.Size), File: s.f})
	}
	return nil
}

// Quick implements seed.Quick: an index is read already.
func (s *IndexSeed) Quick() bool { return true }

// Close closes the data file.
func (s *IndexSeed) Close() error { return s.f.Close() }
