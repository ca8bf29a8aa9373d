package fetch

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/camount/camount/chunker"
)

// decodeCase is a stored chunk and what decoding it must give.
type decodeCase struct {
	c      chunker.Chunk
	stored []byte
	want   []byte // nil: must fail as corrupt
}

// decodeCases makes n zstd chunks of assorted sizes; every chunk whose
// index is in bad has a flipped byte in its payload.
func decodeCases(t *testing.T, n int, bad ...int) []decodeCase {
	t.Helper()
	r := rand.New(rand.NewPCG(7, uint64(n)))
	var out []decodeCase
	for i := 0; i < n; i++ {
		data := make([]byte, 1+r.IntN(200<<10))
		for k := range data {
			data[k] = byte(r.IntN(16)) // compressible
		}
		stored, err := Compress(Zstd, data)
		if err != nil {
			t.Fatal(err)
		}
		dc := decodeCase{c: chunker.Chunk{ID: chunker.SHA512_256.Sum(data), Size: uint64(len(data))}, stored: stored, want: data}
		for _, b := range bad {
			if b == i {
				dc.want = nil
				dc.c.ID[0] ^= 1 // the data no longer matches its ID
			}
		}
		out = append(out, dc)
	}
	return out
}

func checkDecoded(t *testing.T, dc decodeCase, data []byte, err error) {
	t.Helper()
	if dc.want == nil {
		var ce *CorruptChunkError
		if !errors.As(err, &ce) || data != nil {
			t.Fatalf("chunk %s: corrupt chunk gave %d bytes, err %v", dc.c.ID, len(data), err)
		}
		return
	}
	if err != nil || !bytes.Equal(data, dc.want) {
		t.Fatalf("chunk %s: got %d bytes (equal %v), err %v", dc.c.ID, len(data), bytes.Equal(data, dc.want), err)
	}
}

// TestDecodeChunks: batches of every size up to and past the eight lanes
// give each chunk exactly what DecodeChunk gives it, corrupt ones failing
// alone.
func TestDecodeChunks(t *testing.T) {
	for _, n := range []int{1, 2, 3, 5, 6, 7, 8, 9, 17} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			bad := []int{0}
			if n > 2 {
				bad = append(bad, n/2)
			}
			cases := decodeCases(t, n, bad...)
			cs := make([]chunker.Chunk, n)
			stored := make([][]byte, n)
			for i, dc := range cases {
				cs[i], stored[i] = dc.c, dc.stored
			}
			out, errs := DecodeChunks(cs, chunker.SHA512_256, stored)
			for i, dc := range cases {
				checkDecoded(t, dc, out[i], errs[i])
				one, err := DecodeChunk(dc.c, chunker.SHA512_256, dc.stored)
				if !bytes.Equal(one, out[i]) || (err == nil) != (errs[i] == nil) {
					t.Fatalf("chunk %d: DecodeChunks and DecodeChunk disagree (%v, %v)", i, errs[i], err)
				}
			}
		})
	}
}

// waitQueued waits until n jobs wait for a decode slot.
func waitQueued(t *testing.T, q *decoder, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d queued decodes", n), func() bool { return q.queued() == n })
}

