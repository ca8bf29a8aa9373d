package fetch

import (
	"context"
	"testing"
	"time"

	"github.com/camount/camount/chunker"
)

type sizedStore struct{ n int }

func (s sizedStore) Get(context.Context, chunker.ID) ([]byte, error) { return make([]byte, s.n), nil }
func (s sizedStore) String() string                                  { return "sized" }

// Chunks larger than the bucket still pass (in pieces), and the bytes
// fetched are paid for: 5 chunks of 300 KB at 500 KB/s with a one-second
// bucket cannot take less than 2 s.
func TestRateLimitedStore(t *testing.T) {
	lim := NewByteLimiter(500_000)
	s := NewRateLimited(sizedStore{300_000}, lim)
	start := time.Now()
	for i := 0; i < 5; i++ {
		b, err := s.Get(context.Background(), chunker.ID{})
		if err != nil || len(b) != 300_000 {
			t.Fatalf("Get: %d bytes, %v", len(b), err)
		}
	}
	if took := time.Since(start); took < 1900*time.Millisecond {
		t.Errorf("1.5 MB through a 500 KB/s limiter took %v", took)
	}
	big := NewRateLimited(sizedStore{3_000_000}, NewByteLimiter(10_000_000))
	if _, err := big.Get(context.Background(), chunker.ID{}); err != nil {
		t.Errorf("a chunk above the burst: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewRateLimited(sizedStore{1 << 20}, NewByteLimiter(1000)).Get(ctx, chunker.ID{}); err == nil {
		t.Error("a cancelled wait returned no error")
	}
	if NewRateLimited(sizedStore{1}, nil) != (sizedStore{1}) {
		t.Error("a nil limiter wraps")
	}
}
