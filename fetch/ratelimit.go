package fetch

import (
	"context"

	"golang.org/x/time/rate"

	"github.com/camount/camount/chunker"
)

// NewByteLimiter returns a token bucket of bps bytes per second holding at
// most one second of bytes, for NewRateLimited; nil when bps <= 0.
func NewByteLimiter(bps int64) *rate.Limiter {
	if bps <= 0 {
		return nil
	}
	burst := bps
	if burst > 1<<30 {
		burst = 1 << 30
	}
	return rate.NewLimiter(rate.Limit(bps), int(burst))
}

// rateLimited is a Store whose fetched bytes draw on a shared limiter.
type rateLimited struct {
	Store
	lim *rate.Limiter
}

// NewRateLimited returns s with every chunk it returns counted against lim
// (casync's --rate-limit-bps): after a fetch of n stored bytes, the caller
// waits until the bucket has paid for them, so all fetching through stores
// sharing lim averages at most its rate (plus one burst and what is in
// flight). A nil lim returns s.
func NewRateLimited(s Store, lim *rate.Limiter) Store {
	if lim == nil {
		return s
	}
	return &rateLimited{s, lim}
}

func (s *rateLimited) Get(ctx context.Context, id chunker.ID) ([]byte, error) {
	b, err := s.Store.Get(ctx, id)
	if err != nil {
		return b, err
	}
	for n := len(b); n > 0; {
		k := min(n, s.lim.Burst())
		if werr := s.lim.WaitN(ctx, k); werr != nil {
			return nil, werr
		}
		n -= k
	}
	return b, nil
}
