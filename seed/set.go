package seed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
)

// SetOptions configure a Set. The zero value of each field is the default.
type SetOptions struct {
	// Log receives warnings (a seed that failed to scan); nil discards.
	Log *slog.Logger
	// OnFound, if set, is called (from scanning goroutines) the first time
	// a location of a wanted chunk becomes known.
	OnFound func(id chunker.ID)
	// Optional makes a seed that fails to scan a warning instead of an
	// error of Wait (--seed-optional).
	Optional bool
	// Zero lists chunks never to look for (the target's zero chunks,
	// served without any store); nil: none.
	Zero []bool
	// WaitScan, for lazy readers: Get of a chunk no seed has shown yet
	// waits while the scan of the last seed is about to pass the chunk's
	// offset in the target (seeds of an image mostly hold a chunk near
	// its own offset), as long as the scan's rate says it gets there
	// within WaitScan. 0: never wait.
	WaitScan time.Duration
}

type wanted struct{ size, off int64 }

// Set gathers, from any number of seeds, the locations of the chunks a
// target index wants, and serves them as a fetch.Store (Get returns the
// raw chunk bytes; the scheduler verifies them like any store's). Only
// wanted chunk IDs are kept: memory is bounded by the target, not the
// seeds. Lookups work while seeds are still being scanned.
type Set struct {
	o     SetOptions
	p     Params
	want  map[chunker.ID]wanted
	seeds []Seed

	targetSize int64

	// The scan front, for Get's wait (SetOptions.WaitScan): how far the
	// seed being scanned has got, which seed that is, and when it started.
	front     atomic.Int64
	scanning  atomic.Int64 // index in seeds of the seed being scanned
	scanStart atomic.Int64 // unix nanoseconds
	wmu       sync.Mutex
	moved     *sync.Cond // broadcast as the front moves (every MiB) and when scans end

	mu   sync.RWMutex
	locs map[chunker.ID]Location // guarded by mu

	started atomic.Bool
	done    chan struct{}
	err     error // set before done is closed

	// Served and ServedBytes count chunks read for Get (before the
	// scheduler verifies them).
	Served, ServedBytes atomic.Int64
}

// NewSet returns an empty set for target x.
func NewSet(x *chunker.Index, o SetOptions) *Set {
	s := &Set{o: o, p: ParamsOf(x), want: make(map[chunker.ID]wanted, len(x.Chunks)),
		locs: map[chunker.ID]Location{}, done: make(chan struct{})}
	s.moved = sync.NewCond(&s.wmu)
	s.targetSize = int64(x.Size())
	if s.o.Log == nil {
		s.o.Log = slog.New(slog.DiscardHandler)
	}
	for i, c := range x.Chunks {
		if o.Zero != nil && o.Zero[i] {
			continue
		}
		if _, ok := s.want[c.ID]; !ok {
			s.want[c.ID] = wanted{int64(c.Size), int64(c.Start)}
		}
	}
	return s
}

// Params returns the parameters seeds must be opened with.
func (s *Set) Params() Params { return s.p }

// Add adds a seed; it must be called before Start. The set closes it.
func (s *Set) Add(sd Seed) { s.seeds = append(s.seeds, sd) }

// Seeds returns the seeds added.
func (s *Set) Seeds() []Seed { return s.seeds }

// Len returns the number of seeds.
func (s *Set) Len() int { return len(s.seeds) }

// Start scans the seeds in the background, one after the other (index
// seeds first, as they cost nothing), and returns at once. Wait or Done
// tell when every scan has ended.
func (s *Set) Start(ctx context.Context) {
	if s.started.Swap(true) {
		return
	}
	s.scanStart.Store(time.Now().UnixNano())
	go func() {
		LowerPriority(ctx)
		var errs []error
		defer func() {
			s.wmu.Lock()
			s.moved.Broadcast()
			s.wmu.Unlock()
		}()
		for i, sd := range s.seeds {
			s.front.Store(0)
			s.scanStart.Store(time.Now().UnixNano())
			s.scanning.Store(int64(i))
			if err := sd.Scan(ctx, s.found); err != nil {
				if ctx.Err() != nil {
					errs = append(errs, ctx.Err())
					break
				}
				if s.o.Optional {
					s.o.Log.Warn("seed not used", "seed", sd.String(), "err", err)
					continue
				}
				errs = append(errs, err)
			}
		}
		s.err = errors.Join(errs...)
		close(s.done)
	}()
}

// Done returns a channel closed when every scan has ended.
func (s *Set) Done() <-chan struct{} { return s.done }

