package fetch

import (
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"strings"
	"sync/atomic"
	"time"
)

// Stats counts the scheduler's work. All fields are safe to read at any
// time; Snapshot gathers them (and the stores' own counters) consistently
// enough for a summary.
type Stats struct {
	MemHits, DiskHits, ZeroHits  atomic.Int64
	Fetched                      [numPriorities]atomic.Int64 // chunks fetched from stores, by the priority the fetch ran at
	FetchedBytes                 [numPriorities]atomic.Int64 // their uncompressed bytes
	Failed, Corrupt, StoreErrors atomic.Int64
	Refetched                    atomic.Int64 // chunks asked for again from a Refetcher store after failing verification
	Failovers                    atomic.Int64 // chunks served by a store after an earlier one lacked or failed them
	Cancelled, Dropped           atomic.Int64 // running fetches cancelled, queued ones dropped, because no one wanted them any more
	Promoted, Prefetched         atomic.Int64
	FailedFast                   atomic.Int64 // requests failed at once with a chunk's recent failure (SchedulerOptions.FailTTL)
	ReadTimeouts                 atomic.Int64 // readers that gave up after SchedulerOptions.ReadTimeout
	PrefetchFetched              atomic.Int64 // chunks fetched at Readahead or Background priority
	PrefetchUsed                 atomic.Int64 // of those, chunks read later, or while they were fetched (Fetch at any priority, such as a crawler's listing, or a Foreground Start)
	FetchLatency                 Histogram    // store fetches (Get + decode + verify), every priority
	ForegroundWait               Histogram    // from the first request to the chunk for Foreground fetches

	storeNames              []string
	stores                  []Store
	storeChunks, storeBytes []atomic.Int64
}

func (st *Stats) init(stores []Store) {
	st.stores = stores
	for _, s := range stores {
		st.storeNames = append(st.storeNames, s.String())
	}
	st.storeChunks = make([]atomic.Int64, len(stores))
	st.storeBytes = make([]atomic.Int64, len(stores))
}

func (st *Stats) storeFetched(i, n int) {
	st.storeChunks[i].Add(1)
	st.storeBytes[i].Add(int64(n))
}

// StoreCounts returns chunks and stored bytes fetched from each store, by name.
func (st *Stats) StoreCounts() (names []string, chunks, bytes []int64) {
	for i := range st.storeNames {
		names = append(names, st.storeNames[i])
		chunks = append(chunks, st.storeChunks[i].Load())
		bytes = append(bytes, st.storeBytes[i].Load())
	}
	return
}

// RetryCounter is implemented by stores that retry failed requests.
type RetryCounter interface{ Retries() int64 }

// FailoverCounter is implemented by stores that fail over between mirrors.
type FailoverCounter interface{ Failovers() int64 }

// Histogram is a lock-free log-scale histogram of durations (8 buckets per
// power of two: quantiles are within 9%).
type Histogram struct {
	b [histBuckets]atomic.Int64
}

const histBuckets = 8 * 42

func histBucket(d time.Duration) int {
	ns := uint64(max(d, 1))
	e := 63 - bits.LeadingZeros64(ns) // floor(log2)
	// 3 bits of mantissa below the leading one
	var m uint64
	if e >= 3 {
		m = (ns >> (e - 3)) & 7
	} else {
		m = (ns << (3 - e)) & 7
	}
	return min(e*8+int(m), histBuckets-1)
}

func (h *Histogram) observe(d time.Duration) { h.b[histBucket(d)].Add(1) }

// Count returns the number of observations.
func (h *Histogram) Count() int64 {
	var n int64
	for i := range h.b {
		n += h.b[i].Load()
	}
	return n
}

// Quantile returns an upper bound of the q-quantile (0 < q <= 1), 0 with
// no observations.
func (h *Histogram) Quantile(q float64) time.Duration {
	var counts [histBuckets]int64
	var n int64
	for i := range h.b {
		counts[i] = h.b[i].Load()
		n += counts[i]
	}
	if n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	var seen int64
	for i, c := range counts {
		seen += c
		if seen >= rank {
			e, m := i/8, uint64(i%8)
			// bucket upper bound: (8+m+1) * 2^e / 8
			return time.Duration(((8 + m + 1) << e) >> 3)
		}
	}
	return 0
}

// StatsSnapshot is a point-in-time copy of a scheduler's counters, as
// written by --stats-json. Bytes fetched from stores are stored
// (compressed) sizes; bytes per priority are uncompressed chunk sizes.
type StatsSnapshot struct {
	Stores         []StoreStats             `json:"stores"`
	Priorities     map[string]PriorityStats `json:"priorities"`
	FetchedChunks  int64                    `json:"fetched_chunks"`
	FetchedBytes   int64                    `json:"fetched_bytes"`
	MemHits        int64                    `json:"memory_hits"`
	DiskHits       int64                    `json:"disk_hits"`
	ZeroHits       int64                    `json:"zero_chunks"`
	PrefetchUsed   int64                    `json:"prefetch_used"`
	PrefetchUnused int64                    `json:"prefetch_unused"`
	Promoted       int64                    `json:"promoted"`
	Cancelled      int64                    `json:"cancelled"`
	Dropped        int64                    `json:"dropped"`
	Failed         int64                    `json:"failed"`
	FailedFast     int64                    `json:"failed_fast"`
	ReadTimeouts   int64                    `json:"read_timeouts"`
	StoreErrors    int64                    `json:"store_errors"`
	Retries        int64                    `json:"retries"`
	Refetched      int64                    `json:"refetched_corrupt"`
	Failovers      int64                    `json:"failovers"`
	Corrupt        int64                    `json:"corrupt"`
	LatencyP50     float64                  `json:"fetch_latency_p50_ms"`
	LatencyP99     float64                  `json:"fetch_latency_p99_ms"`
	WaitP50        float64                  `json:"foreground_wait_p50_ms"`
	WaitP99        float64                  `json:"foreground_wait_p99_ms"`
	// Seeded counts what an extract took from seeds instead of fetching
	// (extract reads its seeds itself, past the scheduler); nil for the
	// lazy readers, whose seeded chunks are the store "seeds".
	Seeded *SeededStats `json:"seeded,omitempty"`
}

