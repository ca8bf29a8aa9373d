package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
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
	if p < 0 || p >= numPriorities {
		return fmt.Sprintf("priority(%d)", int(p))
	}
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
	// Background fetches go only to Disk (not Memory) when it is set, so a
	// whole-image fill does not flush what readers use from memory.
	Disk DiskCache
	// Workers bounds concurrent store fetches; 0 means DefaultWorkers (suits
	// network stores; a local store needs fewer but is not hurt).
	Workers int
	// DecodeWorkers bounds concurrent decompression and verification, which
	// are CPU-bound; 0 means GOMAXPROCS. Foreground chunks decode first.
	DecodeWorkers int
	// Log receives warnings about missing and corrupt chunks; nil discards.
	Log *slog.Logger
	// ReadTimeout bounds how long a reader (Fetch, or a Foreground
	// Start) waits for one chunk, counted from its request: then it fails
	// with ErrReadTimeout while the fetch goes on in the background and
	// fills the cache. 0 means DefaultReadTimeout; negative means no bound
	// (the stores' own timeouts and retries still end every fetch).
	ReadTimeout time.Duration
	// FailTTL is how long a chunk whose fetch failed (or whose reader
	// timed out) fails again at once with the first error, without a new
	// fetch: a FUSE read that fails is asked again by the kernel at once,
	// and must not wait for a second cycle of retries. 0 means
	// DefaultFailTTL; negative turns it off.
	FailTTL time.Duration
	// Bulk says that the reader is one bulk job that wants every chunk
	// (an extract, a whole archive stream) rather than interactive readers: Readahead may then use
	// every worker, since no reader needs one kept free for it, which
	// deepens the pipeline to a store far away by a third.
	Bulk bool
}

// DefaultReadTimeout is a reader's worst wait for one chunk unless
// SchedulerOptions.ReadTimeout says otherwise. With the default HTTP
// settings (30s per attempt, 5 attempts) a stalled store would otherwise
// hold a read for about two and a half minutes.
const DefaultReadTimeout = time.Minute

// DefaultFailTTL is how long a failed chunk fails again at once unless
// SchedulerOptions.FailTTL says otherwise.
const DefaultFailTTL = 2 * time.Second

// ErrReadTimeout is the error of a reader that waited ReadTimeout for a
// chunk; the fetch itself goes on.
var ErrReadTimeout = errors.New("no chunk within the read timeout (still fetching it in the background)")

// DefaultWorkers is the number of concurrent store fetches when
// SchedulerOptions.Workers is 0.
const DefaultWorkers = 32

// Scheduler fetches, verifies and caches chunks.
//
// One fetch runs per chunk however many readers wait for it. Queued work is
// served strictly by priority (FIFO within a priority), and the lower
// classes are capped so they can never occupy every worker: Readahead and
// Background together use at most 3/4 of the workers, Background at most
// 1/2 (and starts no more than 1/8 while a Foreground fetch is queued or
// running), so a Foreground request always finds a free worker or is next
// in line. A Foreground reader that waits for a queued lower-priority fetch
// raises it to Foreground. A fetch nobody waits for any more (its readers
// gave up) is dropped from the queue, or cancelled if it is running;
// prefetches (Prefetch, Ticket.Detach) are never cancelled once started.
//
// Lock order: Scheduler.mu, then cache.Memory's lock, then pmu.
type Scheduler struct {
	stores  []Store
	mem     *cache.Memory
	disk    DiskCache
	log     *slog.Logger
	workers int
	caps    [numPriorities]int // a class may run while the running total of it and lower classes is under its cap
	// bgBusyCap replaces the Background cap while a Foreground fetch is queued or running.
	bgBusyCap int
	decode    *decoder        // bounds CPU-bound decoding to the cores
	readTO    time.Duration   // a reader's worst wait for a chunk; 0: none
	failTTL   time.Duration   // how long a failure is remembered; 0: not at all
	ctx       context.Context // parent of every fetch; cancelled by Close
	cancel    context.CancelFunc

	mu        sync.Mutex
	wake      *sync.Cond
	inflight  map[chunker.ID]*call   // guarded by mu: queued or running, not abandoned
	queues    [numPriorities][]*call // guarded by mu; FIFO, stale entries skipped
	running   [numPriorities]int     // guarded by mu; by the priority a fetch started at
	fgActive  int                    // guarded by mu: Foreground calls queued or running
	lastFg    time.Time              // guarded by mu: when the last Foreground fetch ended
	closed    bool                   // guarded by mu
	finishedN int                    // guarded by mu: fetches finished, for compactQueues
	failed    map[chunker.ID]failure // guarded by mu: recent failures (negative cache)
	wg        sync.WaitGroup

	pmu        sync.Mutex
	prefetched map[chunker.ID]struct{} // guarded by pmu: prefetched, not yet read

	warned warnLimiter // fetch errors of the same text are logged once a while

	Stats Stats
}

