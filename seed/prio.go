package seed

import (
	"context"
	"runtime"

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
