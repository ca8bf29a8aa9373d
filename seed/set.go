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
	// OnData, if set, is called (from the scanning goroutine) when a scan
	// first finds a wanted chunk and has its bytes (Location.Data, the
	// bytes the scan hashed to id: the chunk, verified); the bytes are
	// valid only during the call. Extract writes them at once, so a
	// chunk found by a scan is neither read nor hashed again.
	OnData func(id chunker.ID, loc Location)
	// Optional makes a seed that fails to scan a warning instead of an
	// error of Wait (--seed-optional).
	Optional bool
	// Zero lists chunks never to look for (the target's zero chunks,
	// served without any store); nil: none.
	Zero []bool
	// Nearby, for lazy readers: while scans go on, Get of a chunk no
	// seed has shown yet first scans the bytes of each seed that can
	// (RangeScanner) around the chunk's offset in the target: seeds of an
	// image mostly hold a chunk near its own offset, so a reader finds
	// its chunks without waiting for the whole scan. false: Get only
	// looks up what the scans found so far.
	Nearby bool
	// Wait, for lazy readers (with Nearby): how long Get of a chunk no
	// scan has found yet waits for the scans to find it or end, before
	// the chunk is fetched; meanwhile the scans run at normal priority
	// (a reader is held up by them). A chunk a seed holds is therefore
	// fetched only if the scans take longer than Wait. 0 means
	// DefaultWait; negative: no wait (Get looks up what the scans and
	// nearby scans found so far).
	Wait time.Duration
	// Ahead, for lazy readers: a Get waiting for the scans gives up (the
	// chunk is fetched) once every seed's whole scan is Ahead bytes past
	// the chunk's offset in the target without finding it, instead of
	// waiting for the scans to end: a reader then moves along behind the
	// scans rather than waiting for the whole seed at its first chunk no
	// seed holds. A chunk a seed holds more than Ahead past its place in
	// the target may then be fetched (never one the scans have passed).
	// 0 means DefaultAhead; negative: wait for the scans to end (fetch
	// exactly what extract --seed fetches).
	Ahead int64
}

// DefaultAhead is SetOptions.Ahead's default: an image update mostly
// leaves data where it was or moves it a little (on the reference corpus
// no chunk of v2 lies in v1 past its own offset).
const DefaultAhead = 64 << 20

// DefaultWait is SetOptions.Wait's default: well under the scheduler's
// default read timeout, so that a reader waiting for a scan still gets
// its chunk from the store in time.
const DefaultWait = 20 * time.Second

// waiter is a Get waiting for a scan to find its chunk.
type waiter struct {
	ch   chan struct{} // closed when data or loc is set
	data []byte        // a copy of the bytes the scan hashed, or nil
	loc  Location
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
	x     *chunker.Index // the target: file seeds' scans are guided by it

	targetSize int64

	rmu     sync.Mutex
	regions map[regionKey]chan struct{} // guarded by rmu: nearby scans started; closed when done
	rsem    chan struct{}               // bounds nearby scans at once (memory)

	mu      sync.RWMutex
	locs    map[chunker.ID]Location  // guarded by mu
	waiters map[chunker.ID][]*waiter // guarded by mu

	boost *boost // readers waiting for the scans

	started atomic.Bool
	ended   []*atomic.Bool // by seed: its scan ended (Start)
	done    chan struct{}
	err     error // set before done is closed

	// Served and ServedBytes count chunks read for Get (before the
	// scheduler verifies them).
	Served, ServedBytes atomic.Int64
	// Waits counts Gets that waited for the scans; WaitTimeouts those
	// that gave up after SetOptions.Wait.
	// Passed counts those that gave up because the scans had gone
	// SetOptions.Ahead past the chunk's offset.
	// Delivered counts those the scan handed the bytes it had just
	// hashed (no second read of the seed).
	Waits, WaitTimeouts, Passed, Delivered atomic.Int64
}

