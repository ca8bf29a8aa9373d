// Package extract writes out the blob a .caibx index describes: to a
// regular file (through a temporary file renamed over the target only once
// every chunk is written and verified, so a failed or interrupted extract
// never leaves a file that looks complete and never destroys an older good
// copy), to a block device (in place), or as a stream to a writer.
//
// Every chunk comes through a fetch.Blob, whose scheduler verifies it
// against the index whatever store (or seed) supplied it.
package extract

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
	"github.com/camount/camount/seed"
)

// From says where the bytes of a written chunk came from.
type From int

const (
	FromStore From = iota // fetched through the scheduler (stores, disk cache)
	FromSeed              // read from a seed and verified
	FromZero              // a zero chunk (a hole, or zeros written)
)

// Options configure an extract. The zero value of each field is the
// documented default.
type Options struct {
	// Log receives warnings; nil discards them.
	Log *slog.Logger
	// Progress, if set, is called (from several goroutines) after each
	// chunk is written, with its size and where it came from.
	Progress func(n int64, from From)
	// WriteZeros writes zero chunks into a regular file instead of leaving
	// holes (casync's --punch-holes=no). Block devices always get zeros.
	WriteZeros bool
	// Seeds, if set, supply chunks before the scheduler is asked for
	// them; Blob adds the output (SeedOutput) and starts the scans.
	Seeds *seed.Set
	// SeedOutput uses an existing regular-file output as a seed
	// (casync's --seed-output=yes); false: not.
	SeedOutput bool
	// ScanCache, if set, keeps seed scans, and Blob records the image it
	// wrote, so that the next update seeded from it needs no scan.
	ScanCache *seed.ScanCache
	// Reflink says whether seeded ranges are cloned into a regular-file
	// output; the zero value is ReflinkAuto.
	Reflink Reflink
	// Workers is the number of chunks assembled at once; 0 means
	// max(32, 2*GOMAXPROCS), enough to hide network latency (the scheduler
	// bounds the real fetch concurrency).
	Workers int
}

// Result counts what an extract did.
type Result struct {
	Size                      int64 // bytes of the image
	Chunks                    int   // chunks in the index
	FetchedChunks             int64 // chunks taken through the scheduler
	FetchedBytes              int64
	SeededChunks, SeededBytes int64 // chunks read from seeds
	ReflinkedBytes            int64 // of those, bytes cloned instead of copied
	ZeroBytes                 int64 // bytes of zero chunks
}

type counters struct {
	fetched, fetchedBytes atomic.Int64
	seeded, seededBytes   atomic.Int64
	reflinked, zero       atomic.Int64
}

func (c *counters) result(x *chunker.Index) *Result {
	return &Result{
		Size: int64(x.Size()), Chunks: len(x.Chunks),
		FetchedChunks: c.fetched.Load(), FetchedBytes: c.fetchedBytes.Load(),
		SeededChunks: c.seeded.Load(), SeededBytes: c.seededBytes.Load(),
		ReflinkedBytes: c.reflinked.Load(), ZeroBytes: c.zero.Load(),
	}
}

func (o *Options) workers() int {
	if o.Workers > 0 {
		return o.Workers
	}
	return max(32, 2*runtime.GOMAXPROCS(0))
}

func (o *Options) log() *slog.Logger {
	if o.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Log
}

func (o *Options) progress(n int64, from From) {
	if o.Progress != nil {
		o.Progress(n, from)
	}
}

// Blob writes the blob b to target: a regular file (created, or replaced
// only on success) or a block device (written in place; a failure leaves
// it partially written and is reported as a *PartialDeviceError). Other
// kinds of target are refused with ErrNotSeekable. On any failure,
// including ctx ending (SIGINT, SIGTERM), the temporary file is removed
// and an existing target is left untouched.
func Blob(ctx context.Context, b *fetch.Blob, target string, o Options) (*Result, error) {
	out, err := openOutput(target, b.Size())
	if err != nil {
		return nil, err
	}
	var cnt counters
	var wrote atomic.Bool
	err = assemble(ctx, b, out, &o, &cnt, &wrote)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		out.abort()
		if out.device && wrote.Load() {
			return nil, &PartialDeviceError{Device: out.target, Err: err}
		}
		return nil, err
	}
	if err := out.commit(); err != nil {
		return nil, err
	}
	if o.ScanCache != nil && !out.device {
		if err := o.ScanCache.Record(out.target, b.Index()); err != nil {
			o.log().Debug("cannot record the output's chunks in the scan cache", "err", err)
		}
	}
	return cnt.result(b.Index()), nil
}

