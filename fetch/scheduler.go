package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/camount/camount/cache"
	"github.com/camount/camount/chunker"
)

// Priority orders chunk fetches: a reader waiting for a chunk (Foreground)
// always goes before speculative Readahead, which goes before Background fill.
type Priority int

const (
	Foreground Priority = iota
	Readahead
	Background
	numPriorities
)

func (p Priority) String() string {
	return [...]string{"foreground", "readahead", "background"}[p]
}

// DiskCache is a persistent cache of verified chunks (see cache.Disk).
// Get must verify what it returns; Put may drop the chunk.
type DiskCache interface {
	Get(c chunker.Chunk, d chunker.Digest) ([]byte, bool)
	Put(id chunker.ID, data []byte)
}

// SchedulerOptions configure a Scheduler. The zero value of each field has
// the documented default.
type SchedulerOptions struct {
	// Stores are tried in order: a chunk missing or corrupt in one is taken
	// from the next. At least one is required.
	Stores []Store
	// Memory caches verified chunks; nil means a cache of cache.DefaultMemoryBytes.
	Memory *cache.Memory
	// Disk, if set, is consulted before the stores and filled after them.
	Disk DiskCache
	// Workers bounds concurrent store fetches; 0 means 16 (suits network
	// stores; a local store needs fewer but is not hurt).
	Workers int
	// Log receives warnings about missing and corrupt chunks; nil discards.
	Log *slog.Logger
}

// Scheduler fetches, verifies and caches chunks. One fetch runs per chunk
// however many readers wait for it; queued work is served strictly by
// priority, and Readahead/Background are capped so they cannot occupy every
// worker. A Foreground reader that waits for a queued lower-priority fetch
// raises it to Foreground.
type Scheduler struct {
	stores  []Store
	mem     *cache.Memory
	disk    DiskCache
	log     *slog.Logger
	workers int
	caps    [numPriorities]int // max running per priority class
	decode  chan struct{}      // bounds CPU-bound decoding to the cores

	mu       sync.Mutex
	wake     *sync.Cond
	inflight map[chunker.ID]*call   // guarded by mu
	queues   [numPriorities][]*call // guarded by mu; FIFO, stale entries skipped
	running  [numPriorities]int     // guarded by mu
	closed   bool                   // guarded by mu
	wg       sync.WaitGroup

	Stats Stats
}

type call struct {
	c       chunker.Chunk
	d       chunker.Digest
	prio    Priority // highest priority asked for; guarded by Scheduler.mu
	waiters int      // guarded by Scheduler.mu; detached calls hold one forever
	started bool     // guarded by Scheduler.mu
	gone    bool     // abandoned: removed from inflight; guarded by Scheduler.mu
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	data    []byte
	err     error
}

