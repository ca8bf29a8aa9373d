package fetch

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/camount/camount/chunker"
)

// chunkServer serves a map of stored chunks in the .castr layout, with a
// fault hook run before each response.
type chunkServer struct {
	mu     sync.Mutex
	chunks map[string][]byte // URL path → stored bytes
	fault  func(w http.ResponseWriter, r *http.Request, body []byte) bool
	hits   atomic.Int64
	auth   atomic.Value // last Authorization header
}

func (cs *chunkServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cs.hits.Add(1)
	cs.auth.Store(r.Header.Get("Authorization"))
	cs.mu.Lock()
	body, ok := cs.chunks[r.URL.Path]
	fault := cs.fault
	cs.mu.Unlock()
	if fault != nil && fault(w, r, body) {
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

func (cs *chunkServer) setFault(f func(w http.ResponseWriter, r *http.Request, body []byte) bool) {
	cs.mu.Lock()
	cs.fault = f
	cs.mu.Unlock()
}

func newChunkServer(t *testing.T, data ...[]byte) (*chunkServer, *httptest.Server, []chunker.Chunk) {
	t.Helper()
	cs := &chunkServer{chunks: map[string][]byte{}}
	var chunks []chunker.Chunk
	var off uint64
	for _, d := range data {
		id := chunker.SHA512_256.Sum(d)
		stored, err := Compress(Zstd, d)
		if err != nil {
			t.Fatal(err)
		}
		h := id.String()
		cs.chunks["/store/"+h[:4]+"/"+h+".cacnk"] = stored
		chunks = append(chunks, chunker.Chunk{ID: id, Start: off, Size: uint64(len(d))})
		off += uint64(len(d))
	}
	srv := httptest.NewServer(cs)
	t.Cleanup(srv.Close)
	return cs, srv, chunks
}

func fastOpts() HTTPOptions {
	return HTTPOptions{Timeout: 500 * time.Millisecond, Retries: 3, Backoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
}

func TestHTTPStoreGetAndNotFound(t *testing.T) {
	cs, srv, chunks := newChunkServer(t, []byte("hello\n"), bytes.Repeat([]byte("x"), 100000))
	o := fastOpts()
	o.Authorization = "Bearer sekrit"
	st, err := NewHTTPStore(srv.URL+"/store/", o)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.URL(chunks[0].ID); got != srv.URL+"/store/7f3f/"+chunks[0].ID.String()+".cacnk" {
		t.Fatalf("URL = %s", got)
	}
	for _, c := range chunks {
		raw, err := st.Get(context.Background(), c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeChunk(c, chunker.SHA512_256, raw); err != nil {
			t.Fatal(err)
		}
	}
	if a := cs.auth.Load(); a != "Bearer sekrit" {
		t.Fatalf("Authorization header = %q", a)
	}
	before := cs.hits.Load()
	_, err = st.Get(context.Background(), chunker.ID{1})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing chunk: %v, want ErrNotFound", err)
	}
	if n := cs.hits.Load() - before; n != 1 {
		t.Fatalf("a 404 was asked %d times, want once (no retries)", n)
	}
}

func TestHTTPStoreRetries(t *testing.T) {
	cs, srv, chunks := newChunkServer(t, bytes.Repeat([]byte("retry me "), 5000))
	st, err := NewHTTPStore(srv.URL+"/store", fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	c := chunks[0]
	faults := map[string]func(w http.ResponseWriter, r *http.Request, body []byte) bool{
		"503": func(w http.ResponseWriter, r *http.Request, body []byte) bool {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return true
		},
		"reset": func(w http.ResponseWriter, r *http.Request, body []byte) bool {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
			return true
		},
		"truncated": func(w http.ResponseWriter, r *http.Request, body []byte) bool {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write(body[:len(body)/2])
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return true
		},
		"stall": func(w http.ResponseWriter, r *http.Request, body []byte) bool {
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
			return true
		},
	}
	for name, f := range faults {
		t.Run(name, func(t *testing.T) {
			var n atomic.Int64
			cs.setFault(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
				if n.Add(1) <= 2 {
					return f(w, r, body)
				}
				return false
			})
			defer cs.setFault(nil)
			start := time.Now()
			raw, err := st.Get(context.Background(), c.ID)
			if err != nil {
				t.Fatalf("after 2 faults: %v", err)
			}
			if _, err := DecodeChunk(c, chunker.SHA512_256, raw); err != nil {
				t.Fatal(err)
			}
			if n.Load() != 3 {
				t.Fatalf("%d requests, want 3", n.Load())
			}
			// Two stalls waited out would take two minutes: the
			// per-attempt timeout (500 ms) must have cut them short.
			// The bound leaves room for a loaded machine.
			if d := time.Since(start); d > 20*time.Second {
				t.Fatalf("took %v", d)
			}
			// A permanent fault exhausts the retries and fails.
			cs.setFault(func(w http.ResponseWriter, r *http.Request, body []byte) bool { return f(w, r, body) })
			n.Store(0)
			if _, err := st.Get(context.Background(), c.ID); err == nil || errors.Is(err, ErrNotFound) {
				t.Fatalf("permanent fault: err = %v", err)
			}
		})
	}
	// 403 is not retried.
	var n atomic.Int64
	cs.setFault(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		n.Add(1)
		http.Error(w, "no", http.StatusForbidden)
		return true
	})
	_, err = st.Get(context.Background(), c.ID)
	var se *HTTPStatusError
	if !errors.As(err, &se) || se.Code != 403 || n.Load() != 1 {
		t.Fatalf("403: err %v after %d requests", err, n.Load())
	}
	// Cancellation ends a retry loop at once.
	cs.setFault(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		<-r.Context().Done()
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := st.Get(ctx, c.ID); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled: %v", err)
	}
}

// TestSchedulerRefetchesCorruptFromHTTP checks that bytes damaged in transit
// are asked for again from an HTTP store and never served.
func TestSchedulerRefetchesCorruptFromHTTP(t *testing.T) {
	cs, srv, chunks := newChunkServer(t, bytes.Repeat([]byte("corrupt me "), 4000))
	st, err := NewHTTPStore(srv.URL+"/store", fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	cs.setFault(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if n.Add(1) == 1 {
			bad := bytes.Clone(body)
			bad[len(bad)/2] ^= 0x40
			w.Write(bad)
			return true
		}
		return false
	})
	s, err := NewScheduler(SchedulerOptions{Stores: []Store{st}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data, err := s.Fetch(context.Background(), chunks[0], chunker.SHA512_256, Foreground)
	if err != nil {
		t.Fatalf("one corrupt response, then a good one: %v", err)
	}
	if chunker.SHA512_256.Sum(data) != chunks[0].ID {
		t.Fatal("wrong data")
	}
	if n.Load() != 2 {
		t.Fatalf("%d requests, want 2", n.Load())
	}
	// Always corrupt: a CorruptChunkError, never data.
	cs.setFault(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		bad := bytes.Clone(body)
		bad[len(bad)-3] ^= 1
		w.Write(bad)
		return true
	})
	c := chunks[0] // a fresh scheduler: not cached
	s2, _ := NewScheduler(SchedulerOptions{Stores: []Store{st}})
	defer s2.Close()
	_, err = s2.Fetch(context.Background(), c, chunker.SHA512_256, Foreground)
	var ce *CorruptChunkError
	if !errors.As(err, &ce) {
		t.Fatalf("always corrupt: %v, want CorruptChunkError", err)
	}
}

func TestDefaultStoreURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://h/img.caibx":            "http://h/default.castr",
		"https://h:8443/a/b/img.caidx":  "https://h:8443/a/b/default.castr",
		"http://h/a/img.caibx?x=1#frag": "http://h/a/default.castr",
		"http://h":                      "http://h/default.castr",
	} {
		got, err := DefaultStoreURL(in)
		if err != nil || got != want {
			t.Errorf("DefaultStoreURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := NewHTTPStore("ftp://x/y", HTTPOptions{}); err == nil || !strings.Contains(err.Error(), "http") {
		t.Fatalf("ftp store: %v", err)
	}
}

type fakeStore struct {
	name string
	err  error
	data []byte
	hits atomic.Int64
}

func (f *fakeStore) Get(ctx context.Context, id chunker.ID) ([]byte, error) {
	f.hits.Add(1)
	return f.data, f.err
}
func (f *fakeStore) String() string { return f.name }

func TestFailover(t *testing.T) {
	a := &fakeStore{name: "a", err: errors.New("connection refused")}
	b := &fakeStore{name: "b", data: []byte("B")}
	f, err := NewFailover([]Store{a, b}, FailoverOptions{FailBack: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	f.now = func() time.Time { return now }
	if got, err := f.Get(context.Background(), chunker.ID{}); err != nil || string(got) != "B" {
		t.Fatalf("Get = %q, %v", got, err)
	}
	if f.Active() != 1 {
		t.Fatal("did not switch to the second mirror")
	}
	a.hits.Store(0)
	for i := 0; i < 5; i++ {
		f.Get(context.Background(), chunker.ID{byte(i + 1)})
	}
	if a.hits.Load() != 0 {
		t.Fatalf("the failed mirror was asked %d times before failback", a.hits.Load())
	}
	// After the failback time the first mirror is tried again.
	a.err, a.data = nil, []byte("A")
	now = now.Add(2 * time.Hour)
	if got, _ := f.Get(context.Background(), chunker.ID{9}); string(got) != "A" || f.Active() != 0 {
		t.Fatalf("after failback: %q from mirror %d", got, f.Active())
	}
	// Not found is final: mirrors have the same chunks.
	a.err = ErrNotFound
	b.hits.Store(0)
	if _, err := f.Get(context.Background(), chunker.ID{10}); !errors.Is(err, ErrNotFound) || b.hits.Load() != 0 || f.Active() != 0 {
		t.Fatalf("not found: %v, b asked %d times", err, b.hits.Load())
	}
	// All down: an error naming each mirror.
	a.err, b.err = errors.New("down a"), errors.New("down b")
	if _, err := f.Get(context.Background(), chunker.ID{11}); err == nil || !strings.Contains(err.Error(), "down a") || !strings.Contains(err.Error(), "down b") {
		t.Fatalf("all down: %v", err)
	}
}

// TestFailoverCorruptMirror: a mirror that serves damaged bytes is left for
// the next one when the scheduler asks again.
func TestFailoverCorruptMirror(t *testing.T) {
	_, good, chunks := newChunkServer(t, bytes.Repeat([]byte("mirror "), 3000))
	bad, badSrv, _ := newChunkServer(t, bytes.Repeat([]byte("mirror "), 3000))
	bad.setFault(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		b := bytes.Clone(body)
		b[len(b)/2] ^= 1
		w.Write(b)
		return true
	})
	sa, _ := NewHTTPStore(badSrv.URL+"/store", fastOpts())
	sb, _ := NewHTTPStore(good.URL+"/store", fastOpts())
	f, _ := NewFailover([]Store{sa, sb}, FailoverOptions{})
	s, err := NewScheduler(SchedulerOptions{Stores: []Store{f}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data, err := s.Fetch(context.Background(), chunks[0], chunker.SHA512_256, Foreground)
	if err != nil || chunker.SHA512_256.Sum(data) != chunks[0].ID {
		t.Fatalf("corrupt first mirror: %v", err)
	}
	if f.Active() != 1 {
		t.Fatal("the group stayed on the corrupt mirror")
	}
}

func TestHTTPRetryAfter(t *testing.T) {
	cs, srv, chunks := newChunkServer(t, []byte("patience\n"))
	var n atomic.Int64
	var first time.Time
	var gap time.Duration
	cs.setFault(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if n.Add(1) == 1 {
			first = time.Now()
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return true
		}
		gap = time.Since(first)
		return false
	})
	st, _ := NewHTTPStore(srv.URL+"/store", fastOpts())
	if _, err := st.Get(context.Background(), chunks[0].ID); err != nil {
		t.Fatal(err)
	}
	if gap < 900*time.Millisecond {
		t.Fatalf("retried after %v despite Retry-After: 1", gap)
	}
}
