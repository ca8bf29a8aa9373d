package gc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/camount/camount/chunker"
)

// Local is a chunk store in a local directory: casync's layout
// (XXXX/<id>.cacnk, compressed) or the disk cache's (XXXX/<id>,
// uncompressed); both may be mixed, as casync reads both. Other files
// (temporary files of writes in progress, anything else) are never
// listed, so never removed.
type Local struct{ Dir string }

// Walk lists the chunk files of the store.
func (l Local) Walk(ctx context.Context, fn func(Entry) error) error {
	top, err := os.ReadDir(l.Dir)
	if err != nil {
		return err
	}
	for _, sub := range top {
		if !sub.IsDir() || len(sub.Name()) != 4 {
			continue
		}
		subdir := filepath.Join(l.Dir, sub.Name())
		ents, err := os.ReadDir(subdir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed meanwhile
			}
			return err
		}
		for _, de := range ents {
			if err := ctx.Err(); err != nil {
				return err
			}
			name := de.Name()
			id, err := chunker.ParseID(strings.TrimSuffix(name, ".cacnk"))
			if err != nil || !strings.HasPrefix(name, sub.Name()) || !de.Type().IsRegular() {
				continue
			}
			info, err := de.Info()
			if err != nil {
				continue // removed meanwhile
			}
			if err := fn(Entry{ID: id, Name: filepath.Join(subdir, name), Size: info.Size(), ModTime: info.ModTime()}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Remove removes a chunk file, unless it was modified since Walk listed it.
func (l Local) Remove(ctx context.Context, e Entry) error {
	info, err := os.Lstat(e.Name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // already gone
		}
		return err
	}
	if !info.ModTime().Equal(e.ModTime) || info.Size() != e.Size {
		return fmt.Errorf("%s: %w", e.Name, ErrChanged)
	}
	if err := os.Remove(e.Name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
