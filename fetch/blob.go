package fetch

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/camount/camount/chunker"
)

// Blob is the stream an index describes, read lazily through a Scheduler.
// It is an io.ReaderAt and safe for any number of concurrent readers: there
// is no seek position and no lock on the read path.
type Blob struct {
	idx  *chunker.Index
	s    *Scheduler
	d    chunker.Digest
	size int64
	zero []bool // chunk i is all zero bytes: served without a store
	name string

	raMax atomic.Int64             // readahead window cap of Streams; 0: no readahead
	rec   atomic.Pointer[Recorder] // records first accesses, if set

	hmu     sync.Mutex
	handles map[uint64]*Stream // guarded by hmu: Streams of open files (ReadAtHint)
}

// NewBlob returns a blob over idx. name is used in errors (the index path).
func NewBlob(idx *chunker.Index, s *Scheduler, name string) *Blob {
	b := &Blob{idx: idx, s: s, d: idx.Digest(), size: int64(idx.Size()), zero: ZeroChunks(idx), name: name}
	b.raMax.Store(DefaultReadaheadMax)
	return b
}

// Name returns the name the blob uses in errors.
func (b *Blob) Name() string { return b.name }

// Size returns the stream length.
func (b *Blob) Size() int64 { return b.size }

// Index returns the index the blob reads.
func (b *Blob) Index() *chunker.Index { return b.idx }

// Scheduler returns the scheduler the blob fetches through.
func (b *Blob) Scheduler() *Scheduler { return b.s }

// IsZero reports whether chunk i holds only zero bytes.
func (b *Blob) IsZero(i int) bool { return b.zero[i] }

// ReadAt implements io.ReaderAt.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) {
	return b.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext reads len(p) bytes at off, fetching the chunks it needs at
// Foreground priority, all of them in parallel. Like io.ReaderAt it returns
// io.EOF with a short count at the end of the stream. On error no bytes of
// a chunk that failed verification are ever in p.
func (b *Blob) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset %d", b.name, off)
	}
	if off >= b.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := len(p)
	var eof error
	if int64(want) > b.size-off {
		want = int(b.size - off)
		eof = io.EOF
	}
	if want == 0 {
		return 0, nil
	}
	first := b.idx.Find(off)
	last := b.idx.Find(off + int64(want) - 1)
	if r := b.rec.Load(); r != nil {
		r.touch(first, last)
	}
	if first == last {
		data, err := b.chunk(ctx, first)
		if err != nil {
			return 0, err
		}
		c := b.idx.Chunks[first]
		n := copy(p[:want], data[uint64(off)-c.Start:])
		return n, eof
	}
	// Several chunks: request all, then copy in order.
	tickets := make([]*Ticket, last-first+1)
	for i := first; i <= last; i++ {
		if !b.zero[i] {
			tickets[i-first] = b.s.Start(b.idx.Chunks[i], b.d, Foreground)
		}
	}
	defer func() {
		for _, t := range tickets {
			if t != nil {
				t.Release()
			}
		}
	}()
	n := 0
	for i := first; i <= last; i++ {
		c := b.idx.Chunks[i]
		var data []byte
		if t := tickets[i-first]; t != nil {
			var err error
			if data, err = t.Wait(ctx); err != nil {
				return 0, b.wrap(err)
			}
		} else {
			data = zeros(c.Size)
			b.s.Stats.ZeroHits.Add(1)
		}
		lo := uint64(0)
		if i == first {
			lo = uint64(off) - c.Start
		}
		n += copy(p[n:want], data[lo:])
	}
	return n, eof
}

// chunk returns the verified bytes of chunk i.
func (b *Blob) chunk(ctx context.Context, i int) ([]byte, error) {
	c := b.idx.Chunks[i]
	if b.zero[i] {
		b.s.Stats.ZeroHits.Add(1)
		return zeros(c.Size), nil
	}
	data, err := b.s.Fetch(ctx, c, b.d, Foreground)
	if err != nil {
		return nil, b.wrap(err)
	}
	return data, nil
}

// Chunk returns the verified bytes of chunk i at priority p. The bytes must
// not be modified. The caller consumes them (a directory crawl or a
// page-cache push reads at Readahead priority), so a Recorder records the
// chunk at any priority; Prefetch is the path that does not consume.
func (b *Blob) Chunk(ctx context.Context, i int, p Priority) ([]byte, error) {
	c := b.idx.Chunks[i]
	if r := b.rec.Load(); r != nil {
		r.touch(i, i)
	}
	if b.zero[i] {
		return zeros(c.Size), nil
	}
	data, err := b.s.Fetch(ctx, c, b.d, p)
	if err != nil {
		return nil, b.wrap(err)
	}
	return data, nil
}

