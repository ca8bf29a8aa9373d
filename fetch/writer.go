package fetch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/camount/camount/chunker"
)

// WriteStore is a store chunks can be published to (make, push).
//
// HasChunk reports whether the store holds the chunk already (so that a
// publisher uploads only what is missing); StoreChunk stores the bytes as
// given (compressed, as Get returns them) under the chunk's ID, replacing
// any old object atomically: a reader sees the old bytes or the new ones,
// never a torn object. Both must be safe for concurrent use and honour ctx.
type WriteStore interface {
	Store
	HasChunk(ctx context.Context, id chunker.ID) (bool, error)
	StoreChunk(ctx context.Context, id chunker.ID, stored []byte) error
}

// ChunkInfo describes one chunk object of a store, as listed.
type ChunkInfo struct {
	ID      chunker.ID
	Size    int64     // stored (compressed) bytes
	ModTime time.Time // when it was written
}

// ListStore is a store whose chunks can be enumerated and removed (gc).
// ListChunks calls fn for every chunk object in the store (in no particular
// order) and stops at fn's first error, returning it. Objects whose names
// are not chunk names are skipped.
type ListStore interface {
	Store
	ListChunks(ctx context.Context, fn func(ChunkInfo) error) error
	RemoveChunk(ctx context.Context, id chunker.ID) error
}

// HasChunk implements WriteStore. A chunk found has its modification time
// refreshed: a gc running meanwhile (camount gc --grace, whose grace is on
// mtime) then keeps the chunk a make or push is reusing. Where the time
// cannot be set (a store of another user), it is a plain check.
func (s *LocalStore) HasChunk(ctx context.Context, id chunker.ID) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	p := s.Path(id)
	now := time.Now()
	err := os.Chtimes(p, now, now)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	_, err = os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// StoreChunk implements WriteStore.
func (s *LocalStore) StoreChunk(ctx context.Context, id chunker.ID, stored []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.Put(id, stored)
}

// ListChunks implements ListStore: every <4 hex>/<64 hex>.cacnk file.
func (s *LocalStore) ListChunks(ctx context.Context, fn func(ChunkInfo) error) error {
	dirs, err := os.ReadDir(s.Dir)
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if !d.IsDir() || len(d.Name()) != 4 {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(s.Dir, d.Name()))
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return err
			}
			id, ok := chunkIDFromName(d.Name() + "/" + e.Name())
			if !ok || !e.Type().IsRegular() {
				continue
			}
			info, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed meanwhile
			}
			if err != nil {
				return err
			}
			if err := fn(ChunkInfo{ID: id, Size: info.Size(), ModTime: info.ModTime()}); err != nil {
				return err
			}
		}
	}
	return nil
}

// RemoveChunk implements ListStore.
func (s *LocalStore) RemoveChunk(ctx context.Context, id chunker.ID) error {
	err := os.Remove(s.Path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// chunkIDFromName parses "<4 hex>/<64 hex>.cacnk" (the name of a chunk
// relative to its store), reporting false for anything else.
func chunkIDFromName(name string) (chunker.ID, bool) {
	dir, file, ok := strings.Cut(name, "/")
	if !ok || len(dir) != 4 {
		return chunker.ID{}, false
	}
	h, ok := strings.CutSuffix(file, ChunkSuffix)
	if !ok || !strings.HasPrefix(h, dir) {
		return chunker.ID{}, false
	}
	id, err := chunker.ParseID(h)
	if err != nil {
		return chunker.ID{}, false
	}
	return id, true
}

// chunkName is the casync layout name of a chunk relative to its store.
func chunkName(id chunker.ID) string {
	h := id.String()
	return h[:4] + "/" + h + ChunkSuffix
}

// ErrStoreNotWritable is returned when a store cannot be published to
// (an HTTP mirror).
var ErrStoreNotWritable = errors.New("store cannot be written to")

// AsWriteStore returns s as a WriteStore, or an error naming it.
func AsWriteStore(s Store) (WriteStore, error) {
	if w, ok := s.(WriteStore); ok {
		return w, nil
	}
	return nil, fmt.Errorf("chunk store %s: %w (only directories, s3+http(s):// and sftp:// stores are)", s, ErrStoreNotWritable)
}

// DetectCompression returns the compression of stored chunk bytes from
// their magic (None for an uncompressed chunk file).
func DetectCompression(stored []byte) Compression { return detect(stored) }