// NewScheduler starts the worker pool. Close stops it.
func NewScheduler(o SchedulerOptions) (*Scheduler, error) {
	if len(o.Stores) == 0 {
		return nil, errors.New("no chunk store given")
	}
	s := &Scheduler{
		stores:   o.Stores,
		mem:      o.Memory,
		disk:     o.Disk,
		log:      o.Log,
		workers:  o.Workers,
		inflight: map[chunker.ID]*call{},
		decode:   make(chan struct{}, runtime.GOMAXPROCS(0)),
	}
	if s.mem == nil {
		s.mem = cache.NewMemory(0)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.workers <= 0 {
		s.workers = 16
	}
	s.caps = [numPriorities]int{s.workers, max(1, s.workers*3/4), max(1, s.workers/2)}
	s.Stats.init(o.Stores)
	s.wake = sync.NewCond(&s.mu)
	for i := 0; i < s.workers; i++ {
		s.wg.Add(1)
		go s.worker()
	}
	return s, nil
}

// Close stops the workers after the fetches they are running; queued
// fetches fail with ErrClosed.
func (s *Scheduler) Close() {
	s.mu.Lock()
	s.closed = true
	s.wake.Broadcast()
	s.mu.Unlock()
	s.wg.Wait()
}

// ErrClosed is returned for fetches still queued when the scheduler closes.
var ErrClosed = errors.New("scheduler closed")

// Ticket is a requested chunk. Wait for it, or Release it if not needed.
type Ticket struct {
	s    *Scheduler
	cl   *call
	data []byte // set when served without a fetch (cache, zero chunk)
	held bool
}

// Start requests a chunk and returns at once. The fetch starts when a worker
// is free for priority p.
func (s *Scheduler) Start(c chunker.Chunk, d chunker.Digest, p Priority) *Ticket {
	if b, ok := s.mem.Get(c.ID); ok {
		s.Stats.MemHits.Add(1)
		return &Ticket{data: b}
	}
	s.mu.Lock()
	cl := s.join(c, d, p)
	cl.waiters++
	s.mu.Unlock()
	return &Ticket{s: s, cl: cl, held: true}
}

// join finds or creates the call for c and queues it at priority p. s.mu held.
func (s *Scheduler) join(c chunker.Chunk, d chunker.Digest, p Priority) *call {
	cl := s.inflight[c.ID]
	if cl == nil {
		ctx, cancel := context.WithCancel(context.Background())
		cl = &call{c: c, d: d, prio: p, ctx: ctx, cancel: cancel, done: make(chan struct{})}
		s.inflight[c.ID] = cl
		s.queues[p] = append(s.queues[p], cl)
		s.wake.Signal()
		return cl
	}
	if p < cl.prio {
		cl.prio = p
		if !cl.started {
			s.queues[p] = append(s.queues[p], cl) // the old entry goes stale
			s.Stats.Promoted.Add(1)
			s.wake.Signal()
		}
	}
	return cl
}

// Wait returns the verified chunk, or the fetch's error, or ctx's error if
// ctx ends first (the fetch is cancelled when no one else waits for it).
// The returned bytes must not be modified.
func (t *Ticket) Wait(ctx context.Context) ([]byte, error) {
	if !t.held {
		if t.data != nil {
			return t.data, nil
		}
		return nil, errors.New("ticket already used")
	}
	select {
	case <-t.cl.done:
		t.Release()
		return t.cl.data, t.cl.err
	case <-ctx.Done():
		t.Release()
		return nil, ctx.Err()
	}
}

// Release gives up interest in the chunk. Safe to call more than once.
func (t *Ticket) Release() {
	if !t.held {
		return
	}
	t.held = false
	s, cl := t.s, t.cl
	s.mu.Lock()
	defer s.mu.Unlock()
	cl.waiters--
	if cl.waiters == 0 && !cl.gone {
		select {
		case <-cl.done:
			return
		default:
		}
		cl.gone = true
		if s.inflight[cl.c.ID] == cl {
			delete(s.inflight, cl.c.ID)
		}
		cl.cancel()
	}
}

// Fetch returns the verified bytes of chunk c, fetching it at priority p if
// it is not cached.
func (s *Scheduler) Fetch(ctx context.Context, c chunker.Chunk, d chunker.Digest, p Priority) ([]byte, error) {
	return s.Start(c, d, p).Wait(ctx)
}

// Prefetch asks for a chunk to be cached, without waiting. Prefetched chunks
// are never cancelled; a reader that needs one later simply joins the fetch.
func (s *Scheduler) Prefetch(c chunker.Chunk, d chunker.Digest, p Priority) {
	if s.mem.Contains(c.ID) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if cl := s.inflight[c.ID]; cl != nil {
		if p < cl.prio {
			s.join(c, d, p)
		}
		return
	}
	cl := s.join(c, d, p)
	cl.waiters++ // detached: held until done
	s.Stats.Prefetched.Add(1)
	go func() {
		<-cl.done
		s.mu.Lock()
		cl.waiters--
		s.mu.Unlock()
	}()
}

// Cached reports whether a chunk is in the memory cache.
func (s *Scheduler) Cached(id chunker.ID) bool { return s.mem.Contains(id) }

// next picks the highest-priority runnable call. s.mu held.
func (s *Scheduler) next() (*call, Priority) {
	for p := Priority(0); p < numPriorities; p++ {
		// A class may run only while the lower classes' total stays under its cap.
		busy := 0
		for q := p; q < numPriorities; q++ {
			busy += s.running[q]
		}
		if busy >= s.caps[p] {
			continue
		}
		q := s.queues[p]
		for len(q) > 0 {
			cl := q[0]
			q[0] = nil
			q = q[1:]
			if cl.started || cl.gone || cl.prio != p {
				continue // stale: promoted, abandoned or already taken
			}
			s.queues[p] = q
			return cl, p
		}
		s.queues[p] = q
	}
	return nil, 0
}

func (s *Scheduler) worker() {
	defer s.wg.Done()
	s.mu.Lock()
	for {
		if s.closed {
			// Fail everything still queued.
			for p := range s.queues {
				for _, cl := range s.queues[p] {
					if cl != nil && !cl.started {
						cl.started = true
						cl.err = ErrClosed
						if s.inflight[cl.c.ID] == cl {
							delete(s.inflight, cl.c.ID)
						}
						close(cl.done)
					}
				}
				s.queues[p] = nil
			}
			s.mu.Unlock()
			return
		}
		cl, p := s.next()
		if cl == nil {
			s.wake.Wait()
			continue
		}
		cl.started = true
		s.running[p]++
		s.mu.Unlock()

		start := time.Now()
		cl.data, cl.err = s.fetchVerified(cl.ctx, cl.c, cl.d, p)
		s.Stats.observe(p, time.Since(start), cl.err, len(cl.data))

		s.mu.Lock()
		s.running[p]--
		if s.inflight[cl.c.ID] == cl {
			delete(s.inflight, cl.c.ID)
		}
		close(cl.done)
		cl.cancel()
		s.wake.Signal()
	}
}

// fetchVerified takes a chunk from the disk cache or the stores in order,
// returning only bytes that match the chunk ID.
func (s *Scheduler) fetchVerified(ctx context.Context, c chunker.Chunk, d chunker.Digest, p Priority) ([]byte, error) {
	if s.disk != nil {
		if b, ok := s.disk.Get(c, d); ok {
			s.Stats.DiskHits.Add(1)
			s.mem.Add(c.ID, b)
			return b, nil
		}
	}
	var errs []error
	for i, st := range s.stores {
		raw, err := st.Get(ctx, c.ID)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if !errors.Is(err, ErrNotFound) {
				s.log.Warn("chunk fetch failed", "chunk", c.ID, "store", st, "err", err)
				s.Stats.StoreErrors.Add(1)
			}
			errs = append(errs, err)
			continue
		}
		s.decode <- struct{}{}
		data, err := DecodeChunk(c, d, raw)
		<-s.decode
		if err != nil {
			var ce *CorruptChunkError
			if errors.As(err, &ce) {
				ce.Store = st.String()
			}
			s.log.Warn("corrupt chunk", "chunk", c.ID, "store", st, "err", err)
			s.Stats.Corrupt.Add(1)
			errs = append(errs, err)
			continue
		}
		s.Stats.storeFetched(i, len(raw))
		s.mem.Add(c.ID, data)
		if s.disk != nil {
			s.disk.Put(c.ID, data)
		}
		return data, nil
	}
	return nil, &ChunkError{Chunk: c, Errs: errs}
}