func (b *Blob) wrap(err error) error {
	if err == context.Canceled || err == context.DeadlineExceeded {
		return err
	}
	return fmt.Errorf("%s: %w", b.name, err)
}

// Prefetch queues the chunks covering [off, off+n) at priority p without
// waiting. It returns the number of fetches queued or raised.
func (b *Blob) Prefetch(off, n int64, p Priority) int {
	if n <= 0 || off >= b.size || off < 0 || p < 0 || p >= numPriorities {
		return 0
	}
	end := min(off+n, b.size)
	queued := 0
	for i := b.idx.Find(off); i < len(b.idx.Chunks) && int64(b.idx.Chunks[i].Start) < end; i++ {
		if !b.zero[i] && b.s.Prefetch(b.idx.Chunks[i], b.d, p) {
			queued++
		}
	}
	return queued
}

// HintMax bounds what one Hint prefetches.
const HintMax = 1 << 20

// Hint tells the blob that [off, off+n) is about to be read (a FUSE open of
// a file whose contents start at off): its first chunks, up to HintMax
// bytes, are prefetched at Readahead priority. It returns at once.
func (b *Blob) Hint(off, n int64) {
	b.Prefetch(off, min(n, HintMax), Readahead)
}

// Extent is a run of the stream that is either data or all zeros.
type Extent struct {
	Off, Len int64
	Zero     bool
}

// Extents describes [off, off+n) as runs of data and zero chunks, merging
// neighbours of the same kind.
func (b *Blob) Extents(off, n int64) []Extent {
	var out []Extent
	if n <= 0 || off >= b.size || off < 0 {
		return nil
	}
	end := min(off+n, b.size)
	for i := b.idx.Find(off); i < len(b.idx.Chunks); i++ {
		c := b.idx.Chunks[i]
		s, e := max(int64(c.Start), off), min(int64(c.End()), end)
		if s >= e {
			break
		}
		if k := len(out) - 1; k >= 0 && out[k].Zero == b.zero[i] {
			out[k].Len += e - s
		} else {
			out = append(out, Extent{Off: s, Len: e - s, Zero: b.zero[i]})
		}
	}
	return out
}

var (
	zeroMu  sync.Mutex
	zeroBuf []byte
)

// zeros returns a shared, read-only slice of n zero bytes.
func zeros(n uint64) []byte {
	zeroMu.Lock()
	defer zeroMu.Unlock()
	if uint64(len(zeroBuf)) < n {
		zeroBuf = make([]byte, n)
	}
	return zeroBuf[:n]
}

// ZeroChunks marks the chunks of idx that hold only zero bytes. It hashes
// zeros only for sizes that can plausibly be zero runs, so it is cheap: the
// minimum, average and maximum chunk sizes (a content-defined chunker cuts
// a run of zeros where its constant window hash first may, or at the
// maximum), the last chunk's size, and the sizes of the few IDs repeated
// most often (other chunkers' zero runs). A zero chunk it misses is
// fetched and verified like any other.
func ZeroChunks(idx *chunker.Index) []bool {
	d := idx.Digest()
	type rep struct {
		n    int
		size uint64
	}
	seen := make(map[chunker.ID]rep, len(idx.Chunks))
	for _, c := range idx.Chunks {
		r := seen[c.ID]
		seen[c.ID] = rep{r.n + 1, c.Size}
	}
	cands := map[uint64]bool{idx.Min: true, idx.Max: true, idx.Avg: true}
	if n := len(idx.Chunks); n > 0 {
		cands[idx.Chunks[n-1].Size] = true
	}
	// A tree index repeats many small chunks (equal files): hashing zeros
	// of every repeated size cost a tree's stat 60 ms. Zeros of the
	// mostRepeated sizes repeated most often are enough.
	const mostRepeated = 8
	var reps []rep
	for _, r := range seen {
		if r.n > 1 {
			reps = append(reps, r)
		}
	}
	sort.Slice(reps, func(i, j int) bool {
		if reps[i].n != reps[j].n {
			return reps[i].n > reps[j].n
		}
		return reps[i].size > reps[j].size
	})
	for i := 0; i < len(reps) && i < mostRepeated; i++ {
		cands[reps[i].size] = true
	}
	zeroIDs := map[chunker.ID]bool{}
	for size := range cands {
		if size <= chunker.MaxChunkSizeLimit {
			zeroIDs[d.Sum(zeros(size))] = true
		}
	}
	out := make([]bool, len(idx.Chunks))
	for i, c := range idx.Chunks {
		out[i] = zeroIDs[c.ID]
	}
	return out
}
