package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
)

// PushOptions configure Push. Zero values are the documented defaults.
type PushOptions struct {
	// From is where chunks are read; To where the missing ones are written.
	// Both required.
	From fetch.Store
	To   fetch.WriteStore
	// Jobs bounds the chunks copied at once; 0 means 32.
	Jobs int
	// ListLimit is as in MakeOptions: a remote destination holding at most
	// this many chunks is listed once instead of asked about each chunk.
	ListLimit int
	// Progress, if not nil, is updated as chunks are copied.
	Progress *Progress
	// Log receives debug messages; nil discards.
	Log *slog.Logger
}

// PushResult counts what Push did.
type PushResult struct {
	Chunks  int64 // distinct non-zero chunks the indexes reference
	Present int64 // of those, already in the destination
	Copied  int64 // copied
	Bytes   int64 // stored bytes copied
}

// ErrCorruptSource is wrapped by Push's error for a chunk whose bytes in
// the source store do not verify (after asking again): it is not copied.
var ErrCorruptSource = errors.New("corrupt chunk in the source store")

// Push copies to o.To every chunk the indexes reference that o.To lacks,
// reading it from o.From and verifying it against its ID first, so that a
// corrupt source chunk is never published. Chunks the destination has are
// not read; re-running after an interruption copies only what is still
// missing. Chunks holding only zeros are copied too (casync readers fetch
// them). The indexes themselves are the caller's to publish, after Push
// returns without error (WriteIndex), so that no reader sees an index
// whose chunks are missing.
func Push(ctx context.Context, indexes []*chunker.Index, o PushOptions) (PushResult, error) {
	var res PushResult
	if o.From == nil || o.To == nil {
		return res, errors.New("publish.Push: source and destination stores are required")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	prog := o.Progress
	if prog == nil {
		prog = &Progress{}
	}
	type item struct {
		c chunker.Chunk
		d chunker.Digest
	}
	seen := map[chunker.ID]bool{}
	var items []item
	for _, x := range indexes {
		d := x.Digest()
		for _, c := range x.Chunks {
			if seen[c.ID] {
				continue
			}
			seen[c.ID] = true
			items = append(items, item{c, d})
		}
	}
	res.Chunks = int64(len(items))
	jobs := o.Jobs
	if jobs <= 0 {
		jobs = 32
	}
	refetch := 0
	if r, ok := o.From.(fetch.Refetcher); ok {
		refetch = r.RefetchCorrupt()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
		mu.Unlock()
	}
	listed := present(ctx, o.To, o.ListLimit)
	q := make(chan item)
	for i := 0; i < jobs; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range q {
				n, err := copyChunk(ctx, o.From, o.To, it.c, it.d, refetch, listed)
				if err != nil {
					fail(err)
					continue
				}
				prog.Chunks.Add(1)
				prog.Bytes.Add(int64(it.c.Size))
				if n < 0 {
					prog.Present.Add(1)
				} else {
					prog.Stored.Add(1)
					prog.Uploaded.Add(int64(n))
				}
			}
		}()
	}
feed:
	for _, it := range items {
		select {
		case q <- it:
		case <-ctx.Done():
			break feed
		}
	}
	close(q)
	wg.Wait()
	res.Present = prog.Present.Load()
	res.Copied = prog.Stored.Load()
	res.Bytes = prog.Uploaded.Load()
	if firstErr != nil {
		return res, firstErr
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	log.Debug("pushed", "from", o.From, "to", o.To, "chunks", res.Chunks, "copied", res.Copied, "present", res.Present)
	return res, nil
}

// copyChunk copies one chunk unless the destination has it, returning the
// stored bytes written, or -1 when it was present.
func copyChunk(ctx context.Context, from fetch.Store, to fetch.WriteStore, c chunker.Chunk, d chunker.Digest, refetch int, listed map[chunker.ID]bool) (int, error) {
	var has bool
	var err error
	if listed != nil {
		has = listed[c.ID]
	} else if has, err = to.HasChunk(ctx, c.ID); err != nil {
		return 0, fmt.Errorf("chunk %s in %s: %w", c.ID, to, err)
	}
	if has {
		return -1, nil
	}
	var stored, data []byte
	for attempt := 0; ; attempt++ {
		stored, err = from.Get(ctx, c.ID)
		if err != nil {
			return 0, fmt.Errorf("chunk %s from %s: %w", c.ID, from, err)
		}
		if data, err = fetch.DecodeChunk(c, d, stored); err == nil {
			break
		}
		if attempt >= refetch {
			return 0, fmt.Errorf("chunk %s from %s: %w: %v", c.ID, from, ErrCorruptSource, err)
		}
	}
	if fetch.DetectCompression(stored) == fetch.None {
		// An uncompressed chunk file (casync reads them): stores hold
		// compressed .cacnk objects.
		if stored, err = fetch.AppendCompress(nil, fetch.Zstd, data); err != nil {
			return 0, err
		}
	}
	if err := to.StoreChunk(ctx, c.ID, stored); err != nil {
		return 0, fmt.Errorf("chunk %s to %s: %w", c.ID, to, err)
	}
	return len(stored), nil
}
