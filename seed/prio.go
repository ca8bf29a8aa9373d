package seed

import (
	"context"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

type backgroundKey struct{}

// Background marks ctx so that scans run under it (Set.Start, Seed.Scan)
// use low-priority threads (nice 19): lazy readers scan their seeds in
// the background without slowing the reads they serve.
func Background(ctx context.Context) context.Context {
	return context.WithValue(ctx, backgroundKey{}, true)
}

// IsBackground reports whether ctx was marked by Background.
func IsBackground(ctx context.Context) bool {
	b, _ := ctx.Value(backgroundKey{}).(bool)
	return b
}

// LowerPriority gives the calling goroutine a thread of its own at nice 19
// when ctx is marked by Background. The thread is never unlocked, so it
// ends with the goroutine and no lowered thread returns to Go's pool.
func LowerPriority(ctx context.Context) {
	if !IsBackground(ctx) {
		return
	}
	runtime.LockOSThread()
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19)
}

// boost tells background scans that a reader waits for them: while it is
// on, a file seed's scan chunks and hashes on normal-priority threads (on
// every core) instead of its one nice-19 thread, since a read is then
// held up by the scan itself. Threads cannot be raised again without
// privilege once lowered, so the work moves between threads instead.
//
// The boost lingers for boostLinger after the last waiting reader: a
// reader going through the image waits again soon, and a scan that fell
// back to nice 19 in between would leave it waiting on a loaded machine.
type boost struct {
	mu    sync.Mutex
	n     int           // guarded by mu: readers waiting
	ch    chan struct{} // guarded by mu: closed while on
	last  time.Time     // guarded by mu: when n last became 0
	timer *time.Timer   // guarded by mu: ends the linger
}

// boostLinger is how long a scan stays boosted after its last waiter.
const boostLinger = time.Second

type boostKey struct{}

// withBoost attaches b to ctx for the scans run under it.
func withBoost(ctx context.Context, b *boost) context.Context {
	return context.WithValue(ctx, boostKey{}, b)
}

// boostOf returns the boost attached to ctx, or nil.
func boostOf(ctx context.Context) *boost {
	b, _ := ctx.Value(boostKey{}).(*boost)
	return b
}

func newBoost() *boost { return &boost{ch: make(chan struct{})} }

// add counts one more (d=1) or one less (d=-1) waiting reader.
func (b *boost) add(d int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n += d
	if b.n > 0 {
		select {
		case <-b.ch:
		default:
			close(b.ch)
		}
		return
	}
	b.last = time.Now()
	if b.timer == nil {
		b.timer = time.AfterFunc(boostLinger, b.expire)
	} else {
		b.timer.Reset(boostLinger)
	}
}

// touch turns the boost on for boostLinger without a waiting reader (a
// reader close behind the scan, about to wait for it).
func (b *boost) touch() {
	b.add(1)
	b.add(-1)
}

// expire ends the boost if no reader waited during the linger.
func (b *boost) expire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n > 0 {
		return
	}
	if d := boostLinger - time.Since(b.last); d > 0 {
		b.timer.Reset(d)
		return
	}
	select {
	case <-b.ch:
		b.ch = make(chan struct{})
	default:
	}
}

// on reports whether a reader waits (false for a nil boost).
func (b *boost) on() bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.ch:
		return true
	default:
		return false
	}
}

// wait returns true once a reader waits, false if stop is closed first.
func (b *boost) wait(stop <-chan struct{}) bool {
	b.mu.Lock()
	ch := b.ch
	b.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-stop:
		return false
	}
}

// lowRunner runs functions on one goroutine locked to a nice-19 thread.
type lowRunner struct{ fs chan func() }

func startLow(ctx context.Context) *lowRunner {
	r := &lowRunner{fs: make(chan func())}
	go func() {
		LowerPriority(ctx)
		for f := range r.fs {
			f()
		}
	}()
	return r
}

// run runs f on the low-priority thread and waits for it.
func (r *lowRunner) run(f func()) {
	done := make(chan struct{})
	r.fs <- func() { f(); close(done) }
	<-done
}

// stop ends the runner's goroutine (and its thread).
func (r *lowRunner) stop() { close(r.fs) }

// executor runs a scan's heavy steps (reading and chunking a batch) on a
// nice-19 thread under a Background context while no reader waits, and
// on the calling goroutine otherwise. The calling goroutine must not be
// locked to a lowered thread (start it with go from the scan).
type executor struct {
	low *lowRunner
	b   *boost
}

// newExecutor returns the executor for ctx; stop it when the scan ends.
func newExecutor(ctx context.Context) *executor {
	if !IsBackground(ctx) {
		return &executor{}
	}
	return &executor{low: startLow(ctx), b: boostOf(ctx)}
}

func (e *executor) do(f func()) {
	if e.low != nil && !e.b.on() {
		e.low.run(f)
		return
	}
	f()
}

func (e *executor) stop() {
	if e.low != nil {
		e.low.stop()
	}
}

// startPool starts the goroutines that run work on each job until jobs is
// closed: n on normal threads, or under a Background context one at nice
// 19 plus n more that take jobs only while a reader waits (the boost).
// wait, called after jobs is closed, waits for them.
func startPool[J any](ctx context.Context, n int, jobs <-chan J, work func(J)) (wait func()) {
	var wg sync.WaitGroup
	stop := make(chan struct{})
	loop := func(lower bool) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if lower {
				LowerPriority(ctx)
			}
			for j := range jobs {
				work(j)
			}
		}()
	}
	if !IsBackground(ctx) {
		for i := 0; i < n; i++ {
			loop(false)
		}
		return wg.Wait
	}
	loop(true)
	if b := boostOf(ctx); b != nil {
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for b.wait(stop) {
					j, ok := <-jobs
					if !ok {
						return
					}
					work(j)
				}
			}()
		}
	}
	return func() {
		close(stop)
		wg.Wait()
	}
}
