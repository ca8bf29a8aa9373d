package fetch

import (
	"sync"
	"time"

	"github.com/camount/camount/chunker"
)

// decoder bounds CPU-bound decoding (decompression and verification) to a
// number of slots, the cores, and hands a free slot to the
// highest-priority waiting chunk first.
//
// Prefetched chunks are decoded in batches: a fetch that gets a slot for a
// Readahead or Background chunk also takes up to maxDecodeBatch-1 other
// waiting chunks of those priorities, decodes them all and verifies them
// with DecodeChunks, whose side-by-side SHA-512/256 (chunker.SumBatch:
// eight lanes with AVX-512, four with AVX2) hashes a batch of a dozen or
// more chunks about 1.6-1.7x as fast as one by one.
// Prefetch batches hold at most all slots but one: the prefetch queue then
// grows while a batch is decoded (so the next batch is a large one), and a
// Foreground chunk, which a reader waits for, finds a slot and is decoded
// at once, on its own unless enough chunks queue with it (takeBatch).
// (Cold find of the reference corpus: ~8% less CPU.)
// With a single slot (one core) a prefetch batch may hold it, and a
// Foreground chunk waits for that batch, a few milliseconds, in exchange
// for the CPU the batch saves on the one core.
//
// A batch forms by itself only while the slots are busy. When chunks come
// slower than they are decoded (a network store, a server sharing the
// cores), every prefetched chunk would find a slot free and be decoded
// alone. So where hashing side by side is faster (chunker's
// BatchFaster), a prefetched chunk that finds a slot free and fewer than
// gatherBatch-1 others waiting waits, at most gatherWait (or until a
// slot is released), for more to arrive. Nobody waits for a prefetched
// chunk yet (or it is a bulk reader's, as extract's, which wants
// throughput); one that a reader comes to wait for is promoted and
// decoded at once. A cold extract of
// the reference corpus's image from a loopback S3 server: ~15% less CPU.
type decoder struct {
	mu          sync.Mutex
	free        int                         // guarded by mu
	prefetching int                         // guarded by mu: slots decoding prefetch batches
	prefetchCap int                         // most slots prefetch batches may hold
	waiting     [numPriorities][]*decodeJob // guarded by mu; FIFO per priority

	gatherWait time.Duration // 0: no gathering
	gatherer   *time.Timer   // guarded by mu: armed while prefetch jobs gather
	// after arms the gathering timer (time.AfterFunc; tests replace it).
	after func(time.Duration, func()) *time.Timer
}

// Gathering of prefetch batches (see decoder).
// gatherBatch: a full pass of the vector code's lanes (eight with
// AVX-512, twice four with AVX2). gatherWait: a fraction of a network
// fetch; the fetch slots the waiting jobs hold (a job holds its slot
// until decoded) are back soon enough not to starve the fetches.
const (
	gatherBatch = 8
	gatherWait  = 2 * time.Millisecond
)

// maxDecodeBatch bounds a batch: two rounds of the eight lanes, and a
// prefetched chunk waits for at most fifteen others to be decoded with it.
// maxDecodeBatchBytes bounds the chunk bytes of a batch, all of which are
// decoded before any is verified (sixteen average chunks are ~1 MiB; large
// chunks make smaller batches).
// fgBatch bounds a batch led by a Foreground job (see takeBatch): one
// pass of the eight lanes, so that its reader waits for no more.
const (
	maxDecodeBatch      = 16
	maxDecodeBatchBytes = 4 << 20
	fgBatch             = 8
)

type decodeJob struct {
	cl     *call // the fetch (its chunk and digest); cl.job points back while the job is queued
	stored []byte
	prio   Priority
	done   chan struct{} // closed once decoded by another's batch, or given a slot (lead)
	lead   bool          // given a slot: decode a batch led by this job
	data   []byte
	err    error
}

func newDecoder(slots int) *decoder {
	return &decoder{free: slots, prefetchCap: max(1, slots-1), after: time.AfterFunc}
}

// gathers reports whether a prefetch job of priority p and digest d that
// could take a free slot waits instead for others to join its batch (and
// arms the timer that ends the wait). q.mu held.
func (q *decoder) gathers(p Priority, d chunker.Digest) bool {
	if p == Foreground || q.gatherWait <= 0 || !d.BatchFaster() {
		return false
	}
	n := 1
	for p := Readahead; p < numPriorities; p++ {
		n += len(q.waiting[p])
	}
	if n >= gatherBatch {
		return false
	}
	if q.gatherer == nil {
		q.gatherer = q.after(q.gatherWait, q.gathered)
	}
	return true
}

// gathered ends a gathering wait: the free slots go to the waiting jobs.
func (q *decoder) gathered() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.gatherer = nil
	q.dispatch()
}

// decode decodes and verifies one chunk of fetch cl (DecodeChunk),
// possibly in a batch with others.
func (q *decoder) decode(cl *call, stored []byte, p Priority) ([]byte, error) {
	j := &decodeJob{cl: cl, stored: stored, prio: p}
	q.mu.Lock()
	if cl.promoted && cl.promotedTo < p {
		// Raised after the caller read p, before the job was queued.
		p, j.prio = cl.promotedTo, cl.promotedTo
	}
	if q.free > 0 && q.mayStart(p) && !q.gathers(p, cl.d) {
		q.take(p)
	} else {
		j.done = make(chan struct{})
		cl.job = j
		q.waiting[p] = append(q.waiting[p], j)
		q.mu.Unlock()
		<-j.done
		if !j.lead {
			return j.data, j.err
		}
		q.mu.Lock()
	}
	p = j.prio // promoted while it waited?
	batch := q.takeBatch(j)
	q.mu.Unlock()
	if len(batch) == 1 {
		j.data, j.err = DecodeChunk(cl.c, cl.d, stored)
	} else {
		runBatch(batch)
	}
	for _, o := range batch[1:] {
		close(o.done)
	}
	q.release(p)
	return j.data, j.err
}

