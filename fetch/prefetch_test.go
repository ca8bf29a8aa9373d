package fetch

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/camount/camount/cache"
	"github.com/camount/camount/chunker"
)

// TestStreamReadaheadSequential reads a blob front to back in 4 KiB reads
// through a Stream: readahead starts, its window grows to the cap, and
// most chunks arrive by readahead rather than by the reader's own fetches.
func TestStreamReadaheadSequential(t *testing.T) {
	st := newGateStore()
	b, data := fakeBlob(t, st, 512, 16<<10, 20) // 8 MiB
	b.SetReadahead(1 << 20)
	s := b.NewStream()
	defer s.Close()
	p := make([]byte, 4096)
	maxWin := int64(0)
	for off := int64(0); off < b.Size(); off += int64(len(p)) {
		n, err := s.ReadAtContext(context.Background(), p, off)
		if err != nil || n != len(p) || !bytes.Equal(p, data[off:off+int64(n)]) {
			t.Fatalf("read at %d: %d, %v", off, n, err)
		}
		maxWin = max(maxWin, s.Window())
	}
	if maxWin != 1<<20 {
		t.Fatalf("window grew to %d, want the 1 MiB cap", maxWin)
	}
	seq, rnd := s.Counts()
	if rnd != 0 || seq != b.Size()/4096 {
		t.Fatalf("sequential %d random %d", seq, rnd)
	}
	ra, fg := b.s.Stats.Fetched[Readahead].Load(), b.s.Stats.Fetched[Foreground].Load()
	if ra+fg != 512 || st.total() != 512 {
		t.Fatalf("readahead %d + foreground %d fetches, store saw %d; want 512 chunks once each", ra, fg, st.total())
	}
	if ra < 256 {
		t.Fatalf("only %d of 512 chunks came by readahead", ra)
	}
}

// TestStreamReadaheadOffForRandom reads at random offsets: no readahead.
func TestStreamReadaheadOffForRandom(t *testing.T) {
	st := newGateStore()
	b, data := fakeBlob(t, st, 2048, 16<<10, 21) // 32 MiB
	s := b.NewStream()
	defer s.Close()
	r := rand.New(rand.NewPCG(5, 6))
	p := make([]byte, 4096)
	for i := 0; i < 300; i++ {
		off := r.Int64N(b.Size() - 4096)
		if n, err := s.ReadAtContext(context.Background(), p, off); err != nil || !bytes.Equal(p[:n], data[off:off+int64(n)]) {
			t.Fatalf("read at %d: %v", off, err)
		}
		if w := s.Window(); w != 0 {
			t.Fatalf("read %d: readahead window %d for random access", i, w)
		}
	}
	if n := b.s.Stats.Fetched[Readahead].Load(); n != 0 {
		t.Fatalf("%d readahead fetches for random access", n)
	}
}

// TestStreamReadaheadDropsWhenRandom: a sequential run builds a window;
// jumping away drops it and its queued fetches.
func TestStreamReadaheadDropsWhenRandom(t *testing.T) {
	st := newGateStore()
	b, _ := fakeBlob(t, st, 1024, 16<<10, 22)
	b.SetReadahead(4 << 20)
	st.gateAll = make(chan struct{}) // readahead queues up behind the gate
	defer close(st.gateAll)
	s := b.NewStream()
	defer s.Close()
	for off := int64(0); off < 3*16<<10; off += 16 << 10 {
		s.observe(off, 16<<10) // the run, without waiting for data
	}
	if s.Window() == 0 || len(s.tickets) == 0 {
		t.Fatal("no readahead after a sequential run")
	}
	s.observe(10<<20, 4096)
	if s.Window() != 0 || len(s.tickets) != 0 {
		t.Fatal("window kept after a random read")
	}
	waitFor(t, "queued readahead dropped", func() bool { q := b.s.Queued(); return q[Readahead] == 0 })
	if b.s.Stats.Dropped.Load() == 0 {
		t.Fatal("nothing dropped")
	}
}

// TestFillWholeImage fetches every distinct non-zero chunk once at
// Background priority; a second fill fetches nothing.
func TestFillWholeImage(t *testing.T) {
	st := newGateStore()
	b, data := fakeBlob(t, st, 300, 4096, 23)
	res, err := b.Fill(context.Background(), FillOptions{})
	if err != nil || res.Fetched != 300 || res.FetchedBytes != 300*4096 {
		t.Fatalf("fill: %+v, %v", res, err)
	}
	if n := b.s.Stats.Fetched[Background].Load(); n != 300 || st.total() != 300 {
		t.Fatalf("background fetches %d, store gets %d", n, st.total())
	}
	got := make([]byte, len(data))
	if _, err := b.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatal("read after fill", err)
	}
	if st.total() != 300 {
		t.Fatal("reads after a fill went to the store")
	}
	ss := b.s.Snapshot()
	if ss.PrefetchUsed != 300 || ss.PrefetchUnused != 0 {
		t.Fatalf("prefetch used %d unused %d", ss.PrefetchUsed, ss.PrefetchUnused)
	}
	res, err = b.Fill(context.Background(), FillOptions{})
	if err != nil || res.Fetched != 0 || res.Skipped != 300 {
		t.Fatalf("second fill: %+v, %v", res, err)
	}
	if _, err := b.Fill(context.Background(), FillOptions{Order: []int{0, 300}}); err == nil {
		t.Fatal("out-of-range order accepted")
	}
}