// ChunkError is the failure to get a chunk from every store. It wraps each
// store's error, so errors.Is(err, ErrNotFound) and errors.As(err,
// **CorruptChunkError) work.
type ChunkError struct {
	Chunk chunker.Chunk
	Errs  []error
}

func (e *ChunkError) Error() string {
	if len(e.Errs) == 1 {
		return fmt.Sprintf("chunk %s (stream offset %d): %v", e.Chunk.ID, e.Chunk.Start, e.Errs[0])
	}
	return fmt.Sprintf("chunk %s (stream offset %d): no store has it intact: %v", e.Chunk.ID, e.Chunk.Start, errors.Join(e.Errs...))
}

func (e *ChunkError) Unwrap() []error { return e.Errs }

// Stats counts the scheduler's work. All fields are safe to read at any time.
type Stats struct {
	MemHits, DiskHits, ZeroHits  atomic.Int64
	Fetched                      [numPriorities]atomic.Int64 // chunks fetched per priority
	FetchedBytes                 [numPriorities]atomic.Int64 // uncompressed bytes
	Failed, Corrupt, StoreErrors atomic.Int64
	Promoted, Prefetched         atomic.Int64
	storeNames                   []string
	storeChunks, storeBytes      []atomic.Int64
	latMu                        sync.Mutex
	latencies                    []time.Duration // foreground fetch latencies, bounded sample
}

func (st *Stats) init(stores []Store) {
	for _, s := range stores {
		st.storeNames = append(st.storeNames, s.String())
	}
	st.storeChunks = make([]atomic.Int64, len(stores))
	st.storeBytes = make([]atomic.Int64, len(stores))
}

func (st *Stats) storeFetched(i, n int) {
	st.storeChunks[i].Add(1)
	st.storeBytes[i].Add(int64(n))
}

func (st *Stats) observe(p Priority, d time.Duration, err error, n int) {
	if err != nil {
		st.Failed.Add(1)
		return
	}
	st.Fetched[p].Add(1)
	st.FetchedBytes[p].Add(int64(n))
	st.latMu.Lock()
	if len(st.latencies) < 1<<16 {
		st.latencies = append(st.latencies, d)
	}
	st.latMu.Unlock()
}

// StoreCounts returns chunks and stored bytes fetched from each store, by name.
func (st *Stats) StoreCounts() (names []string, chunks, bytes []int64) {
	for i := range st.storeNames {
		names = append(names, st.storeNames[i])
		chunks = append(chunks, st.storeChunks[i].Load())
		bytes = append(bytes, st.storeBytes[i].Load())
	}
	return
}

// Latencies returns a copy of the sampled fetch latencies.
func (st *Stats) Latencies() []time.Duration {
	st.latMu.Lock()
	defer st.latMu.Unlock()
	return append([]time.Duration(nil), st.latencies...)
}

var _ io.ReaderAt = (*Blob)(nil)