// mayStart reports whether a job of priority p may take a free slot:
// Foreground always, prefetch within prefetchCap. q.mu held.
func (q *decoder) mayStart(p Priority) bool {
	return p == Foreground || q.prefetching < q.prefetchCap
}

// take gives a slot to a job of priority p. q.mu held.
func (q *decoder) take(p Priority) {
	q.free--
	if p != Foreground {
		q.prefetching++
	}
}

// takeBatch returns lead and the waiting jobs of its digest that join its
// batch (FIFO, within maxDecodeBatch and maxDecodeBatchBytes), removing
// them from the queue. q.mu held.
//
// A prefetch lead takes waiting prefetch jobs. A Foreground lead, which a
// reader waits for, is decoded alone, at once, unless enough Foreground
// and Readahead jobs wait with it for a batch hashed side by side
// (chunker's BatchWorth; at most fgBatch): chunks then queue for the
// decoder, which is the bottleneck, typically because a sequential reader
// has caught up with its readahead on busy cores and every chunk it
// reaches is promoted to Foreground while it waits for a slot. Decoding
// those one by one would hash nearly all of a cold cat's chunks at the
// single-stream speed; in a batch the lead's reader waits a little longer
// for its chunk (the batch's other decompressions, a pass of the lanes:
// about a millisecond), and the chunks it reads next are ready with it.
// Background jobs never join a Foreground batch.
func (q *decoder) takeBatch(lead *decodeJob) []*decodeJob {
	batch := []*decodeJob{lead}
	from, to, most := Readahead, numPriorities, maxDecodeBatch
	if lead.prio == Foreground {
		n := 1
		for _, w := range q.waiting[Foreground : Readahead+1] {
			for _, o := range w {
				if o.cl.d == lead.cl.d {
					n++
				}
			}
		}
		if !lead.cl.d.BatchWorth(min(n, fgBatch)) {
			return batch
		}
		from, to, most = Foreground, Readahead+1, fgBatch
	}
	size := lead.cl.c.Size
	for p := from; p < to && len(batch) < most; p++ {
		w := q.waiting[p]
		kept := w[:0]
		for _, o := range w {
			if len(batch) < most && o.cl.d == lead.cl.d && size+o.cl.c.Size <= maxDecodeBatchBytes {
				size += o.cl.c.Size
				o.cl.job = nil
				batch = append(batch, o)
			} else {
				kept = append(kept, o)
			}
		}
		clear(w[len(kept):])
		q.waiting[p] = kept
	}
	return batch
}

func runBatch(batch []*decodeJob) {
	cs := make([]chunker.Chunk, len(batch))
	stored := make([][]byte, len(batch))
	for i, o := range batch {
		cs[i], stored[i] = o.cl.c, o.stored
	}
	out, errs := DecodeChunks(cs, batch[0].cl.d, stored)
	for i, o := range batch {
		o.data, o.err = out[i], errs[i]
	}
}

// release frees the slot of a job of priority p and hands free slots to
// the highest-priority waiting jobs that may have one; each then leads a
// batch of its own.
func (q *decoder) release(p Priority) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.free++
	if p != Foreground {
		q.prefetching--
	}
	q.dispatch()
}

// dispatch hands free slots to the highest-priority waiting jobs that may
// have one. q.mu held.
func (q *decoder) dispatch() {
	for q.free > 0 {
		var j *decodeJob
		for p := range q.waiting {
			if w := q.waiting[p]; len(w) > 0 && q.mayStart(Priority(p)) {
				j = w[0]
				w[0] = nil
				q.waiting[p] = w[1:]
				break
			}
		}
		if j == nil {
			return
		}
		q.take(j.prio)
		j.cl.job = nil
		j.lead = true
		close(j.done)
	}
}

// promote moves fetch cl's job, if it waits for a slot, to priority p
// when that is higher: a reader now waits for the chunk, so it goes before
// prefetched ones and is not held back by the prefetch cap.
func (q *decoder) promote(cl *call, p Priority) {
	q.mu.Lock()
	defer q.mu.Unlock()
	j := cl.job
	if j == nil {
		// Not queued: the fetch may be about to queue its job at the
		// priority it read before this raise; decode takes this one.
		if !cl.promoted || p < cl.promotedTo {
			cl.promoted, cl.promotedTo = true, p
		}
		return
	}
	if p >= j.prio {
		return
	}
	w := q.waiting[j.prio]
	for i, o := range w {
		if o == j {
			q.waiting[j.prio] = append(w[:i], w[i+1:]...)
			w[len(w)-1] = nil
			break
		}
	}
	j.prio = p
	q.waiting[p] = append(q.waiting[p], j)
	q.dispatch()
}

// queued returns how many jobs wait for a slot.
func (q *decoder) queued() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, w := range q.waiting {
		n += len(w)
	}
	return n
}