// TestPrefetchUsedByBackgroundReads: chunks prefetched and then read at
// Readahead priority (a crawler listing directories ahead of the reader
// reads so) count as used; chunks only held by readahead tickets do not.
func TestPrefetchUsedByBackgroundReads(t *testing.T) {
	st := newGateStore()
	b, data := fakeBlob(t, st, 20, 4096, 29)
	if n := b.Prefetch(0, 10*4096, Readahead); n != 10 {
		t.Fatalf("prefetch queued %d, want 10", n)
	}
	for i := 0; i < 10; i++ { // read while fetched or after
		got, err := b.Chunk(context.Background(), i, Readahead)
		if err != nil || !bytes.Equal(got, data[i*4096:(i+1)*4096]) {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	var held []*Ticket
	for i := 10; i < 20; i++ { // fetched ahead, never read
		held = append(held, b.s.Start(b.idx.Chunks[i], b.d, Readahead))
	}
	for _, tk := range held {
		if _, err := tk.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		tk.Release()
	}
	ss := b.s.Snapshot()
	if ss.PrefetchUsed != 10 || ss.PrefetchUnused != 10 {
		t.Fatalf("prefetch used %d unused %d, want 10 and 10", ss.PrefetchUsed, ss.PrefetchUnused)
	}
}

// TestFillResumesThroughDiskCache interrupts a fill, then fills again in a
// new process (new scheduler, same disk cache): only the rest is fetched.
func TestFillResumesThroughDiskCache(t *testing.T) {
	dir := t.TempDir()
	st := newGateStore()
	open := func() *cache.Disk {
		d, err := cache.OpenDisk(cache.DiskOptions{Dir: dir, MaxBytes: 64 << 20})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	b, data := fakeBlobWith(t, st, 200, 4096, 24, SchedulerOptions{Workers: 4, Disk: open()})
	ctx, cancel := context.WithCancel(context.Background())
	var res FillResult
	stop := make(chan struct{})
	go func() {
		defer close(stop)
		res, _ = b.Fill(ctx, FillOptions{Concurrency: 1})
	}()
	waitFor(t, "half the fill", func() bool { return b.s.Stats.Fetched[Background].Load() >= 100 })
	cancel()
	<-stop
	waitFor(t, "the cancelled fetch to end", func() bool { return !b.s.busy() })
	first := int(b.s.Stats.Fetched[Background].Load()) // into the disk cache
	g1 := st.total()                                   // first, and maybe one aborted by the cancel
	if first >= 200 {
		t.Fatalf("fill was not interrupted (%d fetched)", first)
	}
	var _ OnDisk = (*cache.Disk)(nil) // the fill skips what the disk cache lists
	b2 := NewBlob(b.idx, mustSched(t, SchedulerOptions{Stores: []Store{st}, Workers: 4, Disk: open()}), "again")
	res2, err := b2.Fill(context.Background(), FillOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.total()-g1 != 200-first || res2.Skipped != int64(first) || res2.Fetched != int64(200-first) {
		t.Fatalf("after resume the store saw %d gets (first run %d, second fill %+v); want 200 in all", st.total(), first, res2)
	}
	got := make([]byte, len(data))
	if _, err := b2.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) || st.total()-g1 != 200-first {
		t.Fatalf("read after resumed fill: %v, %d gets", err, st.total())
	}
	_ = res
}

func mustSched(t *testing.T, o SchedulerOptions) *Scheduler {
	t.Helper()
	s, err := NewScheduler(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// TestProfileCutsForegroundFetches records a run's accesses, then replays
// the same accesses on a cold cache after prefetching the profile: the
// reader fetches nothing itself.
func TestProfileCutsForegroundFetches(t *testing.T) {
	st := newGateStore()
	b, data := fakeBlob(t, st, 400, 8192, 25)
	r := rand.New(rand.NewPCG(7, 8))
	type acc struct{ off, n int64 }
	var trace []acc
	for i := 0; i < 120; i++ {
		trace = append(trace, acc{r.Int64N(b.Size() - 20000), 1 + r.Int64N(20000)})
	}
	replay := func(b *Blob) {
		for _, a := range trace {
			p := make([]byte, a.n)
			if _, err := b.ReadAtContext(context.Background(), p, a.off); err != nil || !bytes.Equal(p, data[a.off:a.off+a.n]) {
				t.Fatalf("read %d@%d: %v", a.n, a.off, err)
			}
		}
	}
	rec := b.Record()
	replay(b)
	cold := b.s.Stats.Fetched[Foreground].Load()
	var buf bytes.Buffer
	if _, err := rec.Profile().WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	prof, err := ReadProfile(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if err := prof.Check(b.idx); err != nil {
		t.Fatal(err)
	}
	if int64(len(prof.Chunks)) != cold {
		t.Fatalf("profile has %d chunks, the run fetched %d", len(prof.Chunks), cold)
	}

	b2 := NewBlob(b.idx, mustSched(t, SchedulerOptions{Stores: []Store{st}, Workers: 8}), "second run")
	if _, err := b2.Fill(context.Background(), FillOptions{Order: prof.Chunks}); err != nil {
		t.Fatal(err)
	}
	replay(b2)
	if warm := b2.s.Stats.Fetched[Foreground].Load(); warm != 0 || cold == 0 {
		t.Fatalf("foreground fetches: %d cold, %d after the profile", cold, warm)
	}
	if ss := b2.s.Snapshot(); ss.PrefetchUsed != cold || ss.PrefetchUnused != 0 {
		t.Fatalf("profile prefetch used %d unused %d, want %d and 0", ss.PrefetchUsed, ss.PrefetchUnused, cold)
	}
}

// TestProfileRefusesOtherImage and bad input.
func TestProfileRefusesOtherImage(t *testing.T) {
	st := newGateStore()
	b1, _ := fakeBlob(t, st, 10, 1024, 26)
	b2, _ := fakeBlob(t, st, 10, 1024, 27)
	rec := b1.Record()
	b1.ReadAt(make([]byte, 10), 0)
	p := rec.Profile()
	if err := p.Check(b2.idx); !errors.Is(err, ErrProfileMismatch) {
		t.Fatalf("profile of another image: %v", err)
	}
	if err := p.Check(b1.idx); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	p.WriteTo(&buf)
	good := buf.String()
	for name, in := range map[string]string{
		"empty":     "",
		"magic":     "hello\n",
		"identity":  strings.Replace(good, "sha256:", "md5:", 1),
		"count":     strings.Replace(good, "chunks 1", "chunks x", 1),
		"truncated": strings.Replace(good, "chunks 1", "chunks 2", 1),
		"negative":  good + "-4\n",
		"text":      good + "four\n",
	} {
		if _, err := ReadProfile(strings.NewReader(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	bad := &Profile{Identity: p.Identity, Chunks: []int{99}}
	if err := bad.Check(b1.idx); err == nil {
		t.Fatal("out-of-range chunk accepted")
	}
}

// TestStatsLine formats a snapshot.
func TestStatsLine(t *testing.T) {
	st := newGateStore()
	b, _ := fakeBlob(t, st, 10, 1024, 28)
	b.ReadAt(make([]byte, 5000), 0)
	ss := b.s.Snapshot()
	line := ss.String()
	for _, want := range []string{"fetched 5 chunks", "foreground 5/5.0KiB", "fake 5/5.0KiB", "p99"} {
		if !strings.Contains(line, want) {
			t.Errorf("%q lacks %q", line, want)
		}
	}
	if !bytes.Contains(ss.JSON(), []byte(`"fetched_chunks": 5`)) {
		t.Errorf("json %s", ss.JSON())
	}
	if strings.Contains(line, "\n") {
		t.Error("summary is not one line")
	}
	_ = chunker.SHA256
}

// TestFillRateLimit: with a tiny rate the fill fetches what the bucket's
// one second of burst allows and then waits; cancelling it stops it there.
func TestFillRateLimit(t *testing.T) {
	st := newGateStore()
	b, _ := fakeBlob(t, st, 50, 4096, 29)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan FillResult)
	go func() {
		res, _ := b.Fill(ctx, FillOptions{RateLimit: 4096})
		done <- res
	}()
	waitFor(t, "first chunk", func() bool { return st.total() >= 1 })
	cancel()
	res := <-done
	if st.total() > 2 || res.Fetched > 2 {
		t.Fatalf("a 4 KiB/s fill fetched %d chunks at once (%+v)", st.total(), res)
	}
}

// TestStreamLetsGoOfFinishedReadahead: readahead whose fetch has ended is
// no longer held by the stream (its chunk lives in the memory cache, which
// bounds it), so many streams with grown windows do not keep chunks alive
// past the cache (issue 15.5).
func TestStreamLetsGoOfFinishedReadahead(t *testing.T) {
	st := newGateStore()
	b, _ := fakeBlob(t, st, 1024, 16<<10, 23)
	b.SetReadahead(4 << 20)
	s := b.NewStream()
	defer s.Close()
	off := int64(0)
	for ; off < 4*16<<10; off += 16 << 10 {
		s.observe(off, 16<<10)
	}
	s.mu.Lock()
	held := append([]raTicket(nil), s.tickets...)
	s.mu.Unlock()
	if len(held) == 0 {
		t.Fatal("no readahead after a sequential run")
	}
	for _, rt := range held {
		<-rt.t.Done()
	}
	s.observe(off, 16<<10) // the run goes on
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rt := range s.tickets {
		for _, h := range held {
			if rt.t == h.t {
				t.Fatalf("chunk %d: finished readahead still held by the stream", rt.i)
			}
		}
	}
}