// SeededStats counts chunks an extract took from seeds: Bytes are
// uncompressed chunk bytes, ReflinkedBytes the part of them cloned into
// the output instead of copied.
type SeededStats struct {
	Chunks         int64 `json:"chunks"`
	Bytes          int64 `json:"bytes"`
	ReflinkedBytes int64 `json:"reflinked_bytes"`
}

// StoreStats is one store's share of a snapshot.
type StoreStats struct {
	Name   string `json:"name"`
	Chunks int64  `json:"chunks"`
	Bytes  int64  `json:"bytes"`
}

// PriorityStats is one priority's share of a snapshot.
type PriorityStats struct {
	Chunks int64 `json:"chunks"`
	Bytes  int64 `json:"bytes"`
}

// Snapshot returns the scheduler's counters now.
func (s *Scheduler) Snapshot() StatsSnapshot {
	st := &s.Stats
	var ss StatsSnapshot
	names, chunks, bytes := st.StoreCounts()
	for i := range names {
		ss.Stores = append(ss.Stores, StoreStats{Name: names[i], Chunks: chunks[i], Bytes: bytes[i]})
		ss.FetchedChunks += chunks[i]
		ss.FetchedBytes += bytes[i]
	}
	ss.Priorities = map[string]PriorityStats{}
	for p := Priority(0); p < numPriorities; p++ {
		ss.Priorities[p.String()] = PriorityStats{Chunks: st.Fetched[p].Load(), Bytes: st.FetchedBytes[p].Load()}
	}
	ss.MemHits = st.MemHits.Load()
	ss.DiskHits = st.DiskHits.Load()
	ss.ZeroHits = st.ZeroHits.Load()
	ss.PrefetchUsed = st.PrefetchUsed.Load()
	s.pmu.Lock()
	ss.PrefetchUnused = int64(len(s.prefetched))
	s.pmu.Unlock()
	ss.Promoted = st.Promoted.Load()
	ss.Cancelled = st.Cancelled.Load()
	ss.Dropped = st.Dropped.Load()
	ss.Failed = st.Failed.Load()
	ss.FailedFast = st.FailedFast.Load()
	ss.ReadTimeouts = st.ReadTimeouts.Load()
	ss.StoreErrors = st.StoreErrors.Load()
	ss.Failovers = st.Failovers.Load()
	ss.Refetched = st.Refetched.Load()
	ss.Corrupt = st.Corrupt.Load()
	for _, store := range st.stores {
		if r, ok := store.(RetryCounter); ok {
			ss.Retries += r.Retries()
		}
		if f, ok := store.(FailoverCounter); ok {
			ss.Failovers += f.Failovers()
		}
	}
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	ss.LatencyP50 = ms(st.FetchLatency.Quantile(0.5))
	ss.LatencyP99 = ms(st.FetchLatency.Quantile(0.99))
	ss.WaitP50 = ms(st.ForegroundWait.Quantile(0.5))
	ss.WaitP99 = ms(st.ForegroundWait.Quantile(0.99))
	return ss
}

// String is the one-line summary printed at exit and on SIGUSR1.
func (ss StatsSnapshot) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fetched %d chunks %s", ss.FetchedChunks, humanBytes(ss.FetchedBytes))
	var parts []string
	for _, s := range ss.Stores {
		parts = append(parts, fmt.Sprintf("%s %d/%s", s.Name, s.Chunks, humanBytes(s.Bytes)))
	}
	if len(parts) > 0 {
		fmt.Fprintf(&b, " [%s]", strings.Join(parts, ", "))
	}
	parts = parts[:0]
	for p := Priority(0); p < numPriorities; p++ {
		ps := ss.Priorities[p.String()]
		parts = append(parts, fmt.Sprintf("%s %d/%s", p, ps.Chunks, humanBytes(ps.Bytes)))
	}
	fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	fmt.Fprintf(&b, "; hits: memory %d, disk %d, zero %d", ss.MemHits, ss.DiskHits, ss.ZeroHits)
	fmt.Fprintf(&b, "; prefetched used %d, unused %d", ss.PrefetchUsed, ss.PrefetchUnused)
	fmt.Fprintf(&b, "; retries %d, refetched %d, failovers %d, corrupt %d, failed %d", ss.Retries, ss.Refetched, ss.Failovers, ss.Corrupt, ss.Failed)
	fmt.Fprintf(&b, "; fetch latency p50 %.1fms p99 %.1fms", ss.LatencyP50, ss.LatencyP99)
	if sd := ss.Seeded; sd != nil {
		fmt.Fprintf(&b, "; seeded %d chunks %s (reflinked %s)", sd.Chunks, humanBytes(sd.Bytes), humanBytes(sd.ReflinkedBytes))
	}
	return b.String()
}

// JSON returns the snapshot as indented JSON with a trailing newline.
func (ss StatsSnapshot) JSON() []byte {
	b, _ := json.MarshalIndent(ss, "", "  ")
	return append(b, '\n')
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