// TestDecoderPriority: a Foreground decode waiting for a slot goes before
// prefetch decodes that waited longer, and is decoded on its own; the
// prefetch decodes waiting then go in one batch.
func TestDecoderPriority(t *testing.T) {
	q := newDecoder(0) // no free slot until release
	cases := decodeCases(t, 3)
	var mu sync.Mutex
	var order []Priority
	var wg sync.WaitGroup
	start := func(dc decodeCase, p Priority) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data, err := q.decode(&call{c: dc.c, d: chunker.SHA512_256}, dc.stored, p)
			checkDecoded(t, dc, data, err)
			mu.Lock()
			order = append(order, p)
			mu.Unlock()
		}()
	}
	start(cases[0], Background)
	waitQueued(t, q, 1)
	start(cases[1], Readahead)
	waitQueued(t, q, 2)
	start(cases[2], Foreground)
	waitQueued(t, q, 3)
	// A prefetch batch holds the prefetch cap (without a slot, so the
	// prefetch decodes stay queued until it ends), and one slot frees:
	// the Foreground decode leads alone.
	q.mu.Lock()
	q.prefetching++
	q.mu.Unlock()
	q.release(Foreground)
	waitFor(t, "the Foreground decode", func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 1 })
	if order[0] != Foreground || q.queued() != 2 {
		t.Fatalf("decoded first: %v, %d left queued; want the Foreground decode, 2", order, q.queued())
	}
	// The batch ends: the Readahead decode leads and takes the Background
	// one into its batch.
	q.release(Readahead)
	wg.Wait()
	if q.queued() != 0 || q.free != 2 || q.prefetching != 0 {
		t.Fatalf("after: %d queued, %d free slots, %d prefetching; want 0, 2, 0", q.queued(), q.free, q.prefetching)
	}
}

// TestDecoderBatches: many prefetch decodes waiting for one slot are
// decoded in batches of at most maxDecodeBatch, every chunk getting its own
// bytes and the corrupt ones failing alone.
func TestDecoderBatches(t *testing.T) {
	q := newDecoder(0)
	n := 2*maxDecodeBatch + 3
	cases := decodeCases(t, n, 1, 9, n-1)
	var wg sync.WaitGroup
	for i, dc := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data, err := q.decode(&call{c: dc.c, d: chunker.SHA512_256}, dc.stored, Readahead)
			checkDecoded(t, dc, data, err)
		}()
		waitQueued(t, q, i+1)
	}
	q.release(Foreground)
	wg.Wait()
	if q.queued() != 0 || q.free != 1 {
		t.Fatalf("after: %d queued, %d free slots, want 0 and 1", q.queued(), q.free)
	}
}

// TestDecoderTakeBatch: a batch takes prefetch jobs of the lead's digest
// only, FIFO, at most maxDecodeBatch, and leaves Foreground jobs queued.
func TestDecoderTakeBatch(t *testing.T) {
	q := newDecoder(0)
	mk := func(p Priority, d chunker.Digest) *decodeJob { return &decodeJob{cl: &call{d: d}, prio: p} }
	fg := mk(Foreground, chunker.SHA512_256)
	other := mk(Readahead, chunker.SHA256)
	q.waiting[Foreground] = []*decodeJob{fg}
	q.waiting[Readahead] = []*decodeJob{other}
	for i := 0; i < maxDecodeBatch; i++ {
		q.waiting[Background] = append(q.waiting[Background], mk(Background, chunker.SHA512_256))
	}
	bg := append([]*decodeJob(nil), q.waiting[Background]...)
	lead := mk(Readahead, chunker.SHA512_256)
	b := q.takeBatch(lead)
	if len(b) != maxDecodeBatch || b[0] != lead {
		t.Fatalf("batch of %d, led by %p (want %p)", len(b), b[0], lead)
	}
	for i, o := range b[1:] {
		if o != bg[i] {
			t.Fatalf("batch member %d is not the Background job queued %d-th", i+1, i+1)
		}
	}
	if q.waiting[Background][0] != bg[maxDecodeBatch-1] {
		t.Fatal("the last Background job queued is not the one left")
	}
	if len(q.waiting[Foreground]) != 1 || len(q.waiting[Readahead]) != 1 || len(q.waiting[Background]) != 1 {
		t.Fatalf("left queued: %d %d %d, want 1 1 1", len(q.waiting[Foreground]), len(q.waiting[Readahead]), len(q.waiting[Background]))
	}
	if got := q.takeBatch(fg); len(got) != 1 {
		t.Fatalf("a Foreground lead took %d others", len(got)-1)
	}
}

