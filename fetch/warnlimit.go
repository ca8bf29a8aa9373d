package fetch

import (
	"sync"
	"time"
)

// warnLimiter lets a warning of one text through once per warnQuiet: an
// error every request to a store gets (access denied, a missing bucket,
// the same error a failing store repeats at once) is logged once, not once
// per chunk in flight. Errors naming their chunk all differ and all pass.
type warnLimiter struct {
	mu   sync.Mutex
	seen map[string]time.Time // guarded by mu: when each text was last let through
}

// warnQuiet is how long a warning's text stays quiet after it was logged.
const warnQuiet = 10 * time.Second

// maxWarnTexts bounds the texts remembered; past it the memory is reset.
const maxWarnTexts = 1024

// allow reports whether a warning of text msg should be logged now.
func (w *warnLimiter) allow(msg string) bool {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if t, ok := w.seen[msg]; ok && now.Sub(t) < warnQuiet {
		return false
	}
	if w.seen == nil || len(w.seen) >= maxWarnTexts {
		w.seen = map[string]time.Time{}
	}
	w.seen[msg] = now
	return true
}
