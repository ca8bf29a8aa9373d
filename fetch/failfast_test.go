package fetch

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/camount/camount/cache"
	"github.com/camount/camount/chunker"
)

// TestSchedulerFailsFastAfterFailure: a chunk whose fetch failed fails again
// at once with the same error while FailTTL lasts (the kernel asks again
// right after a failed FUSE readahead), without asking the store again.
func TestSchedulerFailsFastAfterFailure(t *testing.T) {
	st := newGateStore()
	cs := st.add(2, 4096, 7)
	missing := chunker.Chunk{ID: chunker.SHA512_256.Sum([]byte("nowhere")), Size: 7}
	s := mustSched(t, SchedulerOptions{Stores: []Store{st}, Memory: cache.NewMemory(1 << 20), FailTTL: time.Hour})
	_, err1 := s.Fetch(context.Background(), missing, chunker.SHA512_256, Foreground)
	if !errors.Is(err1, ErrNotFound) {
		t.Fatalf("missing chunk: %v", err1)
	}
	_, err2 := s.Fetch(context.Background(), missing, chunker.SHA512_256, Foreground)
	if err2 != err1 {
		t.Fatalf("second fetch: %v, want the first error %v", err2, err1)
	}
	if s.Prefetch(missing, chunker.SHA512_256, Readahead) {
		t.Error("a prefetch of a chunk that just failed was queued")
	}
	if n := st.getsOf(missing.ID); n != 1 {
		t.Fatalf("store asked %d times for a chunk that just failed, want 1", n)
	}
	if n := s.Stats.FailedFast.Load(); n != 1 {
		t.Errorf("FailedFast = %d, want 1", n)
	}
	// Other chunks are not affected.
	if b, err := s.Fetch(context.Background(), cs[0], chunker.SHA512_256, Foreground); err != nil || len(b) != 4096 {
		t.Fatalf("good chunk: %v", err)
	}

	// A cancelled read is not a failure: the next reader fetches again.
	g := st.gate(cs[1].ID)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := s.Fetch(ctx, cs[1], chunker.SHA512_256, Foreground); done <- err }()
	waitFor(t, "the gated fetch to start", func() bool { return st.getsOf(cs[1].ID) == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled read: %v", err)
	}
	close(g)
	waitFor(t, "the cancelled fetch to end", func() bool { return !s.Pending(cs[1].ID) })
	if _, err := s.Fetch(context.Background(), cs[1], chunker.SHA512_256, Foreground); err != nil {
		t.Fatalf("read after a cancelled one: %v", err)
	}

	// With a TTL that has passed, the store is asked again.
	s2 := mustSched(t, SchedulerOptions{Stores: []Store{st}, FailTTL: time.Nanosecond})
	s2.Fetch(context.Background(), missing, chunker.SHA512_256, Foreground)
	before := st.getsOf(missing.ID)
	s2.Fetch(context.Background(), missing, chunker.SHA512_256, Foreground)
	if n := st.getsOf(missing.ID) - before; n != 1 {
		t.Fatalf("after the TTL the store was asked %d times, want 1", n)
	}
}

// TestSchedulerReadTimeout: a reader waits at most ReadTimeout for a chunk
// (then ErrReadTimeout, an EIO for FUSE); the fetch goes on in the
// background, readers in between fail at once, and once it lands the
// chunk is served from the cache.
func TestSchedulerReadTimeout(t *testing.T) {
	st := newGateStore()
	cs := st.add(1, 8192, 9)
	g := st.gate(cs[0].ID)
	s := mustSched(t, SchedulerOptions{Stores: []Store{st}, Memory: cache.NewMemory(1 << 20), ReadTimeout: 50 * time.Millisecond, FailTTL: time.Hour})
	_, err := s.Fetch(context.Background(), cs[0], chunker.SHA512_256, Foreground)
	if !errors.Is(err, ErrReadTimeout) {
		t.Fatalf("stalled chunk: %v, want ErrReadTimeout", err)
	}
	if _, err := s.Fetch(context.Background(), cs[0], chunker.SHA512_256, Foreground); !errors.Is(err, ErrReadTimeout) {
		t.Fatalf("second reader: %v, want ErrReadTimeout at once", err)
	}
	if !s.Pending(cs[0].ID) {
		t.Fatal("the fetch was abandoned when its reader timed out")
	}
	st.mu.Lock()
	ctxErrs := st.ctxErrs
	st.mu.Unlock()
	if ctxErrs != 0 || st.getsOf(cs[0].ID) != 1 {
		t.Fatalf("store: %d cancelled gets, %d gets; want the one fetch to go on", ctxErrs, st.getsOf(cs[0].ID))
	}
	close(g)
	waitFor(t, "the background fetch to land", func() bool { return s.Cached(cs[0].ID) })
	b, err := s.Fetch(context.Background(), cs[0], chunker.SHA512_256, Foreground)
	if err != nil || !bytes.Equal(b, st.m[cs[0].ID]) {
		t.Fatalf("after the fetch landed: %v", err)
	}
	if n := s.Stats.ReadTimeouts.Load(); n != 1 {
		t.Errorf("ReadTimeouts = %d, want 1", n)
	}
	// Background and readahead requests have no reader's deadline.
	s2 := mustSched(t, SchedulerOptions{Stores: []Store{st}, ReadTimeout: -1})
	if _, err := s2.Fetch(context.Background(), cs[0], chunker.SHA512_256, Foreground); err != nil {
		t.Fatal(err)
	}
}
