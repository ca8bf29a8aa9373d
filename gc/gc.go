// Package gc removes the chunks of a store that no index references
// (casync gc, desync prune).
//
// The store side is a small interface (Store: list chunks with their
// modification times, remove one), implemented here for local directories
// in both layouts camount meets: a casync store (XXXX/<id>.cacnk) and the
// disk cache (XXXX/<id>). Remote stores implement the same interface.
//
// Concurrent writers: gc never takes a lock (casync make and camount make
// take none either). Instead it keeps every chunk modified less than
// Options.MinAge (plus two seconds for coarse file-system timestamps)
// before the sweep started: a chunk a concurrent make writes while gc runs
// is always younger than that, and so is one written by a make that
// started less than MinAge ago. camount make refreshes the modification
// time of a chunk it finds already stored, so a chunk a running make
// reuses is young too; and a local store's Remove checks the time again
// right before removing. A make that runs longer than MinAge and whose
// index is not written yet can lose chunks: choose MinAge above your
// longest make (the command's default is one hour). Empty fan-out
// directories are left in place, since a concurrent writer may be about
// to write into one.
package gc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/camount/camount/chunker"
)

// Entry is one chunk of a store.
type Entry struct {
	ID      chunker.ID
	Name    string // the store's name for it (a path, a key), for messages and Remove
	Size    int64
	ModTime time.Time
}

// Store is a chunk store gc can sweep.
type Store interface {
	// Walk calls fn once for every chunk in the store, in any order. An
	// error from fn stops the walk and is returned.
	Walk(ctx context.Context, fn func(Entry) error) error
	// Remove removes a chunk Walk listed. It returns an error wrapping
	// ErrChanged, and removes nothing, if the chunk was modified since it
	// was listed (a concurrent writer stored it again).
	Remove(ctx context.Context, e Entry) error
}

// ErrChanged is wrapped by Remove's error when the chunk changed since
// Walk listed it.
var ErrChanged = errors.New("chunk modified since it was listed")

// ErrMixedDigests is wrapped by the error of Referenced when the indexes
// use different digests.
var ErrMixedDigests = errors.New("indexes use different digests")

// Options tune a sweep; the zero value removes every unreferenced chunk
// not modified in the last two seconds, for real.
type Options struct {
	// DryRun reports what would be removed, removing nothing.
	DryRun bool
	// MinAge keeps chunks modified less than this long before the sweep
	// started (see the package comment). 0: only the two-second margin.
	MinAge time.Duration
	// OnRemove, if set, is called for each chunk removed (or, with DryRun,
	// that would be removed).
	OnRemove func(Entry)
	// Log receives warnings (nil: discard).
	Log *slog.Logger
	// now is the sweep's start (tests); zero: time.Now().
	now time.Time
}

// Stats is what a sweep found and did.
type Stats struct {
	Chunks, Bytes               int64 // in the store when listed
	Removed, RemovedBytes       int64 // removed (or, DryRun, to remove)
	Referenced, ReferencedBytes int64 // kept because an index references them
	Young, YoungBytes           int64 // unreferenced but kept: modified within MinAge
	Changed                     int64 // unreferenced but rewritten while gc ran: kept
	Failed                      int64 // removals that failed (logged; the sweep goes on)
}

// Set is the set of chunk IDs the indexes reference.
type Set struct {
	ids    map[chunker.ID]struct{}
	Digest chunker.Digest
	Refs   int // references, counting repeats
}

// Len returns the number of distinct chunks referenced.
func (s *Set) Len() int { return len(s.ids) }

// Has reports whether id is referenced.
func (s *Set) Has(id chunker.ID) bool { _, ok := s.ids[id]; return ok }

// Referenced reads every index (.caibx, .caidx) and returns the chunks
// they reference. It fails, naming the file, if any index cannot be
// read or parsed, or if the indexes do not all use the same digest: a gc
// must never start from a partial picture of what is in use.
func Referenced(paths []string) (*Set, error) {
	if len(paths) == 0 {
		return nil, errors.New("no index given: a gc needs every index that uses the store")
	}
	s := &Set{ids: map[chunker.ID]struct{}{}}
	first := ""
	for _, p := range paths {
		x, err := readIndex(p)
		if err != nil {
			return nil, err
		}
		if first == "" {
			first, s.Digest = p, x.Digest()
		} else if x.Digest() != s.Digest {
			return nil, fmt.Errorf("%w: %s uses %s, %s uses %s", ErrMixedDigests, first, digestName(s.Digest), p, digestName(x.Digest()))
		}
		for _, c := range x.Chunks {
			s.ids[c.ID] = struct{}{}
		}
		s.Refs += len(x.Chunks)
	}
	return s, nil
}

func digestName(d chunker.Digest) string {
	if d == chunker.SHA256 {
		return "sha256"
	}
	return "sha512-256"
}

func readIndex(p string) (*chunker.Index, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	x, err := chunker.ReadIndex(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return x, nil
}

// Sweep removes every chunk of store that refs does not hold and that is
// older than o.MinAge.
func Sweep(ctx context.Context, store Store, refs *Set, o Options) (Stats, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	now := o.now
	if now.IsZero() {
		now = time.Now()
	}
	cutoff := now.Add(-o.MinAge - 2*time.Second)
	var st Stats
	var firstErr error
	err := store.Walk(ctx, func(e Entry) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		st.Chunks++
		st.Bytes += e.Size
		switch {
		case refs.Has(e.ID):
			st.Referenced++
			st.ReferencedBytes += e.Size
			return nil
		case !e.ModTime.Before(cutoff):
			st.Young++
			st.YoungBytes += e.Size
			return nil
		}
		if !o.DryRun {
			if err := store.Remove(ctx, e); err != nil {
				if errors.Is(err, ErrChanged) {
					st.Changed++
					return nil
				}
				log.Warn("gc: cannot remove chunk", "chunk", e.Name, "err", err)
				st.Failed++
				if firstErr == nil {
					firstErr = err
				}
				return nil
			}
		}
		st.Removed++
		st.RemovedBytes += e.Size
		if o.OnRemove != nil {
			o.OnRemove(e)
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	if st.Failed > 0 {
		return st, fmt.Errorf("%d chunks could not be removed, the first: %w", st.Failed, firstErr)
	}
	return st, nil
}
