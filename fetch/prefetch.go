package fetch

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/camount/camount/chunker"
)

// FillOptions configure Blob.Fill. The zero value fills the whole image,
// front to back, as fast as the Background cap allows.
type FillOptions struct {
	// Order lists chunk indexes to fetch, in order (a profile); nil means
	// every chunk front to back. Indexes out of range are an error.
	Order []int
	// RateLimit caps the fill at this many bytes of chunk data per second;
	// 0: unlimited.
	RateLimit int64
	// Concurrency bounds the fill's outstanding fetches; 0 means the
	// scheduler's Background cap.
	Concurrency int
	// YieldIdle, if > 0, makes the fill yield to readers: while a Foreground
	// fetch is queued or running, or ended less than YieldIdle ago, at most
	// one fill fetch is outstanding.
	YieldIdle time.Duration
	// MaxBytes stops the fill after fetching this many bytes of chunk data
	// (e.g. what fits the memory cache when there is no disk cache); 0: no bound.
	MaxBytes int64
}

// FillResult says what a fill did.
type FillResult struct {
	Fetched      int64 // chunks fetched (from a store or the disk cache)
	FetchedBytes int64 // their uncompressed bytes
	Skipped      int64 // already cached, zero, or repeated chunks
	Failed       int64 // chunks that could not be fetched (readers will retry)
}

// OnDisk is implemented by disk caches that can tell cheaply whether they
// hold a chunk; Fill uses it to resume without re-reading the cache.
type OnDisk interface{ Has(id chunker.ID) bool }

