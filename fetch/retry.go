package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// retrier runs one operation of a network store (S3, sftp) with the
// per-attempt timeout and the retry policy of HTTPOptions: transient
// failures are retried with exponential backoff and ±50% jitter, anything
// else returns at once.
type retrier struct {
	o       HTTPOptions
	log     *slog.Logger
	retries atomic.Int64 // attempts made again after a transient failure
}

func newRetrier(o HTTPOptions) *retrier {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &retrier{o: o, log: log}
}

// do runs op until it succeeds, fails permanently (transient returns false)
// or the retries are spent. Each attempt gets its own deadline. what names
// the request in logs and in the error of a timed-out attempt.
func (r *retrier) do(ctx context.Context, what string, transient func(error) bool, op func(context.Context) error) error {
	delay := r.o.Backoff
	if delay <= 0 {
		delay = 100 * time.Millisecond
	}
	maxDelay := r.o.MaxBackoff
	if maxDelay <= 0 {
		maxDelay = 5 * time.Second
	}
	retries := r.o.retries()
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, r.o.timeout())
		err := op(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = &NetworkError{URL: what, Attempts: 1, Msg: fmt.Sprintf("%s: no complete response within %v", what, r.o.timeout())}
		}
		if attempt >= retries || !transient(err) {
			var ne *NetworkError
			if errors.As(err, &ne) && attempt > 0 {
				ne.Attempts = attempt + 1
			}
			return err
		}
		r.retries.Add(1)
		wait := time.Duration(rand.Int64N(int64(delay)) + int64(delay)/2)
		r.log.Debug("retrying request", "request", what, "attempt", attempt+1, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, maxDelay)
	}
}
