package main

import (
	"strings"
	"sync"

	"golang.org/x/time/rate"

	"github.com/camount/camount/fetch"
	"github.com/camount/camount/location"
)

// rateLimits holds --rate-limit-bps: one limiter for every remote store of
// the process, foreground reads and background fill alike.
type rateLimits struct {
	bps  byteSize
	once sync.Once
	lim  *rate.Limiter
}

// limit wraps s, opened from spec, with the --rate-limit-bps limiter when
// spec names a remote store (any mirror of a 'URL1|URL2' group).
func (r *remoteFlags) limit(s fetch.Store, spec string) fetch.Store {
	if r == nil || r.rate.bps <= 0 || s == nil {
		return s
	}
	remote := false
	for _, m := range strings.Split(spec, "|") {
		if l, err := location.Parse("--store", m, location.ReadStore); err == nil && !l.IsLocal() {
			remote = true
		}
	}
	if !remote {
		return s
	}
	r.rate.once.Do(func() { r.rate.lim = fetch.NewByteLimiter(int64(r.rate.bps)) })
	return fetch.NewRateLimited(s, r.rate.lim)
}