// Fill fetches chunks at Background priority into the caches: with a disk
// cache, what is already there is skipped, so an interrupted fill resumes
// where it stopped. Fill returns when every chunk has been requested and
// finished, or ctx ends (returning ctx's error). A chunk that fails is
// counted and skipped: readers will fetch it again and see the error.
func (b *Blob) Fill(ctx context.Context, o FillOptions) (FillResult, error) {
	var res FillResult
	n := len(b.idx.Chunks)
	for _, i := range o.Order {
		if i < 0 || i >= n {
			return res, fmt.Errorf("%s: chunk %d out of range (the index has %d)", b.name, i, n)
		}
	}
	conc := o.Concurrency
	if conc <= 0 {
		conc = b.s.Cap(Background)
	}
	var lim *rateLimiter
	if o.RateLimit > 0 {
		lim = newRateLimiter(o.RateLimit)
	}
	onDisk, _ := b.s.disk.(OnDisk)
	var fetched, fbytes, failed atomic.Int64
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	defer wg.Wait()
	seen := make([]bool, n)
	ids := map[chunker.ID]bool{}
	total := n
	if o.Order != nil {
		total = len(o.Order)
	}
	var requested int64
	for k := 0; k < total; k++ {
		i := k
		if o.Order != nil {
			i = o.Order[k]
		}
		if err := ctx.Err(); err != nil {
			wg.Wait()
			res.Fetched, res.FetchedBytes, res.Failed = fetched.Load(), fbytes.Load(), failed.Load()
			return res, err
		}
		c := b.idx.Chunks[i]
		if seen[i] || b.zero[i] || ids[c.ID] || b.s.Cached(c.ID) || (onDisk != nil && onDisk.Has(c.ID)) {
			res.Skipped++
			seen[i] = true
			continue
		}
		seen[i] = true
		ids[c.ID] = true
		if o.MaxBytes > 0 && requested >= o.MaxBytes {
			break
		}
		requested += int64(c.Size)
		if lim != nil {
			if err := lim.wait(ctx, int64(c.Size)); err != nil {
				continue // ctx ended: reported at the top of the loop
			}
		}
		if o.YieldIdle > 0 {
			for len(sem) > 0 && b.s.ForegroundIdle() < o.YieldIdle && ctx.Err() == nil {
				sleepCtx(ctx, o.YieldIdle/4+time.Millisecond)
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		t := b.s.Start(c, b.d, Background)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := t.Wait(ctx); err != nil {
				if ctx.Err() == nil {
					failed.Add(1)
				}
				return
			}
			fetched.Add(1)
			fbytes.Add(int64(c.Size))
		}()
	}
	wg.Wait()
	res.Fetched, res.FetchedBytes, res.Failed = fetched.Load(), fbytes.Load(), failed.Load()
	return res, ctx.Err()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// rateLimiter is a token bucket holding at most one second of tokens. Used
// by one goroutine.
type rateLimiter struct {
	rate   float64 // bytes per second
	tokens float64
	last   time.Time
}

func newRateLimiter(rate int64) *rateLimiter {
	return &rateLimiter{rate: float64(rate), tokens: float64(rate), last: time.Now()}
}

// wait takes n tokens, sleeping until the debt is paid.
func (l *rateLimiter) wait(ctx context.Context, n int64) error {
	now := time.Now()
	l.tokens = min(l.tokens+now.Sub(l.last).Seconds()*l.rate, l.rate)
	l.last = now
	l.tokens -= float64(n)
	if l.tokens >= 0 {
		return nil
	}
	d := time.Duration(-l.tokens / l.rate * float64(time.Second))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Profile is the chunks of an image in first-access order, recorded on one
// run (--record-profile) and prefetched on the next (--prefetch-profile).
type Profile struct {
	// Identity is IndexIdentity of the image the profile belongs to.
	Identity string
	// Chunks are chunk indexes, each once, in the order they were first read.
	Chunks []int
}

// ErrProfileMismatch is returned (wrapped) for a profile recorded for another image.
var ErrProfileMismatch = errors.New("profile belongs to another image")

const profileMagic = "camount-profile 1"

// IndexIdentity names an index by the SHA-256 of its canonical encoding:
// two images share it only if they have the same chunks in the same order.
func IndexIdentity(x *chunker.Index) string {
	h := sha256.New()
	x.WriteTo(h)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// Check verifies that the profile belongs to x and its chunks are in range.
func (p *Profile) Check(x *chunker.Index) error {
	if id := IndexIdentity(x); id != p.Identity {
		return fmt.Errorf("%w: recorded for index %s, this index is %s", ErrProfileMismatch, p.Identity, id)
	}
	for _, i := range p.Chunks {
		if i < 0 || i >= len(x.Chunks) {
			return fmt.Errorf("chunk %d out of range (the index has %d)", i, len(x.Chunks))
		}
	}
	return nil
}

// WriteTo writes the profile as text: a magic line, the index identity,
// the chunk count, then one chunk index per line.
func (p *Profile) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "%s\nindex %s\nchunks %d\n", profileMagic, p.Identity, len(p.Chunks))
	var buf []byte
	for _, i := range p.Chunks {
		buf = strconv.AppendInt(buf[:0], int64(i), 10)
		buf = append(buf, '\n')
		bw.Write(buf)
	}
	return 0, bw.Flush()
}

// ReadProfile parses a profile written by WriteTo.
func ReadProfile(r io.Reader) (*Profile, error) {
	sc := bufio.NewScanner(r)
	line := 0
	next := func() (string, bool) {
		if !sc.Scan() {
			return "", false
		}
		line++
		return strings.TrimSpace(sc.Text()), true
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("line %d: %s", line, fmt.Sprintf(format, a...))
	}
	if l, ok := next(); !ok || l != profileMagic {
		return nil, bad("not a camount profile (want %q first)", profileMagic)
	}
	p := &Profile{}
	l, _ := next()
	id, ok := strings.CutPrefix(l, "index ")
	if !ok || !strings.HasPrefix(id, "sha256:") || len(id) != len("sha256:")+64 {
		return nil, bad("want \"index sha256:<64 hex>\"")
	}
	p.Identity = id
	l, _ = next()
	cs, ok := strings.CutPrefix(l, "chunks ")
	n, err := strconv.Atoi(cs)
	if !ok || err != nil || n < 0 {
		return nil, bad("want \"chunks <count>\"")
	}
	p.Chunks = make([]int, 0, min(n, 1<<20))
	for {
		l, ok := next()
		if !ok {
			break
		}
		i, err := strconv.Atoi(l)
		if err != nil || i < 0 {
			return nil, bad("%q is not a chunk index", l)
		}
		p.Chunks = append(p.Chunks, i)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(p.Chunks) != n {
		return nil, fmt.Errorf("truncated profile: %d of %d chunks", len(p.Chunks), n)
	}
	return p, nil
}

// Recorder collects the chunks a blob's readers touch, in first-access order.
type Recorder struct {
	identity string
	mu       sync.Mutex
	seen     []bool // guarded by mu
	order    []int  // guarded by mu
	zero     []bool
}

// Record starts recording the chunks readers of b touch (through
// ReadAtContext and Streams) and returns the recorder.
func (b *Blob) Record() *Recorder {
	r := &Recorder{identity: IndexIdentity(b.idx), seen: make([]bool, len(b.idx.Chunks)), zero: b.zero}
	b.rec.Store(r)
	return r
}

func (r *Recorder) touch(first, last int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := first; i <= last; i++ {
		if !r.seen[i] && !r.zero[i] {
			r.seen[i] = true
			r.order = append(r.order, i)
		}
	}
}

// Profile returns what has been recorded so far.
func (r *Recorder) Profile() *Profile {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &Profile{Identity: r.identity, Chunks: append([]int(nil), r.order...)}
}
