package seed

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/camount/camount/cache"
	"github.com/camount/camount/catar"
	"github.com/camount/camount/chunker"
)

// DirSeed is a directory seed: the tree serialised as a catar with the
// target's feature flags (casync's defaults for a blob target whose flags
// name no metadata) and chunked with its parameters, its scan kept in the
// scan cache while the tree is unchanged (see ScanTree). Its chunks are
// regenerated on demand from the scan's metadata and the files' contents.
type DirSeed struct {
	path string
	o    TreeOptions

	mu sync.Mutex
	t  *Tree // after Scan
}

// OpenDir opens the directory at path as a seed for a target with
// parameters p; sc, if not nil, keeps its scan. hardlinks makes the
// scan record content digests for HardlinkCandidates.
func OpenDir(path string, p Params, sc *ScanCache, hardlinks bool) (*DirSeed, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("seed %s: %w", path, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("seed %s: not a directory", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("seed %s: %w", path, err)
	}
	f.Close()
	feat := p.Features &^ catar.SHA512_256
	if feat&catar.WithMask == 0 {
		// A blob target: serialise as casync make would by default.
		feat = catar.DefaultFeatures &^ catar.SHA512_256
	}
	if p.Digest == chunker.SHA512_256 {
		feat |= catar.SHA512_256
	}
	o := TreeOptions{Features: feat, Params: p.Chunk, Digest: p.Digest, Hardlinks: hardlinks}
	if sc != nil {
		o.CacheDir = filepath.Join(sc.Dir, cache.SeedDir)
	}
	return &DirSeed{path: path, o: o}, nil
}

func (s *DirSeed) String() string { return s.path }

// Scan serialises and chunks the tree (or reuses its cached scan) and
// reports every chunk.
func (s *DirSeed) Scan(ctx context.Context, found Found) error {
	t, err := ScanTree(ctx, s.path, s.o)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.t != nil {
		s.t.Close()
	}
	s.t = t
	s.mu.Unlock()
	n := len(t.chunks) / chunkRecSize
	for i := 0; i < n; i++ {
		if i%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		r := t.chunks[i*chunkRecSize:]
		var id chunker.ID
		copy(id[:], r[:32])
		found(id, Location{R: t, Off: int64(binary.LittleEndian.Uint64(r[32:])), Size: int64(binary.LittleEndian.Uint64(r[40:]))})
	}
	return nil
}

// Quick implements seed.Quick: a scan of the tree is in the cache. Its
// Scan then costs an lstat of every node (the fingerprint that decides
// whether the cached scan still holds) instead of reading every file, and
// runs before a lazy reader is ready, so no read races it.
func (s *DirSeed) Quick() bool {
	abs, err := filepath.Abs(s.path)
	if err != nil {
		return false
	}
	name := treeCachePath(abs, s.o)
	if name == "" {
		return false
	}
	st, err := os.Stat(name)
	return err == nil && st.IsDir()
}

// Close releases the scan.
func (s *DirSeed) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.t != nil {
		s.t.Close()
		s.t = nil
	}
	return nil
}

// Dir returns the seed directory.
func (s *DirSeed) Dir() string { return s.path }

// HardlinkCandidates names the seed's files with this size and content
// digest (none before the scan, or without hardlinks).
func (s *DirSeed) HardlinkCandidates(size int64, sum [32]byte) []string {
	s.mu.Lock()
	t := s.t
	s.mu.Unlock()
	if t == nil {
		return nil
	}
	return t.HardlinkCandidates(size, sum)
}