// failure is a chunk's recent failure, repeated to readers until it expires.
type failure struct {
	err   error
	until time.Time
}

// maxFailures bounds the negative cache; beyond it the oldest-looking
// entries are simply dropped (a dropped entry only costs a new fetch).
const maxFailures = 4096

type call struct {
	c        chunker.Chunk
	d        chunker.Digest
	prio     Priority // highest priority asked for; guarded by Scheduler.mu
	waiters  int      // tickets holding the call; guarded by Scheduler.mu
	detached bool     // a prefetch holds it: never cancelled once started; guarded by mu
	read     bool     // a reader asked for it (Fetch, or a Foreground Start); guarded by mu
	fg       bool     // counted in Scheduler.fgActive; guarded by mu
	started  bool     // a worker took it; guarded by mu
	gone     bool     // abandoned: removed from inflight; guarded by mu
	finished bool     // done is closed; guarded by mu
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	start    time.Time
	job      *decodeJob // waiting for a decode slot; guarded by decoder.mu
	data     []byte     // set before done is closed
	err      error      // set before done is closed

	// promoted: decoder.promote raised the call to promotedTo while no
	// job of it was queued; guarded by decoder.mu.
	promoted   bool
	promotedTo Priority
}

// NewScheduler starts the worker pool. Close stops it.
func NewScheduler(o SchedulerOptions) (*Scheduler, error) {
	if len(o.Stores) == 0 {
		return nil, errors.New("no chunk store given")
	}
	for i, st := range o.Stores {
		if st == nil {
			return nil, fmt.Errorf("chunk store %d is nil", i)
		}
	}
	s := &Scheduler{
		stores:     o.Stores,
		mem:        o.Memory,
		disk:       o.Disk,
		log:        o.Log,
		workers:    o.Workers,
		inflight:   map[chunker.ID]*call{},
		failed:     map[chunker.ID]failure{},
		prefetched: map[chunker.ID]struct{}{},
		readTO:     o.ReadTimeout,
		failTTL:    o.FailTTL,
	}
	switch {
	case s.readTO == 0:
		s.readTO = DefaultReadTimeout
	case s.readTO < 0:
		s.readTO = 0
	}
	switch {
	case s.failTTL == 0:
		s.failTTL = DefaultFailTTL
	case s.failTTL < 0:
		s.failTTL = 0
	}
	if s.mem == nil {
		s.mem = cache.NewMemory(0)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.workers <= 0 {
		s.workers = DefaultWorkers
	}
	dw := o.DecodeWorkers
	if dw <= 0 {
		dw = runtime.GOMAXPROCS(0)
	}
	s.decode = newDecoder(dw)
	s.decode.gatherWait = gatherWait
	s.caps = [numPriorities]int{s.workers, max(1, s.workers*3/4), max(1, s.workers/2)}
	if o.Bulk {
		s.caps[Readahead] = s.workers
	}
	s.bgBusyCap = max(1, s.workers/8)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.Stats.init(o.Stores)
	s.wake = sync.NewCond(&s.mu)
	for i := 0; i < s.workers; i++ {
		s.wg.Add(1)
		go s.worker()
	}
	return s, nil
}

// Workers returns the size of the fetch worker pool.
func (s *Scheduler) Workers() int { return s.workers }

// Cap returns how many fetches of priority p (and lower) may run at once.
func (s *Scheduler) Cap(p Priority) int { return s.caps[p] }

// Close cancels running fetches, fails queued ones with ErrClosed and
// waits for the workers to exit. Fetches requested after Close fail with
// ErrClosed. Close is safe to call more than once.
func (s *Scheduler) Close() {
	s.mu.Lock()
	s.closed = true
	s.wake.Broadcast()
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// ErrClosed is returned for fetches still queued when the scheduler closes,
// and for fetches asked for after.
var ErrClosed = errors.New("scheduler closed")

// Ticket is a requested chunk. Wait for it, or Release it if not needed.
// A Ticket is used by one goroutine.
type Ticket struct {
	s        *Scheduler
	cl       *call
	data     []byte // the result once known
	err      error
	held     bool
	deadline time.Time // a reader's: Wait gives up then (zero: never)
}

// Start requests a chunk at priority p and returns at once. The fetch
// starts when a worker is free for priority p.
func (s *Scheduler) Start(c chunker.Chunk, d chunker.Digest, p Priority) *Ticket {
	return s.start(c, d, p, p == Foreground)
}

// start is Start; read says the caller reads the chunk (Fetch, or a
// Foreground ticket) rather than fetching it ahead, which makes a
// prefetched chunk count as used.
func (s *Scheduler) start(c chunker.Chunk, d chunker.Digest, p Priority, read bool) *Ticket {
	if b, ok := s.mem.Get(c.ID); ok {
		s.memHit(c.ID, read)
		return &Ticket{data: b}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return &Ticket{err: ErrClosed}
	}
	if err := s.recentFailure(c.ID); err != nil {
		s.Stats.FailedFast.Add(1)
		return &Ticket{err: err}
	}
	cl := s.inflight[c.ID]
	if cl == nil {
		// A fetch may have finished since the lookup above: it fills the
		// cache before it leaves inflight, so looking again is enough.
		if b, ok := s.mem.Get(c.ID); ok {
			s.memHit(c.ID, read)
			return &Ticket{data: b}
		}
		cl = s.newCall(c, d, p)
	} else {
		s.raise(cl, p)
	}
	cl.waiters++
	if read {
		cl.read = true
	}
	t := &Ticket{s: s, cl: cl, held: true}
	if read && p == Foreground && s.readTO > 0 {
		t.deadline = time.Now().Add(s.readTO)
	}
	return t
}

// recentFailure returns the error of a fetch of id that failed less than
// FailTTL ago, or nil. s.mu held.
func (s *Scheduler) recentFailure(id chunker.ID) error {
	f, ok := s.failed[id]
	if !ok {
		return nil
	}
	if time.Now().After(f.until) {
		delete(s.failed, id)
		return nil
	}
	return f.err
}

// rememberFailure makes id fail at once with err for FailTTL. s.mu held.
func (s *Scheduler) rememberFailure(id chunker.ID, err error) {
	if s.failTTL <= 0 {
		return
	}
	now := time.Now()
	if len(s.failed) >= maxFailures/2 {
		for k, f := range s.failed {
			if now.After(f.until) || len(s.failed) >= maxFailures {
				delete(s.failed, k)
			}
		}
	}
	s.failed[id] = failure{err: err, until: now.Add(s.failTTL)}
}

func (s *Scheduler) memHit(id chunker.ID, read bool) {
	s.Stats.MemHits.Add(1)
	if !read {
		return
	}
	s.pmu.Lock()
	_, ok := s.prefetched[id]
	if ok {
		delete(s.prefetched, id)
	}
	s.pmu.Unlock()
	if ok {
		s.Stats.PrefetchUsed.Add(1)
	}
}

// newCall creates and queues a call. s.mu held.
func (s *Scheduler) newCall(c chunker.Chunk, d chunker.Digest, p Priority) *call {
	ctx, cancel := context.WithCancel(s.ctx)
	cl := &call{c: c, d: d, prio: p, ctx: ctx, cancel: cancel, done: make(chan struct{}), start: time.Now()}
	s.inflight[c.ID] = cl
	s.queues[p] = append(s.queues[p], cl)
	if p == Foreground {
		cl.fg = true
		s.fgActive++
	}
	s.wake.Signal()
	return cl
}

// raise lifts a call to priority p if that is higher. s.mu held.
func (s *Scheduler) raise(cl *call, p Priority) {
	if p >= cl.prio {
		return
	}
	cl.prio = p
	if p == Foreground && !cl.fg {
		cl.fg = true
		s.fgActive++
	}
	if !cl.started {
		s.queues[p] = append(s.queues[p], cl) // the old entry goes stale
		s.Stats.Promoted.Add(1)
		s.wake.Signal()
		return
	}
	s.decode.promote(cl, p) // fetched, perhaps waiting to be decoded
}

// fgDone takes a call out of the Foreground count. s.mu held.
func (s *Scheduler) fgDone(cl *call) {
	if cl.fg {
		cl.fg = false
		s.fgActive--
		s.lastFg = time.Now()
		if s.fgActive == 0 {
			// Background may use its full cap again: more than one
			// worker may have work now.
			s.wake.Broadcast()
		}
	}
}

// Wait returns the verified chunk, or the fetch's error, or ctx's error if
// ctx ends first (the fetch is then abandoned if no one else waits for it).
// The returned bytes must not be modified. Wait may be called again and
// returns the same result.
func (t *Ticket) Wait(ctx context.Context) ([]byte, error) {
	if !t.held {
		return t.data, t.err
	}
	var timeout <-chan time.Time
	if !t.deadline.IsZero() {
		tm := time.NewTimer(time.Until(t.deadline))
		defer tm.Stop()
		timeout = tm.C
	}
	select {
	case <-t.cl.done:
		t.data, t.err = t.cl.data, t.cl.err
		if t.err != nil && t.s.isClosed() && t.s.ctx.Err() != nil && errors.Is(t.err, context.Canceled) {
			t.err = ErrClosed
		}
	case <-ctx.Done():
		t.err = ctx.Err()
	case <-timeout:
		t.err = t.s.timedOut(t.cl)
		if t.err == nil {
			// Finished just now: take the result after all.
			t.data, t.err = t.cl.data, t.cl.err
		}
	}
	t.Release()
	return t.data, t.err
}

// timedOut gives a reader of cl that waited ReadTimeout its error: the
// fetch goes on (it is detached, so releasing the ticket does not cancel
// it), and until it ends or FailTTL passes other readers fail at once
// instead of waiting again. It returns nil if the fetch has finished.
func (s *Scheduler) timedOut(cl *call) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cl.finished {
		return nil
	}
	s.Stats.ReadTimeouts.Add(1)
	err := &ChunkError{Chunk: cl.c, Errs: []error{fmt.Errorf("%w after %v", ErrReadTimeout, s.readTO)}}
	if !cl.gone {
		cl.detached = true
		if _, ok := s.failed[cl.c.ID]; !ok {
			s.rememberFailure(cl.c.ID, err)
		}
	}
	return err
}

// Done returns a channel closed when the chunk is ready (or failed); nil
// for a ticket served from the cache.
func (t *Ticket) Done() <-chan struct{} {
	if t.cl == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return t.cl.done
}

// Release gives up interest in the chunk: if no one else wants it, a
// queued fetch is dropped and a running one cancelled. Safe to call more
// than once, and after Wait.
func (t *Ticket) Release() { t.release(false) }

// Detach gives up interest in the chunk but lets a running fetch finish
// and fill the cache (a queued one is dropped if no one else wants it).
// Readahead uses it when its guess is no longer wanted.
func (t *Ticket) Detach() { t.release(true) }

func (t *Ticket) release(keepRunning bool) {
	if !t.held {
		return
	}
	t.held = false
	if t.err == nil && t.data == nil {
		t.err = errors.New("ticket released")
	}
	s, cl := t.s, t.cl
	s.mu.Lock()
	defer s.mu.Unlock()
	cl.waiters--
	if cl.waiters > 0 || cl.detached || cl.finished || cl.gone {
		return
	}
	if cl.started && keepRunning {
		cl.detached = true
		return
	}
	cl.gone = true
	if s.inflight[cl.c.ID] == cl {
		delete(s.inflight, cl.c.ID)
	}
	if !cl.started {
		s.fgDone(cl)
		s.Stats.Dropped.Add(1)
	}
	cl.cancel()
}

func (s *Scheduler) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Fetch returns the verified bytes of chunk c, fetching it at priority p if
// it is not cached.
func (s *Scheduler) Fetch(ctx context.Context, c chunker.Chunk, d chunker.Digest, p Priority) ([]byte, error) {
	return s.start(c, d, p, true).Wait(ctx)
}

// Prefetch asks for a chunk to be cached at priority p, without waiting.
// Prefetches are never cancelled; a reader that needs the chunk later simply
// joins the fetch (raising its priority). It reports whether a fetch was
// queued or raised (false: cached, already queued at p or higher, or closed).
func (s *Scheduler) Prefetch(c chunker.Chunk, d chunker.Digest, p Priority) bool {
	if s.mem.Contains(c.ID) {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.recentFailure(c.ID) != nil {
		return false
	}
	if cl := s.inflight[c.ID]; cl != nil {
		cl.detached = true
		if p < cl.prio {
			s.raise(cl, p)
			return true
		}
		return false
	}
	if s.mem.Contains(c.ID) {
		return false
	}
	cl := s.newCall(c, d, p)
	cl.detached = true
	s.Stats.Prefetched.Add(1)
	return true
}

// Cached reports whether a chunk is in the memory cache.
func (s *Scheduler) Cached(id chunker.ID) bool { return s.mem.Contains(id) }

// Pending reports whether a chunk is queued or being fetched.
func (s *Scheduler) Pending(id chunker.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight[id] != nil
}

// HasDisk reports whether a disk cache is configured.
func (s *Scheduler) HasDisk() bool { return s.disk != nil }

// Memory returns the memory cache.
func (s *Scheduler) Memory() *cache.Memory { return s.mem }

// ForegroundIdle reports how long no Foreground fetch has been queued or
// running (0 while one is).
func (s *Scheduler) ForegroundIdle() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fgActive > 0 {
		return 0
	}
	if s.lastFg.IsZero() {
		return time.Duration(1<<62 - 1)
	}
	return time.Since(s.lastFg)
}

// Queued returns the number of calls queued (not started) at each priority.
func (s *Scheduler) Queued() (n [numPriorities]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, cl := range s.inflight {
		if !cl.started {
			n[cl.prio]++
		}
	}
	return n
}

// next picks the highest-priority runnable call. s.mu held.
func (s *Scheduler) next() (*call, Priority) {
	busy := 0 // running at priorities >= p
	for q := Priority(0); q < numPriorities; q++ {
		busy += s.running[q]
	}
	for p := Priority(0); p < numPriorities; p++ {
		if p > 0 {
			busy -= s.running[p-1]
		}
		limit := s.caps[p]
		if p == Background && s.fgActive > 0 {
			// Readers are waiting: Background starts at most a trickle,
			// leaving the network and the cores to them.
			limit = s.bgBusyCap
		}
		if busy >= limit {
			// Lower classes are held too: the running total of this
			// class and all below it is what the cap bounds.
			break
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
		s.queues[p] = nil // drop the drained backing array
	}
	return nil, 0
}

func (s *Scheduler) worker() {
	defer s.wg.Done()
	s.mu.Lock()
	freed := Priority(-1) // the priority of the fetch this worker just finished; -1: none
	for {
		if s.closed {
			s.failQueued()
			s.mu.Unlock()
			return
		}
		cl, p := s.next()
		if cl == nil {
			freed = -1
			s.wake.Wait()
			continue
		}
		// The finished fetch freed room under the cap of every class
		// from Foreground down to its own priority; this call uses it
		// only down to p, so a queued call of a class between p and
		// freed may fit now: wake a worker for each such class.
		for q := p; q < freed; q++ {
			s.wake.Signal()
		}
		freed = -1
		cl.started = true
		s.running[p]++
		s.mu.Unlock()

		start := time.Now()
		data, src, stored, err := s.fetchVerified(cl, p)
		el := time.Since(start)

		s.mu.Lock()
		s.running[p]--
		cl.data, cl.err = data, err
		cl.finished = true
		if s.inflight[cl.c.ID] == cl {
			delete(s.inflight, cl.c.ID)
		}
		switch {
		case err == nil:
			delete(s.failed, cl.c.ID)
		case cl.ctx.Err() == nil:
			// A real failure, not an abandoned or closed fetch: readers
			// asking again soon get it at once.
			s.rememberFailure(cl.c.ID, err)
		}
		// Count before waking the readers, so what they see is counted.
		s.account(cl, p, src, stored, el, err, cl.read, cl.fg)
		if s.finishedN++; s.finishedN%256 == 0 {
			s.compactQueues()
		}
		s.fgDone(cl)
		close(cl.done)
		cl.cancel()
		// This worker takes the next runnable call itself; idle workers
		// sleep on unless that call leaves room it freed unused (above),
		// or fgDone woke them all because the Background cap rose.
		freed = p
	}
}

// account updates the stats for a finished fetch. s.mu held.
func (s *Scheduler) account(cl *call, p Priority, src, stored int, el time.Duration, err error, read, fg bool) {
	st := &s.Stats
	switch {
	case err != nil && cl.ctx.Err() != nil:
		st.Cancelled.Add(1)
		return
	case err != nil:
		st.Failed.Add(1)
		return
	}
	if fg {
		st.ForegroundWait.observe(time.Since(cl.start))
	}
	if src < 0 {
		return // disk cache hit, counted in DiskHits
	}
	st.Fetched[p].Add(1)
	st.FetchedBytes[p].Add(int64(len(cl.data)))
	st.storeFetched(src, stored)
	st.FetchLatency.observe(el)
	if p == Foreground {
		return
	}
	st.PrefetchFetched.Add(1)
	if read {
		// fetchVerified marked it prefetched; a reader that found it in
		// the cache since then counted it already.
		s.pmu.Lock()
		_, ok := s.prefetched[cl.c.ID]
		delete(s.prefetched, cl.c.ID)
		s.pmu.Unlock()
		if ok {
			st.PrefetchUsed.Add(1)
		}
	}
}

// compactQueues drops stale entries (promoted, abandoned or taken calls)
// from every queue. A lower class's queue is only popped when nothing of
// a higher class waits, so under steady Foreground load its stale entries
// would stay, each keeping its finished call's chunk alive. s.mu held.
func (s *Scheduler) compactQueues() {
	for p := range s.queues {
		q := s.queues[p]
		live := q[:0]
		for _, cl := range q {
			if cl != nil && !cl.started && !cl.gone && cl.prio == Priority(p) {
				live = append(live, cl)
			}
		}
		clear(q[len(live):])
		s.queues[p] = live
	}
}

// failQueued fails every queued call with ErrClosed. s.mu held.
func (s *Scheduler) failQueued() {
	for p := range s.queues {
		for _, cl := range s.queues[p] {
			if cl != nil && !cl.started && !cl.finished {
				cl.started = true
				cl.finished = true
				cl.err = ErrClosed
				if s.inflight[cl.c.ID] == cl {
					delete(s.inflight, cl.c.ID)
				}
				s.fgDone(cl)
				close(cl.done)
				cl.cancel()
			}
		}
		s.queues[p] = nil
	}
}

// fetchVerified takes a chunk from the disk cache or the stores in order,
// returning only bytes that match the chunk ID. src is the index of the
// store that served it (-1: disk cache), stored the size of its stored form.
func (s *Scheduler) fetchVerified(cl *call, p Priority) (data []byte, src, stored int, err error) {
	ctx, c, d := cl.ctx, cl.c, cl.d
	if s.disk != nil {
		if b, ok := s.disk.Get(c, d); ok {
			s.Stats.DiskHits.Add(1)
			if p != Background {
				s.mem.Add(c.ID, b)
			}
			return b, -1, 0, nil
		}
	}
	var errs []error
	for i, st := range s.stores {
		if err := ctx.Err(); err != nil {
			return nil, 0, 0, err
		}
		refetch := 0
		if r, ok := st.(Refetcher); ok {
			refetch = max(r.RefetchCorrupt(), 0)
		}
		var data []byte
		var err error
		var nraw int
		for attempt := 0; ; attempt++ {
			var raw []byte
			var pooled bool
			raw, pooled, err = getStored(withStoredLimit(ctx, c.Size), st, c.ID)
			if err != nil {
				break
			}
			nraw = len(raw)
			data, err = s.decode.decode(cl, raw, s.prioOf(cl))
			if pooled {
				if err == nil && len(data) > 0 && &data[0] == &raw[0] {
					// Stored uncompressed: the chunk is the pooled buffer.
					data = append([]byte(nil), data...)
				}
				putStoredBuf(raw)
			}
			if err == nil || attempt >= refetch || ctx.Err() != nil {
				break
			}
			// Damaged on the way? Ask the same store again.
			s.log.Warn("chunk failed verification, fetching it again", "chunk", c.ID, "store", st, "err", err)
			s.Stats.Refetched.Add(1)
		}
		if err != nil && ctx.Err() != nil {
			return nil, 0, 0, ctx.Err()
		}
		var ce *CorruptChunkError
		switch {
		case err != nil && errors.As(err, &ce):
			ce.Store = st.String()
			s.log.Warn("corrupt chunk", "chunk", c.ID, "store", st, "err", err)
			s.Stats.Corrupt.Add(1)
			errs = append(errs, err)
			continue
		case err != nil:
			if !errors.Is(err, ErrNotFound) && s.warned.allow(err.Error()) {
				s.log.Warn("chunk fetch failed", "chunk", c.ID, "store", st, "err", err)
				s.Stats.StoreErrors.Add(1)
			}
			errs = append(errs, err)
			continue
		}
		if i > 0 && !(i == 1 && isSeed(s.stores[0])) && !isSeed(st) {
			s.Stats.Failovers.Add(1)
		}
		if p != Foreground {
			// Before the cache has it: a reader may find it there
			// before account runs, and must see it as prefetched.
			s.pmu.Lock()
			s.prefetched[c.ID] = struct{}{}
			s.pmu.Unlock()
		}
		if s.disk == nil || p != Background || s.prioOf(cl) != Background {
			s.mem.Add(c.ID, data)
		}
		if s.disk != nil && !isSeed(st) {
			s.disk.Put(c.ID, data)
		}
		return data, i, nraw, nil
	}
	return nil, 0, 0, &ChunkError{Chunk: c, Errs: errs}
}

// getStored gets a chunk's stored bytes from st; pooled says they are in a
// buffer to give back with putStoredBuf (a local store reads into one).
func getStored(ctx context.Context, st Store, id chunker.ID) (b []byte, pooled bool, err error) {
	if l, ok := st.(interface {
		getPooled(context.Context, chunker.ID) ([]byte, error)
	}); ok { // LocalStore, S3Store
		b, err = l.getPooled(ctx, id)
		return b, err == nil, err
	}
	b, err = st.Get(ctx, id)
	return b, false, err
}

func (s *Scheduler) prioOf(cl *call) Priority {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cl.prio
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

var _ io.ReaderAt = (*Blob)(nil)

// busy reports whether any fetch is running.
func (s *Scheduler) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running != [numPriorities]int{}
}