// TestDecoderForegroundBatch: a Foreground lead takes waiting Foreground
// and Readahead jobs of its digest into its batch, at most fgBatch, when
// enough wait for a batch hashed side by side (else it goes alone); never
// Background jobs.
func TestDecoderForegroundBatch(t *testing.T) {
	q := newDecoder(0)
	mk := func(p Priority, d chunker.Digest) *decodeJob { return &decodeJob{cl: &call{d: d}, prio: p} }
	fg := mk(Foreground, chunker.SHA512_256)
	q.waiting[Foreground] = []*decodeJob{fg}
	q.waiting[Readahead] = []*decodeJob{mk(Readahead, chunker.SHA256)}
	for i := 0; i < fgBatch; i++ {
		q.waiting[Readahead] = append(q.waiting[Readahead], mk(Readahead, chunker.SHA512_256))
		q.waiting[Background] = append(q.waiting[Background], mk(Background, chunker.SHA512_256))
	}
	lead := mk(Foreground, chunker.SHA512_256)
	b := q.takeBatch(lead)
	if !chunker.SHA512_256.BatchWorth(fgBatch) {
		if len(b) != 1 {
			t.Fatalf("batches are no faster on this CPU, yet a Foreground lead took %d others", len(b)-1)
		}
		return
	}
	if len(b) != fgBatch || b[0] != lead || b[1] != fg {
		t.Fatalf("batch of %d (want %d), led by the lead %v, then the queued Foreground job %v", len(b), fgBatch, b[0] == lead, b[1] == fg)
	}
	for _, o := range b[2:] {
		if o.prio != Readahead || o.cl.d != chunker.SHA512_256 {
			t.Fatalf("a %v job of digest %v joined a Foreground batch", o.prio, o.cl.d)
		}
	}
	if len(q.waiting[Background]) != fgBatch || len(q.waiting[Foreground]) != 0 || len(q.waiting[Readahead]) != 3 {
		t.Fatalf("left queued: %d %d %d, want 0 3 %d", len(q.waiting[Foreground]), len(q.waiting[Readahead]), len(q.waiting[Background]), fgBatch)
	}
	// Two Readahead jobs of its digest wait: too few to batch.
	if b := q.takeBatch(mk(Foreground, chunker.SHA512_256)); len(b) != 1 {
		t.Fatalf("a Foreground lead with too few jobs waiting took %d others", len(b)-1)
	}

	// Decoding for real: the prefetch cap held (prefetch jobs cannot
	// lead), a Foreground decode that gets the one slot decodes the
	// Readahead ones waiting with it.
	q = newDecoder(0)
	q.prefetching = q.prefetchCap
	cases := decodeCases(t, fgBatch, 2)
	var dones []chan struct{}
	for i, dc := range cases[1:] {
		dones = append(dones, decodeAsync(t, q, &call{c: dc.c, d: chunker.SHA512_256}, dc, Readahead))
		waitQueued(t, q, i+1)
	}
	fgDone := decodeAsync(t, q, &call{c: cases[0].c, d: chunker.SHA512_256}, cases[0], Foreground)
	waitQueued(t, q, fgBatch)
	q.release(Foreground)
	<-fgDone
	if n := q.queued(); n != 0 {
		q.release(Readahead) // let them go, one batch
		t.Errorf("the Foreground decode left %d Readahead ones queued", n)
	}
	for _, d := range dones {
		<-d
	}
}

// capHeld returns a two-slot decoder one of whose slots a prefetch batch
// holds (the one slot prefetch may have), and n chunks to decode.
func capHeld(t *testing.T, n int) (*decoder, []decodeCase) {
	q := newDecoder(2)
	q.mu.Lock()
	q.take(Readahead)
	q.mu.Unlock()
	return q, decodeCases(t, n)
}

// decodeAsync decodes a chunk of fetch cl at priority p in a goroutine
// and checks the result; the returned channel closes when it is done.
func decodeAsync(t *testing.T, q *decoder, cl *call, dc decodeCase, p Priority) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		data, err := q.decode(cl, dc.stored, p)
		checkDecoded(t, dc, data, err)
	}()
	return done
}

