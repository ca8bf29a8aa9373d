package seed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/camount/camount/cache"
	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
)

var params = chunker.Params{Min: 1 << 10, Avg: 4 << 10, Max: 16 << 10}

// index chunks data as casync would and returns the index and a store.
func index(t testing.TB, data []byte) (*chunker.Index, *countStore) {
	t.Helper()
	x := &chunker.Index{Flags: chunker.FlagSHA512_256, Min: params.Min, Avg: params.Avg, Max: params.Max}
	st := &countStore{chunks: map[chunker.ID][]byte{}}
	ck, _ := chunker.NewChunker(bytes.NewReader(data), params)
	off := uint64(0)
	for {
		b, err := ck.Next()
		if err == io.EOF {
			break
		}
		id := x.Digest().Sum(b)
		x.Chunks = append(x.Chunks, chunker.Chunk{ID: id, Start: off, Size: uint64(len(b))})
		off += uint64(len(b))
		z, _ := fetch.Compress(fetch.Zstd, b)
		st.chunks[id] = z
	}
	return x, st
}

type countStore struct {
	mu     sync.Mutex
	chunks map[chunker.ID][]byte
	gets   map[chunker.ID]int
}

func (s *countStore) Get(ctx context.Context, id chunker.ID) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gets == nil {
		s.gets = map[chunker.ID]int{}
	}
	s.gets[id]++
	b, ok := s.chunks[id]
	if !ok {
		return nil, fetch.ErrNotFound
	}
	return b, nil
}
func (s *countStore) String() string { return "store" }

// versions returns v1 and v2: v2 changes a few ranges and moves a block.
func versions(n int) (v1, v2 []byte) {
	rng := rand.New(rand.NewSource(1))
	v1 = make([]byte, n)
	rng.Read(v1)
	v2 = append([]byte(nil), v1...)
	rng.Read(v2[n/5 : n/5+20000])
	copy(v2[n/2:], v1[n/10:n/10+100000]) // moved data
	return v1, v2
}

