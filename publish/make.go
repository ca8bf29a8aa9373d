// Package publish is the write path of stores: Make splits a stream into
// chunks and stores the new ones (camount make), Push copies the chunks of
// indexes from one store to another (camount push), and WriteIndex puts an
// index in place, locally or remotely, after its chunks. Stores are
// fetch.WriteStores: local directories, S3 buckets, sftp directories.
package publish

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
)

// Progress counts a publisher's work; every field may be read at any time
// (a progress display polls them).
type Progress struct {
	Chunks   atomic.Int64 // chunks seen (make) or to copy (push)
	Bytes    atomic.Int64 // their uncompressed bytes
	Present  atomic.Int64 // chunks the store had already
	Stored   atomic.Int64 // chunks written to the store
	Uploaded atomic.Int64 // stored bytes written
}

// MakeOptions configure Make. Zero values are the documented defaults.
type MakeOptions struct {
	// Params are the chunk sizes; the zero value means chunker.DefaultParams.
	Params chunker.Params
	// Digest is the chunk digest (the zero value is SHA512/256).
	Digest chunker.Digest
	// Compression of stored chunks (the zero value is zstd).
	Compression fetch.Compression
	// Flags are the feature flags to record in the index: a tree's archive
	// features; 0 for a blob (the digest and exclude bits are added).
	Flags uint64
	// Store receives the chunks it does not have yet. Required.
	Store fetch.WriteStore
	// Uploads bounds the chunks being checked, compressed and stored at
	// once; 0 means GOMAXPROCS for a local directory and 32 for a remote
	// store (whose requests mostly wait on the network).
	Uploads int
	// ListLimit: before splitting, a remote store that can list its chunks
	// is listed once, if it holds at most ListLimit chunks (0 means
	// DefaultListLimit), and a chunk the listing shows costs no request;
	// the others are stored without asking (a chunk stored meanwhile by
	// someone else is stored again, harmlessly). Negative: ask the store
	// about every chunk (HasChunk).
	ListLimit int
	// Progress, if not nil, is updated as chunks are stored.
	Progress *Progress
	// Log receives debug messages; nil discards.
	Log *slog.Logger
	// Chunks, if set, yields the stream's chunks instead of splitting r
	// (r is then unused): a tree made with a make cache (makecache.go).
	Chunks *TreeSource
}

// MakeResult is what Make made.
type MakeResult struct {
	Index  *chunker.Index
	Digest chunker.ID // digest of the whole stream (what casync make prints)
	// NoDigest: chunks reused from a make cache were not read, so there
	// is no digest of the whole stream (Digest is zero), as with casync.
	NoDigest bool
}