// TestDecoderPrefetchCap: prefetch batches hold at most all slots but one,
// so a Foreground decode finds a slot while prefetch decodes wait.
func TestDecoderPrefetchCap(t *testing.T) {
	q, cases := capHeld(t, 2)
	done := decodeAsync(t, q, &call{c: cases[0].c, d: chunker.SHA512_256}, cases[0], Background)
	waitQueued(t, q, 1) // the free slot is not for it
	data, err := q.decode(&call{c: cases[1].c, d: chunker.SHA512_256}, cases[1].stored, Foreground)
	checkDecoded(t, cases[1], data, err)
	select {
	case <-done:
		t.Fatal("a second prefetch decode ran while one held a slot")
	default:
	}
	q.release(Readahead)
	<-done
	if q.queued() != 0 || q.free != 2 || q.prefetching != 0 {
		t.Fatalf("after: %d queued, %d free, %d prefetching; want 0, 2, 0", q.queued(), q.free, q.prefetching)
	}
}

// TestDecoderPromote: a prefetch decode waiting behind the prefetch cap is
// decoded at once when a reader comes to wait for its chunk.
func TestDecoderPromote(t *testing.T) {
	q, cases := capHeld(t, 1)
	cl := &call{c: cases[0].c, d: chunker.SHA512_256}
	done := decodeAsync(t, q, cl, cases[0], Readahead)
	waitQueued(t, q, 1)
	q.promote(cl, Foreground)
	<-done // decoded in the free slot while the batch still holds the other
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.free != 1 || q.prefetching != 1 || cl.job != nil {
		t.Fatalf("after: %d free, %d prefetching, job %v; want 1, 1, nil", q.free, q.prefetching, cl.job)
	}
}

// TestDecoderPromoteBeforeQueued: a reader that raises a fetch to
// Foreground after the worker read the fetch's priority but before its
// decode job is queued (Scheduler.raise calls promote while cl.job is
// still nil) still gets the chunk decoded at once in the free slot, not
// behind the prefetch cap.
func TestDecoderPromoteBeforeQueued(t *testing.T) {
	q, cases := capHeld(t, 1)
	cl := &call{c: cases[0].c, d: chunker.SHA512_256}
	q.promote(cl, Foreground) // raise: the worker read Readahead just before
	done := decodeAsync(t, q, cl, cases[0], Readahead)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the promoted decode waits behind the prefetch cap although a slot is free")
	}
	q.release(Readahead)
}

// TestDecoderTakeBatchBytes: a batch holds at most maxDecodeBatchBytes of
// chunks (the lead always goes); a chunk that does not fit stays queued for
// the next batch while smaller ones after it may join.
func TestDecoderTakeBatchBytes(t *testing.T) {
	q := newDecoder(0)
	mk := func(size uint64) *decodeJob {
		return &decodeJob{cl: &call{d: chunker.SHA512_256, c: chunker.Chunk{Size: size}}, prio: Readahead}
	}
	big, small1, huge, small2 := mk(2<<20), mk(1<<20), mk(3<<20), mk(1<<20)
	q.waiting[Readahead] = []*decodeJob{big, huge, small1, small2}
	b := q.takeBatch(mk(1 << 20))
	var total uint64
	for _, o := range b {
		total += o.cl.c.Size
	}
	if len(b) != 3 || b[1] != big || b[2] != small1 || total > maxDecodeBatchBytes {
		t.Fatalf("batch of %d jobs, %d bytes; want lead, big, small1 (4 MiB)", len(b), total)
	}
	if w := q.waiting[Readahead]; len(w) != 2 || w[0] != huge || w[1] != small2 {
		t.Fatalf("left queued: %d jobs, want huge and small2", len(w))
	}
	if b := q.takeBatch(mk(8 << 20)); len(b) != 1 {
		t.Fatalf("a lead beyond the byte bound took %d others", len(b)-1)
	}
}

