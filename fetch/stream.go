package fetch

import (
	"context"
	"sync"
)

// Readahead window bounds of a Stream.
const (
	// DefaultReadaheadMax caps the readahead window unless SetReadahead says otherwise.
	DefaultReadaheadMax = 16 << 20
	// ReadaheadMin is the first window of a sequential run; it doubles on
	// every further sequential read up to the cap.
	ReadaheadMin = 256 << 10
	// readaheadSlack is how far a read may land from the end of the previous
	// one and still continue a sequential run (the kernel sends readahead
	// reads concurrently, so they arrive slightly out of order).
	readaheadSlack = 1 << 20
	// readaheadAfter is the number of sequential reads that start readahead.
	readaheadAfter = 3
)

// SetReadahead sets the cap of the readahead window of the blob's Streams;
// 0 turns readahead off. Safe to call at any time.
func (b *Blob) SetReadahead(capBytes int64) { b.raMax.Store(max(capBytes, 0)) }

// Readahead returns the readahead window cap.
func (b *Blob) Readahead() int64 { return b.raMax.Load() }

// Stream is one reader of a blob — a FUSE file handle, an NBD connection —
// that detects sequential access: after three sequential reads it prefetches
// a window past the read at Readahead priority, doubling the window while
// the run continues up to the blob's cap (and at most as far ahead as the
// run has read, but at least ReadaheadMin), and drops the window (and the
// fetches it queued that have not started) when access turns random.
//
// ReadAtContext never holds a lock while it waits for chunks, so concurrent
// reads through one Stream proceed in parallel. Close releases what the
// window holds.
type Stream struct {
	b *Blob

	mu      sync.Mutex
	next    int64      // guarded by mu: end of the run so far
	start   int64      // guarded by mu: where the current run started
	run     int        // guarded by mu: sequential reads in the current run
	window  int64      // guarded by mu: current readahead window
	ahead   int64      // guarded by mu: readahead requested up to here
	tickets []raTicket // guarded by mu: readahead in chunk order
	closed  bool       // guarded by mu
	seqN    int64      // guarded by mu: reads that continued a run
	randN   int64      // guarded by mu: reads that did not
}

type raTicket struct {
	i int
	t *Ticket
}

// NewStream returns a reader of b that tracks one stream of reads.
func (b *Blob) NewStream() *Stream { return &Stream{b: b} }

// Size returns the blob's size.
func (s *Stream) Size() int64 { return s.b.size }

// Blob returns the blob the stream reads.
func (s *Stream) Blob() *Blob { return s.b }

// ReadAt implements io.ReaderAt.
func (s *Stream) ReadAt(p []byte, off int64) (int, error) {
	return s.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext is Blob.ReadAtContext plus readahead.
func (s *Stream) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	s.observe(off, int64(len(p)))
	return s.b.ReadAtContext(ctx, p, off)
}

// Hint is Blob.Hint.
func (s *Stream) Hint(off, n int64) { s.b.Hint(off, n) }

// Window returns the current readahead window (0: none).
func (s *Stream) Window() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.window
}

// Counts returns how many reads continued a sequential run and how many did not.
func (s *Stream) Counts() (sequential, random int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seqN, s.randN
}

// Close drops the readahead window. Reads after Close work, without readahead.
func (s *Stream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.dropLocked()
	return nil
}