// assemble writes every chunk of b into out.f at its offset: from a seed
// when one holds it (verified), else through the scheduler.
func assemble(ctx context.Context, b *fetch.Blob, out *output, o *Options, cnt *counters, wrote *atomic.Bool) error {
	x := b.Index()
	holes := !out.device && !o.WriteZeros
	// Identical chunks are fetched once and written at each of their
	// places: an extract runs without a memory cache, so a repeat would
	// otherwise be fetched again.
	firstOf := make(map[chunker.ID]int, len(x.Chunks))
	copies := map[int][]int{}
	var firsts []int
	for i, c := range x.Chunks {
		if b.IsZero(i) {
			continue
		}
		if j, ok := firstOf[c.ID]; ok {
			copies[j] = append(copies[j], i)
			continue
		}
		firstOf[c.ID] = i
		firsts = append(firsts, i)
	}
	// Every chunk is a fresh allocation and almost nothing stays live, so
	// the default GC would run every few MB: let the heap grow further.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var wg sync.WaitGroup
	var errOnce sync.Once
	var firstErr error
	fail := func(err error) { errOnce.Do(func() { firstErr = err; cancel() }) }
	// claimed[i]: the first copy of chunk i is being or has been written.
	claimed := make([]atomic.Bool, len(x.Chunks))
	var sd *seeder
	// writeSeeded writes verified seeded bytes at every place of chunk i.
	writeSeeded := func(i int, data []byte, loc seed.Location) {
		c := x.Chunks[i]
		for _, j := range append([]int{i}, copies[i]...) {
			n, err := sd.write(data, loc, int64(x.Chunks[j].Start), wrote)
			if err != nil {
				fail(err)
				return
			}
			sd.seamNote(j, loc, int64(x.Chunks[j].Start))
			cnt.reflinked.Add(n)
			cnt.seeded.Add(1)
			cnt.seededBytes.Add(int64(c.Size))
			o.progress(int64(c.Size), FromSeed)
		}
	}
	if set := o.Seeds; set != nil || (o.SeedOutput && out.old != nil) {
		if set == nil {
			set = seed.NewSet(x, seed.SetOptions{Log: o.Log, Zero: fetch.ZeroChunks(x)})
			defer set.Close()
		}
		if o.SeedOutput && !out.device {
			own, err := outputSeed(out, seed.ParamsOf(x), o.ScanCache)
			if err != nil {
				o.log().Warn("the existing output is not used as a seed", "output", out.target, "err", err)
			} else if own != nil {
				set.Add(own)
			}
		}
		sd = &seeder{set: set, d: x.Digest(), out: out, mode: o.Reflink, log: o.log()}
		if sd.mode != ReflinkNo && !out.device {
			sd.seams = make([]seam, len(x.Chunks))
		}
		// A chunk a scan finds comes with the bytes it hashed to the
		// chunk's ID: written at once, it is neither read nor hashed again.
		set.SetOnData(func(id chunker.ID, loc seed.Location) {
			i, ok := firstOf[id]
			if !ok || ctx.Err() != nil || !claimed[i].CompareAndSwap(false, true) {
				return
			}
			writeSeeded(i, loc.Data, loc)
		})
		set.Start(ctx)
	}

	// Zero chunks: holes in a fresh file, or zeros written.
	for i, c := range x.Chunks {
		if !b.IsZero(i) {
			continue
		}
		if !holes {
			if err := writeAt(out.f, zeroBytes(c.Size), int64(c.Start), wrote); err != nil {
				return err
			}
		}
		cnt.zero.Add(int64(c.Size))
		o.progress(int64(c.Size), FromZero)
	}
	jobs := make(chan int)
	var set *seed.Set
	if sd != nil {
		set = sd.set
		// A seed that cannot be read whole is an error (unless seeds are
		// optional: the Set then only warns): stop at once.
		go func() {
			if err := set.Wait(ctx); err != nil && ctx.Err() == nil {
				fail(err)
			}
		}()
	}
	go dispatch(ctx, set, x, firsts, jobs)
	for w := 0; w < o.workers(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if ctx.Err() != nil {
					continue // drain
				}
				if !claimed[i].CompareAndSwap(false, true) {
					continue // written from a scan
				}
				c := x.Chunks[i]
				places := append([]int{i}, copies[i]...)
				if data, loc, ok := sd.chunk(c); ok {
					writeSeeded(i, data, loc)
					continue
				}
				// Readahead, not Foreground: an extract is a bulk reader,
				// and its chunks then decode in batches, hashed side by
				// side (fetch's decoder gathers them; ~15% less CPU).
				data, err := b.Chunk(ctx, i, fetch.Readahead)
				if err != nil {
					fail(err)
					continue
				}
				for _, j := range places {
					if err := writeAt(out.f, data, int64(x.Chunks[j].Start), wrote); err != nil {
						fail(err)
						break
					}
					cnt.fetched.Add(1)
					cnt.fetchedBytes.Add(int64(c.Size))
					o.progress(int64(c.Size), FromStore)
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		if set != nil {
			// Scans write into the output (OnData): stop them before the
			// caller closes it.
			cancel()
			<-set.Done()
		}
		return firstErr
	}
	if set != nil {
		// A seed that could not be read is an error unless seeds are
		// optional (the Set then only warned).
		err := set.Wait(ctx)
		if ctx.Err() != nil {
			<-set.Done() // the scans stop with ctx; they may write until then
			return ctx.Err()
		}
		if err != nil {
			return err
		}
	}
	// Every chunk is written: clone the blocks that straddle two chunks
	// seeded from one stretch of a seed.
	n, err := sd.cloneSeams(x)
	cnt.reflinked.Add(n)
	return err
}

func writeAt(f *os.File, p []byte, off int64, wrote *atomic.Bool) error {
	wrote.Store(true)
	if _, err := f.WriteAt(p, off); err != nil {
		return err
	}
	return nil
}

var zeroBuf []byte
var zeroOnce sync.Once

// zeroBytes returns a shared read-only slice of n zeros (n <= the
// largest chunk size casync allows).
func zeroBytes(n uint64) []byte {
	zeroOnce.Do(func() { zeroBuf = make([]byte, chunker.MaxChunkSizeLimit) })
	return zeroBuf[:n]
}

// streamWindow bounds the bytes fetched ahead of the writer by Stream.
const streamWindow = 64 << 20

// Stream writes the blob b to w in order (standard output, a pipe),
// fetching ahead of the writer in parallel, up to about 64 MiB.
func Stream(ctx context.Context, b *fetch.Blob, w io.Writer, o Options) (*Result, error) {
	x := b.Index()
	var cnt counters
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		data []byte
		err  error
	}
	// Each chunk gets a slot; the producer starts fetches while the bytes
	// in flight stay under the window, the consumer writes slots in order.
	slots := make(chan chan result, o.workers())
	var inflight atomic.Int64
	room := make(chan struct{}, 1)
	go func() {
		defer close(slots)
		for i, c := range x.Chunks {
			for inflight.Load() > streamWindow {
				select {
				case <-room:
				case <-ctx.Done():
					return
				}
			}
			ch := make(chan result, 1)
			select {
			case slots <- ch:
			case <-ctx.Done():
				return
			}
			inflight.Add(int64(c.Size))
			go func(i int) {
				data, err := b.Chunk(ctx, i, fetch.Readahead) // a bulk reader, as above
				ch <- result{data, err}
			}(i)
		}
	}()
	for i := 0; ; i++ {
		ch, ok := <-slots
		if !ok {
			break
		}
		var r result
		select {
		case r = <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if r.err != nil {
			return nil, r.err
		}
		if _, err := w.Write(r.data); err != nil {
			return nil, fmt.Errorf("writing the stream: %w", err)
		}
		n := int64(len(r.data))
		inflight.Add(-n)
		select {
		case room <- struct{}{}:
		default:
		}
		if b.IsZero(i) {
			cnt.zero.Add(n)
			o.progress(n, FromZero)
		} else {
			cnt.fetched.Add(1)
			cnt.fetchedBytes.Add(n)
			o.progress(n, FromStore)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return cnt.result(x), nil
}

// IsPartialDevice reports whether err says a block device was left
// partially written.
func IsPartialDevice(err error) bool {
	var pe *PartialDeviceError
	return errors.As(err, &pe)
}