// TestDecoderGathers: with slots free, prefetched chunks wait to be
// decoded together (the wait ended here by hand, not by a clock) until
// gatherBatch of them are there; a Foreground chunk never waits, nor do
// chunks whose digest gains nothing from batches.
func TestDecoderGathers(t *testing.T) {
	if !chunker.SHA512_256.BatchFaster() {
		t.Skip("this CPU has neither AVX2 nor AVX-512: SumBatch is no faster in batches, and nothing gathers")
	}
	q := newDecoder(2)
	q.gatherWait = time.Hour
	var mu sync.Mutex
	var fire func()
	q.after = func(_ time.Duration, f func()) *time.Timer {
		mu.Lock()
		defer mu.Unlock()
		fire = f
		return time.NewTimer(time.Hour)
	}
	cases := decodeCases(t, gatherBatch+2)
	var wg sync.WaitGroup
	var done sync.Map
	start := func(i int, p Priority, d chunker.Digest) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dc := cases[i]
			data, err := q.decode(&call{c: dc.c, d: d}, dc.stored, p)
			checkDecoded(t, dc, data, err)
			done.Store(i, true)
		}()
	}

	// A Foreground chunk is decoded at once.
	start(3, Foreground, chunker.SHA512_256)
	wg.Wait()
	if fire != nil {
		t.Fatal("a Foreground decode armed a gathering wait")
	}
	// Three prefetched chunks wait, though both slots are free, until the
	// gathering wait ends (or a slot is released: then the waiting go as
	// one batch); then they are decoded together.
	for i := 0; i < 3; i++ {
		start(i, Readahead, chunker.SHA512_256)
	}
	waitQueued(t, q, 3)
	for i := 0; i < 3; i++ {
		if _, ok := done.Load(i); ok {
			t.Fatalf("prefetched chunk %d decoded before the gathering wait ended", i)
		}
	}
	mu.Lock()
	f := fire
	mu.Unlock()
	if f == nil {
		t.Fatal("no gathering wait was armed")
	}
	f()
	wg.Wait()
	if q.queued() != 0 || q.free != 2 {
		t.Fatalf("after the wait: %d queued, %d slots free", q.queued(), q.free)
	}

	// gatherBatch prefetched chunks need no wait: the last one to come
	// leads a batch of all.
	fire = nil
	for i := 0; i < gatherBatch-1; i++ {
		start(i, Background, chunker.SHA512_256)
	}
	waitQueued(t, q, gatherBatch-1)
	start(gatherBatch-1, Readahead, chunker.SHA512_256)
	wg.Wait() // no call of fire: a hang here is the failure
	if q.queued() != 0 || q.free != 2 {
		t.Fatalf("after the batch: %d queued, %d slots free", q.queued(), q.free)
	}
}

// TestDecoderNoGatherSHA256: SHA-256 chunks (no side-by-side hashing) are
// decoded at once, prefetched or not.
func TestDecoderNoGatherSHA256(t *testing.T) {
	q := newDecoder(2)
	q.gatherWait = time.Hour
	q.after = func(time.Duration, func()) *time.Timer {
		t.Error("a gathering wait was armed for SHA-256 chunks")
		return time.NewTimer(time.Hour)
	}
	r := rand.New(rand.NewPCG(9, 9))
	for i := 0; i < 3; i++ {
		data := make([]byte, 1000+r.IntN(1000))
		stored, err := Compress(Zstd, data)
		if err != nil {
			t.Fatal(err)
		}
		c := chunker.Chunk{ID: chunker.SHA256.Sum(data), Size: uint64(len(data))}
		got, err := q.decode(&call{c: c, d: chunker.SHA256}, stored, Readahead)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("decode: %d bytes, %v", len(got), err)
		}
	}
}