// observe updates the run with a read of n bytes at off and extends the
// readahead window. It never blocks on fetches.
func (s *Stream) observe(off, n int64) {
	if n <= 0 || off < 0 || off >= s.b.size {
		return
	}
	end := min(off+n, s.b.size)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	// Backwards a read may trail the end of the run (concurrent reads arrive
	// out of order); forwards it may skip only into the window already
	// requested, so scattered reads (file system metadata) do not look
	// sequential.
	back := min(readaheadSlack, max(2*n, s.window, 32<<10))
	fwd := min(readaheadSlack, s.window)
	seq := off >= s.next-back && off <= s.next+fwd && (s.run > 0 || off == 0)
	if !seq {
		s.randN++
		if s.window > 0 || len(s.tickets) > 0 {
			s.dropLocked()
		}
		s.run, s.window, s.ahead = 1, 0, 0
		s.start, s.next = off, end
		return
	}
	s.seqN++
	s.run++
	s.next = max(s.next, end)
	// Readahead the read has reached is no longer speculative: the read
	// joins those fetches itself.
	first := s.b.idx.Find(off)
	k := 0
	for k < len(s.tickets) && s.tickets[k].i < first {
		s.tickets[k].t.Detach()
		k++
	}
	s.tickets = append(s.tickets[:0], s.tickets[k:]...)
	s.pruneFinished()

	raMax := s.b.raMax.Load()
	if s.run < readaheadAfter || raMax <= 0 {
		return
	}
	switch {
	case s.window == 0:
		s.window = min(int64(ReadaheadMin), raMax)
	case s.window < raMax:
		s.window = min(2*s.window, raMax)
	}
	// Never further ahead than the run has read (the kernel sizes its
	// readahead by what the reader consumed too): a reader that stops leaves
	// at most about as much unread readahead as it read. Without this bound
	// a 3 MiB file read during a boot left a 16 MiB window behind (the whole
	// window of a device serving a boot's scattered reads: 111 of 166
	// readahead chunks unused). A long run still reaches the cap: the window
	// doubles as fast as the reader moves.
	s.window = min(s.window, max(int64(ReadaheadMin), s.next-s.start))
	from := max(s.ahead, s.next)
	to := min(s.next+s.window, s.b.size)
	if from >= to {
		return
	}
	// Whole chunks: start at the chunk after the one holding from-1 if that
	// one was already requested.
	i := s.b.idx.Find(from)
	for ; i < len(s.b.idx.Chunks) && int64(s.b.idx.Chunks[i].Start) < to; i++ {
		if s.b.zero[i] {
			continue
		}
		c := s.b.idx.Chunks[i]
		if n := len(s.tickets); n > 0 && s.tickets[n-1].i >= i {
			continue
		}
		t := s.b.s.Start(c, s.b.d, Readahead)
		if t.cl == nil {
			continue // cached
		}
		s.tickets = append(s.tickets, raTicket{i, t})
	}
	s.ahead = to
}

// ReadAtHint reads through the Stream of an open file: handle numbers one
// open (vfs.HintedSource), and its Stream is made on its first read.
func (b *Blob) ReadAtHint(ctx context.Context, p []byte, off int64, handle uint64) (int, error) {
	b.hmu.Lock()
	s := b.handles[handle]
	if s == nil {
		if b.handles == nil {
			b.handles = map[uint64]*Stream{}
		}
		s = b.NewStream()
		b.handles[handle] = s
	}
	b.hmu.Unlock()
	return s.ReadAtContext(ctx, p, off)
}

// CloseHint closes the Stream of a released open file.
func (b *Blob) CloseHint(handle uint64) {
	b.hmu.Lock()
	s := b.handles[handle]
	delete(b.handles, handle)
	b.hmu.Unlock()
	if s != nil {
		s.Close()
	}
}

// PrefetchRange queues [off, off+n) at Readahead priority (vfs.Prefetcher:
// a directory listing hints the records and file heads it will read).
func (b *Blob) PrefetchRange(off, n int64) { b.Prefetch(off, n, Readahead) }

// pruneFinished lets go of readahead whose fetch has ended: its chunk is
// in the memory cache (which bounds it) and a read finds it there, but a
// held ticket would keep it alive past the cache's eviction. Without this,
// readers whose windows grew (a 4 MiB read arrives as many sequential
// requests) held up to the window cap each outside the cache: 64 readers
// held hundreds of MiB. s.mu held.
func (s *Stream) pruneFinished() {
	live := s.tickets[:0]
	for _, rt := range s.tickets {
		select {
		case <-rt.t.Done():
			rt.t.Detach()
		default:
			live = append(live, rt)
		}
	}
	clear(s.tickets[len(live):])
	s.tickets = live
}

// dropLocked detaches every readahead ticket: queued fetches no one else
// wants are dropped, running ones finish into the cache. s.mu held.
func (s *Stream) dropLocked() {
	for _, rt := range s.tickets {
		rt.t.Detach()
	}
	s.tickets = nil
	s.window, s.ahead = 0, 0
}
