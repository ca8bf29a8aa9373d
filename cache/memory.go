// Package cache keeps verified chunks: a memory LRU bounded in bytes, and
// (disk.go) a bounded persistent cache. Everything stored here has already
// been verified against its chunk ID.
package cache

import (
	"sync"

	"github.com/camount/camount/chunker"
	lru "github.com/hashicorp/golang-lru/v2/simplelru"
)

// DefaultMemoryBytes is the memory cache bound when none is given.
const DefaultMemoryBytes = 256 << 20

// Memory is an LRU of verified chunk bytes bounded by the memory they hold
// (see footprint). Callers must not modify returned slices. Safe for
// concurrent use.
type Memory struct {
	mu    sync.Mutex
	lru   *lru.LRU[chunker.ID, []byte] // guarded by mu
	bytes int64                        // guarded by mu
	max   int64
}

// NewMemory returns a cache holding at most maxBytes of chunk data
// (DefaultMemoryBytes if maxBytes is 0; negative disables caching).
func NewMemory(maxBytes int64) *Memory {
	if maxBytes == 0 {
		maxBytes = DefaultMemoryBytes
	}
	m := &Memory{max: maxBytes}
	// The count bound is never reached first: eviction is by bytes below.
	m.lru, _ = lru.NewLRU[chunker.ID, []byte](1<<30, func(_ chunker.ID, v []byte) {
		m.bytes -= footprint(v)
	})
	return m
}

// Get returns a cached chunk.
func (m *Memory) Get(id chunker.ID) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lru.Get(id)
}

// Contains reports whether id is cached, without touching its recency.
func (m *Memory) Contains(id chunker.ID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lru.Contains(id)
}

// Add caches a verified chunk, evicting the least recently used ones to stay
// within the bound. A chunk larger than the bound is not cached.
func (m *Memory) Add(id chunker.ID, data []byte) {
	if footprint(data) > m.max {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lru.Contains(id) {
		return
	}
	m.lru.Add(id, data)
	m.bytes += footprint(data)
	for m.bytes > m.max {
		m.lru.RemoveOldest()
	}
}

// Bytes returns the memory the cached chunks hold.
func (m *Memory) Bytes() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bytes
}

// Len returns the number of cached chunks.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lru.Len()
}

// footprint is the memory a cached slice holds: its capacity, rounded up to
// whole 8 KiB pages above 32 KiB as Go's allocator does. Counting lengths
// instead undercounts ~4% for 64 KiB chunks, and the mount's memory limit,
// set just above the cache size, then leaves the garbage collector so
// little headroom that it runs every ~13 MB of allocation.
func footprint(b []byte) int64 {
	n := int64(cap(b))
	if n > 32<<10 {
		n = (n + 8191) &^ 8191
	}
	return n
}
