package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/camount/camount/chunker"
)

// FailoverOptions configure a Failover group. Zero values are the defaults.
type FailoverOptions struct {
	// FailBack is how long the group stays on a later mirror before trying
	// the first one again; 0 means one minute.
	FailBack time.Duration
	// Log receives a message when the group switches mirrors; nil discards.
	Log *slog.Logger
}

// Failover is a group of mirrors holding the same chunks. Requests go to the
// active mirror; when it fails (a network or server error, not a missing
// chunk) the group switches to the next mirror and retries there, each
// mirror at most once per request. After FailBack on another mirror it
// returns to the first (preferred) one.
//
// A chunk missing from the active mirror is missing from the group: mirrors
// have the same content by definition, and a store chain (--store repeated)
// is the tool for stores that differ.
type Failover struct {
	mirrors  []Store
	failBack time.Duration
	log      *slog.Logger
	now      func() time.Time

	failovers atomic.Int64 // requests served by another mirror after one failed

	mu       sync.Mutex
	active   int       // guarded by mu
	switched time.Time // guarded by mu; when active last left mirror 0
	// served remembers which mirror served recent chunks: the scheduler asks
	// again for a chunk only when its bytes failed verification (it merges
	// concurrent requests), so a repeat soon after goes to another mirror.
	served map[chunker.ID]servedBy // guarded by mu
}

type servedBy struct {
	mirror int
	at     time.Time
}

// maxServed bounds the served map; it is cleared when full.
const maxServed = 4096

// refetchWindow is how soon after serving a chunk a request for it again
// counts as the scheduler's refetch of bytes that failed verification
// (which follows within milliseconds). A reader asking again later (its
// memory cache dropped the chunk) is not mistaken for it.
const refetchWindow = 2 * time.Second

// NewFailover groups mirrors, the preferred one first.
func NewFailover(mirrors []Store, o FailoverOptions) (*Failover, error) {
	if len(mirrors) == 0 {
		return nil, errors.New("failover group without mirrors")
	}
	f := &Failover{mirrors: mirrors, failBack: o.FailBack, log: o.Log, now: time.Now, served: map[chunker.ID]servedBy{}}
	if f.failBack <= 0 {
		f.failBack = time.Minute
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	return f, nil
}

func (f *Failover) String() string {
	names := make([]string, len(f.mirrors))
	for i, m := range f.mirrors {
		names[i] = m.String()
	}
	return strings.Join(names, "|")
}

// Active returns the index of the mirror requests go to now.
func (f *Failover) Active() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.current()
}

// current returns the active mirror, failing back when it is time. f.mu held.
func (f *Failover) current() int {
	if f.active != 0 && f.now().Sub(f.switched) >= f.failBack {
		f.log.Info("failing back to the first mirror", "mirror", f.mirrors[0])
		f.active = 0
	}
	return f.active
}

// fail records that mirror i failed, moving the group to the next mirror
// unless another request did so already.
func (f *Failover) fail(i int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.active != i {
		return
	}
	f.active = (i + 1) % len(f.mirrors)
	f.switched = f.now()
	f.log.Warn("mirror failed, switching", "from", f.mirrors[i], "to", f.mirrors[f.active], "err", err)
}

// Get asks the active mirror, then the others in turn while they fail.
func (f *Failover) Get(ctx context.Context, id chunker.ID) ([]byte, error) {
	f.mu.Lock()
	start := f.current()
	if s, ok := f.served[id]; ok && len(f.mirrors) > 1 && f.now().Sub(s.at) < refetchWindow {
		// Asked again at once: the bytes from that mirror did not verify.
		delete(f.served, id)
		start = (s.mirror + 1) % len(f.mirrors)
		if f.active == s.mirror {
			f.active, f.switched = start, f.now()
			f.log.Warn("mirror sent a corrupt chunk, switching", "from", f.mirrors[s.mirror], "to", f.mirrors[start], "chunk", id)
		}
	}
	f.mu.Unlock()
	var errs []error
	for k := 0; k < len(f.mirrors); k++ {
		i := (start + k) % len(f.mirrors)
		b, err := f.mirrors[i].Get(ctx, id)
		if err == nil || errors.Is(err, ErrNotFound) {
			if k > 0 {
				f.failovers.Add(1)
			}
			if err == nil {
				f.mu.Lock()
				if len(f.served) >= maxServed {
					clear(f.served)
				}
				f.served[id] = servedBy{mirror: i, at: f.now()}
				f.mu.Unlock()
			}
			return b, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		f.fail(i, err)
		errs = append(errs, fmt.Errorf("mirror %s: %w", f.mirrors[i], err))
	}
	return nil, errors.Join(errs...)
}

// RefetchCorrupt implements Refetcher: a chunk whose bytes did not verify
// is asked for again, from the next mirror, so every mirror gets a chance.
func (f *Failover) RefetchCorrupt() int {
	n := len(f.mirrors) - 1
	for _, m := range f.mirrors {
		if r, ok := m.(Refetcher); ok {
			n = max(n, r.RefetchCorrupt())
		}
	}
	return n
}

// Failovers implements FailoverCounter: requests a mirror served after
// another one failed them.
func (f *Failover) Failovers() int64 { return f.failovers.Load() }

// Retries implements RetryCounter: the retries of the mirrors.
func (f *Failover) Retries() int64 {
	var n int64
	for _, m := range f.mirrors {
		if r, ok := m.(RetryCounter); ok {
			n += r.Retries()
		}
	}
	return n
}