// Wait waits for every scan to end and returns their errors.
func (s *Set) Wait(ctx context.Context) error {
	select {
	case <-s.done:
		return s.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Set) found(id chunker.ID, loc Location) {
	if end := loc.Off + loc.Size; s.o.WaitScan > 0 && end > s.front.Load() {
		if old := s.front.Swap(end); old>>20 != end>>20 {
			s.wmu.Lock()
			s.moved.Broadcast()
			s.wmu.Unlock()
		}
	}
	w, ok := s.want[id]
	if !ok || w.size != loc.Size {
		return
	}
	s.mu.Lock()
	_, had := s.locs[id]
	if !had {
		s.locs[id] = loc
	}
	s.mu.Unlock()
	if !had && s.o.OnFound != nil {
		s.o.OnFound(id)
	}
}

// Lookup returns where a wanted chunk lies, if a seed scanned so far has it.
func (s *Set) Lookup(id chunker.ID) (Location, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	l, ok := s.locs[id]
	return l, ok
}

// Forget drops the location of a chunk whose seeded bytes failed
// verification, so it is not read again.
func (s *Set) Forget(id chunker.ID) {
	s.mu.Lock()
	delete(s.locs, id)
	s.mu.Unlock()
}

// Known returns the number of wanted chunks found so far.
func (s *Set) Known() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.locs)
}

// Read returns the bytes at a location (unverified).
func Read(l Location) ([]byte, error) {
	b := make([]byte, l.Size)
	n, err := l.R.ReadAt(b, l.Off)
	if n == len(b) {
		return b, nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF // the seed shrank since its scan
	}
	return nil, err
}

// Get implements fetch.Store: the raw bytes of a chunk a seed holds, or
// an error wrapping fetch.ErrNotFound. The scheduler verifies them.
func (s *Set) Get(ctx context.Context, id chunker.ID) ([]byte, error) {
	l, ok := s.Lookup(id)
	if !ok && s.o.WaitScan > 0 {
		l, ok = s.waitScan(ctx, id)
	}
	if !ok {
		return nil, fmt.Errorf("seeds: %w", fetch.ErrNotFound)
	}
	b, err := Read(l)
	if err != nil {
		s.Forget(id)
		return nil, fmt.Errorf("reading chunk %s from a seed at offset %d: %w", id, l.Off, err)
	}
	s.Served.Add(1)
	s.ServedBytes.Add(l.Size)
	return b, nil
}

// IsSeed implements fetch.Seeder: seeded chunks are not copied into the
// disk cache.
func (s *Set) IsSeed() bool { return true }

// scanMargin is how far past a chunk's target offset the scan must get
// before a waiting Get gives up on the seed (data moves a little between
// versions of an image).
const scanMargin = 16 << 20

// waitScan waits, within the bounds of SetOptions.WaitScan, for the scan
// of the last seed to pass the target offset of chunk id.
func (s *Set) waitScan(ctx context.Context, id chunker.ID) (Location, bool) {
	w, ok := s.want[id]
	if !ok {
		return Location{}, false
	}
	deadline := time.Now().Add(s.o.WaitScan)
	goal := w.off + scanMargin
	// The scan ends at the seed's end: it need not get further.
	end := s.targetSize
	if sz, ok := s.seeds[len(s.seeds)-1].(interface{ Size() int64 }); ok {
		end = sz.Size()
	}
	goal = min(goal, end)
	for {
		select {
		case <-s.done:
			return s.Lookup(id)
		default:
		}
		if int(s.scanning.Load()) != len(s.seeds)-1 || ctx.Err() != nil {
			return Location{}, false // earlier seeds first: their fronts say nothing of this chunk
		}
		front := s.front.Load()
		if front >= goal {
			return s.Lookup(id)
		}
		// Will the scan get there in time, at the rate it has had?
		el := time.Since(time.Unix(0, s.scanStart.Load()))
		left := time.Until(deadline)
		if left <= 0 || el <= 0 || front == 0 {
			if left <= 0 || front == 0 && el > s.o.WaitScan {
				return Location{}, false
			}
		} else if rate := float64(front) / el.Seconds(); float64(goal-front)/rate > left.Seconds() {
			return Location{}, false
		}
		if l, ok := s.Lookup(id); ok {
			return l, true
		}
		s.wmu.Lock()
		t := time.AfterFunc(min(left, 100*time.Millisecond), func() {
			s.wmu.Lock()
			s.moved.Broadcast()
			s.wmu.Unlock()
		})
		s.moved.Wait()
		s.wmu.Unlock()
		t.Stop()
		if l, ok := s.Lookup(id); ok {
			return l, true
		}
	}
}

// String implements fetch.Store.
func (s *Set) String() string { return "seeds" }

// Close closes every seed (after stopping nothing: cancel Start's ctx first).
func (s *Set) Close() error {
	var errs []error
	for _, sd := range s.seeds {
		errs = append(errs, sd.Close())
	}
	return errors.Join(errs...)
}

var (
	_ fetch.Store  = (*Set)(nil)
	_ fetch.Seeder = (*Set)(nil)
)
