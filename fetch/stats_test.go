package fetch

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/camount/camount/cache"
	"github.com/camount/camount/chunker"
)

// accessLog is an HTTP chunk store server that logs every request, as
// nginx's access log would: path, status and body bytes.
type accessLog struct {
	st    *gateStore
	mu    sync.Mutex
	lines []accessLine
}

type accessLine struct {
	path   string
	status int
	bytes  int
}

func (a *accessLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	id, err := chunker.ParseID(strings.TrimSuffix(name, ChunkSuffix))
	a.st.mu.Lock()
	body, ok := a.st.m[id]
	a.st.mu.Unlock()
	line := accessLine{path: r.URL.Path, status: 200}
	if err != nil || !ok {
		line.status = 404
		http.NotFound(w, r)
	} else {
		z, _ := Compress(Zstd, body)
		line.bytes = len(z)
		w.Write(z)
	}
	a.mu.Lock()
	a.lines = append(a.lines, line)
	a.mu.Unlock()
}

// TestStatsMatchServerAccessLog reads a blob over HTTP with readahead and a
// background fill running, and checks that the stats add up to what the
// server's access log saw.
func TestStatsMatchServerAccessLog(t *testing.T) {
	st := newGateStore()
	log := &accessLog{st: st}
	srv := httptest.NewServer(log)
	defer srv.Close()
	hs, err := NewHTTPStore(srv.URL+"/store", HTTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, data := fakeBlobWith(t, st, 600, 8192, 30, SchedulerOptions{Stores: []Store{hs}, Workers: 8, Memory: cache.NewMemory(64 << 20)})
	ctx := context.Background()
	fillDone := make(chan struct{})
	go func() {
		defer close(fillDone)
		b.Fill(ctx, FillOptions{Order: []int{599, 598, 597, 500, 400, 300}})
	}()
	s := b.NewStream()
	p := make([]byte, 32<<10)
	for off := int64(0); off < 2<<20; off += int64(len(p)) {
		if _, err := s.ReadAtContext(ctx, p, off); err != nil || string(p) != string(data[off:off+int64(len(p))]) {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	for i := 0; i < 50; i++ {
		off := int64(i) * 97 * 1000
		b.ReadAt(p[:100], off)
	}
	<-fillDone
	s.Close()
	// Readahead still running finishes into the cache: wait for it.
	waitFor(t, "readahead to settle", func() bool { q := b.s.Queued(); return q == [numPriorities]int{} && !b.s.busy() })

	ss := b.s.Snapshot()
	log.mu.Lock()
	defer log.mu.Unlock()
	var reqs, bytes int64
	for _, l := range log.lines {
		if l.status != 200 {
			t.Fatalf("request %s answered %d", l.path, l.status)
		}
		reqs++
		bytes += int64(l.bytes)
	}
	if ss.FetchedChunks != reqs || ss.FetchedBytes != bytes || len(ss.Stores) != 1 || ss.Stores[0].Chunks != reqs {
		t.Fatalf("stats say %d chunks / %d bytes; the server sent %d responses / %d bytes", ss.FetchedChunks, ss.FetchedBytes, reqs, bytes)
	}
	var perPrio int64
	for _, ps := range ss.Priorities {
		perPrio += ps.Chunks
	}
	if perPrio != reqs {
		t.Fatalf("per-priority chunks %d, requests %d", perPrio, reqs)
	}
	if ss.Priorities["readahead"].Chunks == 0 || ss.Priorities["background"].Chunks == 0 {
		t.Fatalf("priorities %+v: want readahead and background fetches", ss.Priorities)
	}
	if ss.PrefetchUsed+ss.PrefetchUnused != ss.Priorities["readahead"].Chunks+ss.Priorities["background"].Chunks {
		t.Fatalf("prefetch used %d + unused %d != prefetched %d", ss.PrefetchUsed, ss.PrefetchUnused,
			ss.Priorities["readahead"].Chunks+ss.Priorities["background"].Chunks)
	}
}

// TestStatsCountRetriesAndFailovers: an HTTP store's retries and a mirror
// group's failovers appear in the snapshot.
func TestStatsCountRetriesAndFailovers(t *testing.T) {
	st := newGateStore()
	cs := st.add(3, 1000, 31)
	good := &accessLog{st: st}
	var mu sync.Mutex
	failed := map[string]bool{}
	flaky := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		first := !failed[r.URL.Path]
		failed[r.URL.Path] = true
		mu.Unlock()
		if first {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		good.ServeHTTP(w, r)
	})
	fs := httptest.NewServer(flaky)
	defer fs.Close()
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusBadGateway)
	}))
	defer dead.Close()
	o := HTTPOptions{Retries: 2, Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	hf, _ := NewHTTPStore(fs.URL+"/s", o)
	o.Retries = -1
	hd, _ := NewHTTPStore(dead.URL+"/s", o)
	grp, err := NewFailover([]Store{hd, hf}, FailoverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := mustSched(t, SchedulerOptions{Stores: []Store{grp}})
	for _, c := range cs {
		if _, err := s.Fetch(context.Background(), c, chunker.SHA512_256, Foreground); err != nil {
			t.Fatal(err)
		}
	}
	ss := s.Snapshot()
	if ss.Retries != 3 || ss.Failovers < 1 || ss.FetchedChunks != 3 {
		t.Fatalf("retries %d (want 3), failovers %d (want >= 1), fetched %d", ss.Retries, ss.Failovers, ss.FetchedChunks)
	}
}
