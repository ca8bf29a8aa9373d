package fetch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/camount/camount/chunker"
)

// ChunkSuffix is the file suffix of compressed chunks in a .castr store.
const ChunkSuffix = ".cacnk"

// LocalStore is a .castr directory: <dir>/<first 4 hex>/<hex>.cacnk.
type LocalStore struct {
	Dir string
}

// NewLocalStore returns a store for dir; it does not touch the disk.
func NewLocalStore(dir string) *LocalStore { return &LocalStore{Dir: dir} }

func (s *LocalStore) String() string { return s.Dir }

// Path returns where a compressed chunk lives in the store.
func (s *LocalStore) Path(id chunker.ID) string {
	h := id.String()
	return filepath.Join(s.Dir, h[:4], h+ChunkSuffix)
}

// Get reads <id>.cacnk, or an uncompressed <id> file (casync reads both).
// A symlink to /dev/null is casync's "known missing" marker.
func (s *LocalStore) Get(ctx context.Context, id chunker.ID) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := s.Path(id)
	b, err := readChunkFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		b, err = readChunkFile(p[:len(p)-len(ChunkSuffix)])
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", p, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

func readChunkFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist) // /dev/null marker
	}
	if st.Size() > MaxChunkSize {
		return nil, fmt.Errorf("%s: %d bytes is larger than any chunk", p, st.Size())
	}
	b := make([]byte, st.Size())
	n, err := f.ReadAt(b, 0)
	if n == len(b) {
		err = nil
	}
	return b[:n], err
}

// Has reports whether the store holds a compressed chunk file for id.
func (s *LocalStore) Has(id chunker.ID) bool {
	_, err := os.Stat(s.Path(id))
	return err == nil
}

// Put stores compressed bytes atomically: written to a temporary file in the
// fan-out directory, then linked into place without replacing an existing
// chunk, so concurrent writers and readers never see a torn file.
func (s *LocalStore) Put(id chunker.ID, stored []byte) error {
	p := s.Path(id)
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := p + "." + hex.EncodeToString(rnd[:]) + ".tmp"
	if err := os.WriteFile(tmp, stored, 0o444); err != nil {
		os.Remove(tmp)
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, p); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}