// NewSet returns an empty set for target x.
func NewSet(x *chunker.Index, o SetOptions) *Set {
	s := &Set{o: o, p: ParamsOf(x), want: make(map[chunker.ID]wanted, len(x.Chunks)),
		locs: map[chunker.ID]Location{}, waiters: map[chunker.ID][]*waiter{}, done: make(chan struct{}), boost: newBoost()}
	if s.o.Wait == 0 {
		s.o.Wait = DefaultWait
	}
	if s.o.Ahead == 0 {
		s.o.Ahead = DefaultAhead
	}
	s.targetSize = int64(x.Size())
	s.x = x
	s.regions = map[regionKey]chan struct{}{}
	s.rsem = make(chan struct{}, 2)
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
func (s *Set) Add(sd Seed) {
	s.seeds = append(s.seeds, sd)
	s.ended = append(s.ended, new(atomic.Bool))
}

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
	ctx = withBoost(ctx, s.boost)
	// Quick seeds (indexes, cached scans) are scanned before Start
	// returns, so that their chunks are usable at once; the others in
	// the background.
	var slow []Seed
	var errs []error
	for _, sd := range s.seeds {
		if gd, ok := sd.(interface {
			Guide(x *chunker.Index, zero []bool)
		}); ok {
			gd.Guide(s.x, s.o.Zero) // guided.go
		}
		if q, ok := sd.(Quick); !ok || !q.Quick() {
			slow = append(slow, sd)
			continue
		}
		err := sd.Scan(ctx, s.found)
		s.ended[s.seedIndex(sd)].Store(true)
		if err != nil {
			if ctx.Err() != nil {
				errs = append(errs, ctx.Err())
				slow = nil
				break
			}
			if s.o.Optional {
				s.o.Log.Warn("seed not used", "seed", sd.String(), "err", err)
				continue
			}
			errs = append(errs, err)
		}
	}
	go func() {
		LowerPriority(ctx)
		for _, sd := range slow {
			err := sd.Scan(ctx, s.found)
			s.ended[s.seedIndex(sd)].Store(true)
			if err != nil {
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

// Quick is implemented by seeds whose Scan costs next to nothing when
// Quick reports true (an index; a file whose scan is cached): Set.Start
// scans those before it returns.
type Quick interface{ Quick() bool }

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
	w, ok := s.want[id]
	if !ok || w.size != loc.Size {
		return
	}
	data := loc.Data
	loc.Data = nil // never kept: the scan reuses it
	s.mu.Lock()
	_, had := s.locs[id]
	var ws []*waiter
	if !had {
		s.locs[id] = loc
		if ws = s.waiters[id]; ws != nil {
			delete(s.waiters, id)
		}
	}
	s.mu.Unlock()
	for _, wt := range ws {
		// The waiting readers take the bytes just hashed (a copy: the
		// scan reuses them), so the seed is not read again for them.
		wt.loc = loc
		if data != nil {
			wt.data = append([]byte(nil), data...)
		}
		close(wt.ch)
	}
	if !had && data != nil && s.o.OnData != nil {
		loc.Data = data
		s.o.OnData(id, loc)
	}
}

// SetOnData sets SetOptions.OnData; call it before Start.
func (s *Set) SetOnData(f func(id chunker.ID, loc Location)) { s.o.OnData = f }

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
	if ok && s.o.Nearby {
		s.keepAhead(id)
	}
	if !ok && s.o.Nearby {
		var b []byte
		if b, l, ok = s.await(ctx, id); ok && b != nil {
			s.Delivered.Add(1)
			s.Served.Add(1)
			s.ServedBytes.Add(l.Size)
			return b, nil
		}
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

// await finds a wanted chunk no scan has found yet, for a lazy reader:
// by scanning the regions around its offset in the target when no whole
// scan is near there, then by waiting (at most SetOptions.Wait, with the
// scans boosted meanwhile) for the scans to find it or end. It returns the
// bytes the scan hashed (a copy) when it delivered them, else nil and the
// location.
func (s *Set) await(ctx context.Context, id chunker.ID) ([]byte, Location, bool) {
	select {
	case <-s.done:
		l, ok := s.Lookup(id)
		return nil, l, ok
	default:
	}
	if _, ok := s.want[id]; !ok {
		return nil, Location{}, false
	}
	if l, ok := s.nearby(ctx, id); ok {
		return nil, l, true
	}
	if s.o.Wait < 0 {
		return nil, Location{}, false
	}
	s.mu.Lock()
	if l, ok := s.locs[id]; ok {
		s.mu.Unlock()
		return nil, l, true
	}
	wt := &waiter{ch: make(chan struct{})}
	s.waiters[id] = append(s.waiters[id], wt)
	s.mu.Unlock()
	s.Waits.Add(1)
	s.boost.add(1)
	defer s.boost.add(-1)
	tm := time.NewTimer(s.o.Wait)
	defer tm.Stop()
	var tick <-chan time.Time
	if s.o.Ahead >= 0 {
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		tick = tk.C
	}
	past := s.want[id].off + s.want[id].size + s.o.Ahead
wait:
	for {
		select {
		case <-wt.ch:
			return wt.data, wt.loc, true
		case <-s.done:
			break wait
		case <-tick:
			if s.passed(past) {
				s.Passed.Add(1)
				break wait
			}
		case <-tm.C:
			s.WaitTimeouts.Add(1)
			s.o.Log.Debug("seed scans too slow for a read: fetching the chunk", "chunk", id, "waited", s.o.Wait)
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	s.mu.Lock()
	ws := s.waiters[id]
	for i, w := range ws {
		if w == wt {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(s.waiters, id)
	} else {
		s.waiters[id] = ws
	}
	s.mu.Unlock()
	select {
	case <-wt.ch: // delivered meanwhile
		return wt.data, wt.loc, true
	default:
	}
	l, ok := s.Lookup(id)
	return nil, l, ok
}

// keepAhead boosts the scans while a reader reads close behind them (less
// than twice SetOptions.Ahead): it will soon wait for them otherwise, and
// a scan left at nice 19 on a loaded machine falls behind.
func (s *Set) keepAhead(id chunker.ID) {
	if s.o.Ahead < 0 || !s.started.Load() {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	w := s.want[id]
	lead := 2 * s.o.Ahead
	for i, sd := range s.seeds {
		if s.ended[i].Load() {
			continue
		}
		if sc, ok := sd.(interface{ Scanned() int64 }); ok && sc.Scanned() < w.off+lead {
			s.boost.touch()
		}
		return // the seed being scanned now
	}
}

// passed reports whether every seed's whole scan has ended or reported
// every chunk up to seed offset off (seeds that cannot tell: ended).
func (s *Set) passed(off int64) bool {
	for i, sd := range s.seeds {
		if s.ended[i].Load() {
			continue
		}
		sc, ok := sd.(interface{ Scanned() int64 })
		if !ok || sc.Scanned() < off {
			return false
		}
	}
	return true
}

// seedIndex returns the position of sd among the seeds.
func (s *Set) seedIndex(sd Seed) int {
	for i, x := range s.seeds {
		if x == sd {
			return i
		}
	}
	return 0
}

// IsSeed implements fetch.Seeder: seeded chunks are not copied into the
// disk cache.
func (s *Set) IsSeed() bool { return true }

// RangeScanner is implemented by seeds that can scan part of themselves
// (file seeds): ScanRange reports the chunks found by chunking the seed's
// bytes [off, off+n) on their own. Cuts made from off differ from a whole
// scan's for a few chunks, then agree; every chunk reported is a true
// range of the seed whatever its cuts.
type RangeScanner interface {
	ScanRange(ctx context.Context, off, n int64, found Found) error
}

// Nearby scans cover regions of regionSize bytes of a seed, each chunked
// from regionPad before it to regionPad after it, so that the cuts agree
// with a whole scan's inside the region.
const (
	regionSize = 4 << 20
	regionPad  = 1 << 20
)

// nearbyAhead: regions less than this ahead of a whole scan are not
// scanned on their own; a reader waits for the whole scan instead.
const nearbyAhead = 64 << 20

type regionKey struct {
	seed int
	n    int64
}

// nearby scans, in each seed that can, the regions around chunk id's
// offset in the target that no scan has covered, then looks it up again.
func (s *Set) nearby(ctx context.Context, id chunker.ID) (Location, bool) {
	select {
	case <-s.done:
		return s.Lookup(id)
	default:
	}
	w, ok := s.want[id]
	if !ok {
		return Location{}, false
	}
	for i, sd := range s.seeds {
		rs, ok := sd.(RangeScanner)
		if !ok {
			continue
		}
		for r := max(w.off-regionPad, 0) / regionSize; r <= (w.off+w.size+regionPad)/regionSize; r++ {
			if sc, ok := sd.(interface{ Scanned() int64 }); ok {
				end, front := (r+1)*regionSize+regionPad, sc.Scanned()
				if front >= end {
					continue // the whole scan has been there
				}
				if s.o.Wait >= 0 && end <= front+nearbyAhead {
					// The whole scan is about to be there: waiting for it
					// costs less than hashing the region twice, and it
					// finds every chunk (a region's own cuts can miss some
					// in runs of maximum-size chunks).
					continue
				}
			}
			if err := s.scanRegion(ctx, i, rs, r); err != nil {
				return Location{}, false
			}
		}
		if l, ok := s.Lookup(id); ok {
			return l, true
		}
	}
	return s.Lookup(id)
}

// scanRegion scans region r of seed i once (concurrent callers wait for
// the one scanning it).
func (s *Set) scanRegion(ctx context.Context, i int, rs RangeScanner, r int64) error {
	k := regionKey{i, r}
	s.rmu.Lock()
	ch, ok := s.regions[k]
	if !ok {
		ch = make(chan struct{})
		s.regions[k] = ch
	}
	s.rmu.Unlock()
	if ok {
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer close(ch)
	select {
	case s.rsem <- struct{}{}:
	case <-ctx.Done():
		s.rmu.Lock()
		delete(s.regions, k) // not scanned: let another reader try
		s.rmu.Unlock()
		return ctx.Err()
	}
	defer func() { <-s.rsem }()
	off := max(r*regionSize-regionPad, 0)
	// Errors (EIO, a seed shorter than the target) only mean fewer chunks
	// found: the whole scan reports them.
	_ = rs.ScanRange(ctx, off, r*regionSize+regionSize+regionPad-off, s.found)
	return nil
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