func write(t testing.TB, data []byte) string {
	p := filepath.Join(t.TempDir(), "seed.img")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func scanned(t *testing.T, x *chunker.Index, seeds ...Seed) *Set {
	t.Helper()
	s := NewSet(x, SetOptions{})
	for _, sd := range seeds {
		s.Add(sd)
	}
	s.Start(context.Background())
	if err := s.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// readAll reads the target through a scheduler whose first store is the set.
func readAll(t *testing.T, x *chunker.Index, set *Set, st fetch.Store) []byte {
	t.Helper()
	sch, err := fetch.NewScheduler(fetch.SchedulerOptions{Stores: []fetch.Store{set, st}, Memory: cache.NewMemory(-1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sch.Close()
	b := fetch.NewBlob(x, sch, "v2.caibx")
	out := make([]byte, b.Size())
	if _, err := b.ReadAt(out, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return out
}

func TestFileSeedServesVerifiedChunks(t *testing.T) {
	v1, v2 := versions(2 << 20)
	x1, _ := index(t, v1)
	x2, st := index(t, v2)
	fs, err := OpenFile(write(t, v1), ParamsOf(x2))
	if err != nil {
		t.Fatal(err)
	}
	set := scanned(t, x2, fs)
	in1 := map[chunker.ID]bool{}
	for _, c := range x1.Chunks {
		in1[c.ID] = true
	}
	for _, c := range x2.Chunks {
		if _, ok := set.Lookup(c.ID); ok != in1[c.ID] {
			t.Fatalf("chunk %s: found %v, in v1 %v", c.ID, ok, in1[c.ID])
		}
	}
	if got := readAll(t, x2, set, st); !bytes.Equal(got, v2) {
		t.Fatal("read differs from v2")
	}
	for id, n := range st.gets {
		if in1[id] {
			t.Errorf("chunk %s fetched %d times although the seed holds it", id, n)
		}
	}
}

func TestSeedChangedAfterScanCostsAFetch(t *testing.T) {
	v1, v2 := versions(1 << 20)
	x2, st := index(t, v2)
	path := write(t, v1)
	fs, _ := OpenFile(path, ParamsOf(x2))
	set := scanned(t, x2, fs)
	// Overwrite the seed with garbage after the scan.
	f, _ := os.OpenFile(path, os.O_WRONLY, 0)
	f.WriteAt(bytes.Repeat([]byte{0xaa}, 300000), 100000)
	f.Close()
	if got := readAll(t, x2, set, st); !bytes.Equal(got, v2) {
		t.Fatal("a seed changed after its scan produced wrong bytes")
	}
	// Shrink it: reads past the end fail and are fetched.
	os.Truncate(path, 1000)
	if got := readAll(t, x2, set, st); !bytes.Equal(got, v2) {
		t.Fatal("a truncated seed produced wrong bytes")
	}
}

func TestIndexSeed(t *testing.T) {
	v1, v2 := versions(1 << 20)
	x1, _ := index(t, v1)
	x2, st := index(t, v2)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "v1"), v1, 0o644)
	f, _ := os.Create(filepath.Join(dir, "v1.caibx"))
	x1.WriteTo(f)
	f.Close()
	sd, err := Open(filepath.Join(dir, "v1.caibx"), ParamsOf(x2), nil)
	if err != nil {
		t.Fatal(err)
	}
	set := scanned(t, x2, sd)
	if set.Known() == 0 {
		t.Fatal("index seed found nothing")
	}
	if got := readAll(t, x2, set, st); !bytes.Equal(got, v2) {
		t.Fatal("read differs from v2")
	}
	// Another digest is refused.
	x1.Flags = 0
	f, _ = os.Create(filepath.Join(dir, "v1.caibx"))
	x1.WriteTo(f)
	f.Close()
	if _, err := Open(filepath.Join(dir, "v1.caibx"), ParamsOf(x2), nil); err == nil {
		t.Error("an index seed of another digest was accepted")
	}
	if _, err := Open(filepath.Join(dir, "nope.img"), ParamsOf(x2), nil); err == nil {
		t.Error("a missing seed was accepted")
	}
}

func TestScanCache(t *testing.T) {
	v1, v2 := versions(1 << 20)
	x2, _ := index(t, v2)
	path := write(t, v1)
	c := &ScanCache{Dir: t.TempDir()}
	collect := func() map[chunker.ID]Location {
		sd, err := Open(path, ParamsOf(x2), c)
		if err != nil {
			t.Fatal(err)
		}
		defer sd.Close()
		m := map[chunker.ID]Location{}
		if err := sd.Scan(context.Background(), func(id chunker.ID, l Location) { m[id] = Location{Off: l.Off, Size: l.Size} }); err != nil {
			t.Fatal(err)
		}
		return m
	}
	first := collect()
	ents, _ := os.ReadDir(filepath.Join(c.Dir, "seeds"))
	if len(ents) != 1 {
		t.Fatalf("cache holds %d entries, want 1", len(ents))
	}
	// Make the cache entry lie: if it is used, the lie shows.
	p := filepath.Join(c.Dir, "seeds", ents[0].Name())
	b, _ := os.ReadFile(p)
	b[len(cacheMagic)+32] ^= 1 // first record's offset
	os.WriteFile(p, b, 0o644)
	second := collect()
	if len(second) != len(first) {
		t.Fatalf("cached scan has %d chunks, the scan %d", len(second), len(first))
	}
	diff := 0
	for id, l := range first {
		if second[id].Off != l.Off || second[id].Size != l.Size {
			diff++
		}
	}
	if diff != 1 {
		t.Fatalf("%d chunks differ: the cache was not used", diff)
	}
	// A changed seed gets a new key: scanned again.
	os.WriteFile(path, v2, 0o644)
	third := collect()
	for _, c := range x2.Chunks {
		if _, ok := third[c.ID]; !ok {
			t.Fatalf("rescan of the changed seed lacks chunk %s", c.ID)
		}
	}
}

func TestNearbyFindsChunksBeforeTheScan(t *testing.T) {
	const n = 12 << 20
	v1, v2 := versions(n)
	copy(v2[n*9/10:], v1[n/20:n/20+200000]) // moved far
	rand.New(rand.NewSource(7)).Read(v2[n/20 : n/20+200000])
	x2, _ := index(t, v2)
	x1, _ := index(t, v1)
	fs, err := OpenFile(write(t, v1), ParamsOf(x2))
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	// No Start: the whole scan never runs, only nearby scans (and no
	// waiting for it).
	set := NewSet(x2, SetOptions{Nearby: true, Wait: -1})
	set.Add(fs)
	ctx := context.Background()
	in1 := map[chunker.ID]uint64{}
	for _, c := range x1.Chunks {
		in1[c.ID] = c.Start
	}
	var near, far int
	dist := func(c chunker.Chunk) int64 {
		d := int64(c.Start) - int64(in1[c.ID])
		return max(d, -d)
	}
	// Chunks moved far first (before a nearby scan of their old place
	// for another chunk finds them): not found until the whole scan.
	for _, c := range x2.Chunks {
		if _, ok := in1[c.ID]; ok && dist(c) > regionSize+2*regionPad && c.Start > n*8/10 {
			if _, err := set.Get(ctx, c.ID); !errors.Is(err, fetch.ErrNotFound) {
				t.Fatalf("chunk moved %d bytes: %v", dist(c), err)
			}
			far++
		}
	}
	for _, c := range x2.Chunks {
		if _, ok := in1[c.ID]; !ok {
			if _, err := set.Get(ctx, c.ID); !errors.Is(err, fetch.ErrNotFound) {
				t.Fatalf("chunk v1 lacks: %v", err)
			}
			continue
		}
		if dist(c) < regionPad/2 {
			b, err := set.Get(ctx, c.ID)
			if err != nil {
				t.Fatalf("chunk at %d (in v1 at %d): %v", c.Start, in1[c.ID], err)
			}
			if x2.Digest().Sum(b) != c.ID {
				t.Fatal("wrong bytes")
			}
			near++
		}
	}
	if near == 0 || far == 0 {
		t.Errorf("near %d, far %d: the data should have both", near, far)
	}
}

func TestScanCacheIsBounded(t *testing.T) {
	dir := t.TempDir()
	c := &ScanCache{Dir: dir}
	x := &chunker.Index{Flags: chunker.FlagSHA512_256, Min: params.Min, Avg: params.Avg, Max: params.Max,
		Chunks: []chunker.Chunk{{Start: 0, Size: 5}}}
	for i := 0; i < maxCacheEntries+10; i++ {
		p := filepath.Join(dir, fmt.Sprintf("img%d", i))
		os.WriteFile(p, []byte("hello"), 0o644)
		if err := c.Record(p, x); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "seeds"))
	if len(ents) != maxCacheEntries {
		t.Errorf("%d entries, want %d", len(ents), maxCacheEntries)
	}
}

// A lazy reader asking for every chunk as soon as the background scan
// starts gets every chunk the seed holds from the seed (moved far ones
// too, and in runs of maximum-size chunks whose cuts only a whole scan
// finds): Get waits for the scan instead of reporting it missing, and
// only chunks the seed lacks are ErrNotFound.
func TestLazyGetWaitsForTheScan(t *testing.T) {
	const n = 24 << 20
	v1, v2 := versions(n)
	copy(v2[n*9/10:], v1[n/20:n/20+300000]) // moved far
	rand.New(rand.NewSource(7)).Read(v2[n/20 : n/20+300000])
	// A run with no content cut (maximum-size chunks), moved by an odd
	// amount in v2: a nearby scan's own cuts would miss it.
	run := bytes.Repeat([]byte{1, 2, 3}, 1<<20)
	copy(v1[n/3:], run)
	copy(v2[n/3+12345:], run)
	x2, _ := index(t, v2)
	x1, _ := index(t, v1)
	fs, err := OpenFile(write(t, v1), ParamsOf(x2))
	if err != nil {
		t.Fatal(err)
	}
	set := NewSet(x2, SetOptions{Nearby: true, Wait: time.Minute})
	// The scan starts only once the reads are under way.
	gate := make(chan struct{})
	set.Add(&gatedSeed{fs, gate})
	defer set.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	set.Start(Background(ctx))
	in1 := map[chunker.ID]bool{}
	for _, c := range x1.Chunks {
		in1[c.ID] = true
	}
	// Last chunks first, one after the other (as a reader would): they
	// are asked for before the scan is there.
	var served, missing int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := len(x2.Chunks) - 1; i >= 0; i-- {
			c := x2.Chunks[i]
			b, err := set.Get(ctx, c.ID)
			switch {
			case in1[c.ID] && err != nil:
				t.Errorf("chunk at %d, which the seed holds: %v", c.Start, err)
			case in1[c.ID] && x2.Digest().Sum(b) != c.ID:
				t.Errorf("chunk at %d: wrong bytes", c.Start)
			case in1[c.ID]:
				served++
			case !errors.Is(err, fetch.ErrNotFound):
				t.Errorf("chunk at %d, which the seed lacks: %v", c.Start, err)
			default:
				missing++
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	close(gate)
	<-done
	if served == 0 || missing == 0 || set.Waits.Load() == 0 || set.WaitTimeouts.Load() != 0 {
		t.Errorf("served %d, missing %d, waits %d, timeouts %d", served, missing, set.Waits.Load(), set.WaitTimeouts.Load())
	}
}

// A reader that waits longer than SetOptions.Wait gets ErrNotFound (the
// chunk is then fetched): a scan that is too slow never holds a read up
// for longer.
func TestLazyGetWaitIsBounded(t *testing.T) {
	const n = 8 << 20
	_, v2 := versions(n)
	x2, _ := index(t, v2)
	set := NewSet(x2, SetOptions{Nearby: true, Wait: 50 * time.Millisecond})
	set.Add(&stuckSeed{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	set.Start(Background(ctx))
	if _, err := set.Get(ctx, x2.Chunks[0].ID); !errors.Is(err, fetch.ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound after the wait", err)
	}
	if set.WaitTimeouts.Load() != 1 {
		t.Errorf("%d wait timeouts, want 1", set.WaitTimeouts.Load())
	}
}

// stuckSeed's scan finds nothing until its context ends.
type stuckSeed struct{}

func (*stuckSeed) String() string { return "stuck" }
func (*stuckSeed) Scan(ctx context.Context, found Found) error {
	<-ctx.Done()
	return ctx.Err()
}
func (*stuckSeed) Close() error { return nil }

// gatedSeed's whole scan starts when gate is closed.
type gatedSeed struct {
	*FileSeed
	gate chan struct{}
}

func (g *gatedSeed) Scan(ctx context.Context, found Found) error {
	<-g.gate
	return g.FileSeed.Scan(ctx, found)
}

// With SetOptions.Ahead, a reader going through the image waits only
// until the scan is Ahead past each chunk: every chunk the seed holds
// less than Ahead past its own offset is still served from the seed
// (never fetched once the scan has been there); data the seed holds
// further on may be fetched.
func TestLazyGetAhead(t *testing.T) {
	const n = 24 << 20
	const ahead = 1 << 20
	v1, v2 := versions(n)
	// v2 holds, early on, data v1 holds only 18 MiB further on.
	copy(v2[n/20:], v1[n*8/10:n*8/10+300000])
	rand.New(rand.NewSource(9)).Read(v2[n*8/10 : n*8/10+300000])
	x2, _ := index(t, v2)
	x1, _ := index(t, v1)
	fs, err := OpenFile(write(t, v1), ParamsOf(x2))
	if err != nil {
		t.Fatal(err)
	}
	set := NewSet(x2, SetOptions{Nearby: true, Wait: time.Minute, Ahead: ahead})
	gate := make(chan struct{})
	set.Add(&gatedSeed{fs, gate})
	defer set.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	set.Start(Background(ctx))
	end1 := map[chunker.ID]uint64{} // end of the chunk's first place in v1
	for _, c := range x1.Chunks {
		if _, ok := end1[c.ID]; !ok {
			end1[c.ID] = c.Start + c.Size
		}
	}
	var near, far, farMissing int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, c := range x2.Chunks {
			e, held := end1[c.ID]
			_, err := set.Get(ctx, c.ID)
			switch {
			case held && e <= c.Start+c.Size+ahead && err != nil:
				t.Errorf("chunk at %d, which the seed holds at %d: %v", c.Start, e-c.Size, err)
			case held && e <= c.Start+c.Size+ahead:
				near++
			case held:
				far++
				if errors.Is(err, fetch.ErrNotFound) {
					farMissing++
				}
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	close(gate)
	<-done
	t.Logf("held near %d, held far %d (%d left to the store), gave up behind the scan %d", near, far, farMissing, set.Passed.Load())
	if near == 0 || far == 0 || set.Passed.Load() == 0 {
		t.Errorf("near %d, far %d, passed %d: the data should have both", near, far, set.Passed.Load())
	}
}