// Make chunks the stream r, stores each chunk the store lacks compressed
// in o.Store, and returns the index and the digest of the whole stream.
// Hashing and compression run on all cores and the store's requests on
// o.Uploads goroutines; chunking, the index entries and the stream digest
// run in order, each on its own goroutine. A regular *os.File is mapped
// and split in place.
func Make(ctx context.Context, r io.Reader, o MakeOptions) (*MakeResult, error) {
	p := o.Params
	if p == (chunker.Params{}) {
		p = chunker.DefaultParams
	}
	d := o.Digest
	flags := o.Flags
	if flags == 0 {
		flags = chunker.FlagExcludeNodump | chunker.FlagExcludeFile
		if d == chunker.SHA512_256 {
			flags |= chunker.FlagSHA512_256
		}
	}
	if o.Store == nil {
		return nil, fmt.Errorf("publish.Make: no store")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	prog := o.Progress
	if prog == nil {
		prog = &Progress{}
	}
	store := o.Store
	workers := runtime.GOMAXPROCS(0)
	uploads := o.Uploads
	if uploads <= 0 {
		uploads = workers
		if _, local := store.(*fetch.LocalStore); !local {
			uploads = 32
		}
	}
	listed := present(ctx, store, o.ListLimit)
	var src *source
	var err error
	if o.Chunks != nil {
		src, err = o.Chunks.source(ctx, p, d, store, listed)
	} else {
		src, err = chunkSource(r, p)
	}
	if err != nil {
		return nil, err
	}
	defer src.release()
	x := &chunker.Index{Flags: flags, Min: p.Min, Avg: p.Avg, Max: p.Max}

	type job struct {
		data   []byte
		id     chunker.ID
		preset bool   // id known (a make cache's chunk; data is nil)
		size   uint64 // uncompressed size
		err    error
		done   chan struct{}
	}
	// Chunks go to the workers in batches of consecutive chunks; a worker
	// hashes a batch together (chunker.SumBatch: eight side by side where
	// the CPU allows), then hands the chunks not seen before in this run
	// to the storers, which ask the store whether it has each, compress
	// the missing ones and store them. The collector's queue holds more
	// chunks than all batches in flight, so the batch it waits on has
	// always been handed out.
	const batch = 32
	jobs := make(chan []*job, 2*workers)
	ordered := make(chan *job, 4*batch*workers+2*uploads)
	toStore := make(chan *job, uploads)
	var known sync.Map // chunk IDs stored (or found in the store) during this run
	var wg, swg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i := 0; i < uploads; i++ {
		swg.Add(1)
		go func() {
			defer swg.Done()
			var buf []byte // compressed chunk, reused: StoreChunk copies it out
			for j := range toStore {
				var has bool
				var err error
				if listed != nil {
					has = listed[j.id]
				} else {
					has, err = store.HasChunk(ctx, j.id)
				}
				if err == nil && !has && j.preset {
					err = fmt.Errorf("the make cache's chunk is missing (removed meanwhile?)")
				} else if err == nil && !has {
					var b []byte
					b, err = fetch.AppendCompress(buf[:0], o.Compression, j.data)
					if err == nil {
						buf = b
						err = store.StoreChunk(ctx, j.id, b)
					}
					if err == nil {
						prog.Stored.Add(1)
						prog.Uploaded.Add(int64(len(b)))
					}
				} else if has {
					prog.Present.Add(1)
				}
				if err != nil {
					j.err = fmt.Errorf("storing chunk %s in %s: %w", j.id, store, err)
					known.Delete(j.id)
				}
				close(j.done)
			}
		}()
	}
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var hashed []*job
			var datas [][]byte
			var ids []chunker.ID
			for js := range jobs {
				hashed, datas = hashed[:0], datas[:0]
				for _, j := range js {
					if j.preset {
						continue
					}
					if z := zeroID(d, j.data); z != nil {
						j.id = *z
					} else {
						hashed = append(hashed, j)
						datas = append(datas, j.data)
					}
				}
				ids = slices.Grow(ids[:0], len(datas))[:len(datas)]
				d.SumBatch(ids, datas)
				for k, j := range hashed {
					j.id = ids[k]
				}
				clear(datas) // no references to chunk data between batches
				clear(hashed)
				for _, j := range js {
					if _, dup := known.LoadOrStore(j.id, true); dup {
						close(j.done)
						continue
					}
					toStore <- j
				}
			}
		}()
	}
	// The stream digest runs on its own goroutine, decoupled from chunking:
	// over zero runs the workers have almost nothing to do while the digest
	// still hashes every byte, so tying the two together left a core idle.
	// A mapped input is hashed straight from the mapping; a read stream
	// through a deep queue of its chunks.
	sum := d.New()
	digested := make(chan struct{})
	var digestQ chan []byte
	if src.whole != nil {
		go func() {
			defer close(digested)
			const step = 1 << 20
			for off := 0; off < len(src.whole); off += step {
				if ctx.Err() != nil {
					return
				}
				end := min(off+step, len(src.whole))
				sum.Write(src.whole[off:end])
				src.consumed(1, uint64(end))
			}
		}()
	} else {
		digestQ = make(chan []byte, 256)
		go func() {
			defer close(digested)
			for b := range digestQ {
				sum.Write(b)
			}
		}()
	}
	// The collector takes chunks in stream order for the index entries.
	collected := make(chan error, 1)
	go func() {
		var off uint64
		var firstErr error
		for j := range ordered {
			<-j.done
			if j.err != nil && firstErr == nil {
				firstErr = j.err
				cancel()
			}
			x.Chunks = append(x.Chunks, chunker.Chunk{ID: j.id, Start: off, Size: j.size})
			off += j.size
			src.consumed(0, off)
			prog.Chunks.Add(1)
			prog.Bytes.Add(int64(j.size))
		}
		collected <- firstErr
	}()
	var readErr error
	noDigest := false
	pending := make([]*job, 0, batch)
	for {
		if ctx.Err() != nil {
			break
		}
		b, err := src.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
		j := &job{data: b, size: uint64(len(b)), done: make(chan struct{})}
		if src.preset != nil {
			if id, size, ok := src.preset(); ok {
				j.id, j.size, j.preset, noDigest = id, size, true, true
			}
		}
		ordered <- j
		if pending = append(pending, j); len(pending) == batch {
			jobs <- pending
			pending = make([]*job, 0, batch)
		}
		if digestQ != nil && !j.preset {
			digestQ <- b
		}
	}
	if digestQ != nil {
		close(digestQ)
	}
	if len(pending) > 0 {
		jobs <- pending
	}
	close(jobs)
	wg.Wait()
	close(toStore)
	swg.Wait()
	close(ordered)
	<-digested
	if err := <-collected; err != nil {
		return nil, err
	}
	if readErr != nil {
		return nil, fmt.Errorf("reading input: %w", readErr)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	log.Debug("made index", "chunks", len(x.Chunks), "new", prog.Stored.Load(), "store", store)
	res := &MakeResult{Index: x, NoDigest: noDigest}
	if !noDigest {
		copy(res.Digest[:], sum.Sum(nil))
	}
	return res, nil
}
