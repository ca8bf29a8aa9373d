package extract

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/camount/camount/cache"
	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
	"github.com/camount/camount/seed"
)

// memStore is a Store over a map of stored bytes, with a hook to block.
type memStore struct {
	mu     sync.Mutex
	chunks map[chunker.ID][]byte
	gate   chan struct{} // if set, Get waits for it (or ctx)
}

func (s *memStore) Get(ctx context.Context, id chunker.ID) ([]byte, error) {
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.chunks[id]
	if !ok {
		return nil, fetch.ErrNotFound
	}
	return b, nil
}

func (s *memStore) String() string { return "mem" }

// fixture chunks data (random with runs of zeros) with small chunk sizes
// and returns its index and a store holding every chunk compressed.
func fixture(t testing.TB, size int) ([]byte, *chunker.Index, *memStore) {
	t.Helper()
	rng := rand.New(rand.NewSource(int64(size)))
	data := make([]byte, size)
	rng.Read(data)
	// A zero run several maximum chunk sizes long, so zero chunks exist.
	clear(data[size/3 : size/3+64<<10])
	p := chunker.Params{Min: 1 << 10, Avg: 4 << 10, Max: 16 << 10}
	x := &chunker.Index{Flags: chunker.FlagSHA512_256, Min: p.Min, Avg: p.Avg, Max: p.Max}
	st := &memStore{chunks: map[chunker.ID][]byte{}}
	ck, err := chunker.NewChunker(bytes.NewReader(data), p)
	if err != nil {
		t.Fatal(err)
	}
	d := x.Digest()
	off := uint64(0)
	for {
		b, err := ck.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		id := d.Sum(b)
		x.Chunks = append(x.Chunks, chunker.Chunk{ID: id, Start: off, Size: uint64(len(b))})
		off += uint64(len(b))
		z, err := fetch.Compress(fetch.Zstd, b)
		if err != nil {
			t.Fatal(err)
		}
		st.chunks[id] = z
	}
	return data, x, st
}

func newBlob(t testing.TB, x *chunker.Index, stores ...fetch.Store) *fetch.Blob {
	t.Helper()
	s, err := fetch.NewScheduler(fetch.SchedulerOptions{Stores: stores, Memory: cache.NewMemory(-1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return fetch.NewBlob(x, s, "test.caibx")
}

// noTemps fails if any casync-style temporary file is left in dir.
func noTemps(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".#") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestBlobWritesNewFile(t *testing.T) {
	data, x, st := fixture(t, 600<<10)
	dir := t.TempDir()
	out := filepath.Join(dir, "img")
	var seen [3]int64
	var mu sync.Mutex
	res, err := Blob(context.Background(), newBlob(t, x, st), out, Options{Progress: func(n int64, f From) {
		mu.Lock()
		seen[f] += n
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, data) {
		t.Fatal("output differs from the image")
	}
	if res.ZeroBytes == 0 || seen[FromZero] != res.ZeroBytes || seen[FromStore] != res.FetchedBytes {
		t.Errorf("result %+v, progress %v", res, seen)
	}
	if seen[FromZero]+seen[FromStore] != int64(len(data)) {
		t.Errorf("progress adds up to %d, want %d", seen[FromZero]+seen[FromStore], len(data))
	}
	noTemps(t, dir)
}

// failCase makes an extract over an existing good output fail, and
// checks that the output is untouched and no temporary file is left.
func failCase(t *testing.T, mk func(x *chunker.Index, st *memStore) []fetch.Store, ctxf func() context.Context) error {
	t.Helper()
	_, x, st := fixture(t, 600<<10)
	dir := t.TempDir()
	out := filepath.Join(dir, "img")
	good := []byte("an older good copy\n")
	if err := os.WriteFile(out, good, 0o640); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if ctxf != nil {
		ctx = ctxf()
	}
	_, err := Blob(ctx, newBlob(t, x, mk(x, st)...), out, Options{Workers: 2})
	if err == nil {
		t.Fatal("extract succeeded")
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, good) {
		t.Errorf("existing output changed to %d bytes", len(got))
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o640 {
		t.Errorf("existing output's mode changed to %v", fi.Mode())
	}
	noTemps(t, dir)
	return err
}

func TestBlobMissingChunkLeavesOutput(t *testing.T) {
	err := failCase(t, func(x *chunker.Index, st *memStore) []fetch.Store {
		delete(st.chunks, x.Chunks[len(x.Chunks)-1].ID) // the last chunk: most were written
		return []fetch.Store{st}
	}, nil)
	if !errors.Is(err, fetch.ErrNotFound) {
		t.Errorf("error %v does not wrap ErrNotFound", err)
	}
}

func TestBlobCorruptChunkLeavesOutput(t *testing.T) {
	err := failCase(t, func(x *chunker.Index, st *memStore) []fetch.Store {
		id := x.Chunks[len(x.Chunks)/2].ID
		b := append([]byte(nil), st.chunks[id]...)
		b[len(b)/2] ^= 1
		st.chunks[id] = b
		return []fetch.Store{st}
	}, nil)
	var ce *fetch.CorruptChunkError
	if !errors.As(err, &ce) {
		t.Errorf("error %v is not a CorruptChunkError", err)
	}
}

func TestBlob403StoreLeavesOutput(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "forbidden", http.StatusForbidden)
	}))
	t.Cleanup(srv.Close)
	err := failCase(t, func(x *chunker.Index, st *memStore) []fetch.Store {
		hs, err := fetch.NewHTTPStore(srv.URL+"/store", fetch.HTTPOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return []fetch.Store{hs}
	}, nil)
	if !strings.Contains(err.Error(), "403") {
		t.Errorf("error %v does not mention the 403", err)
	}
}

func TestBlobCancelledLeavesOutput(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	err := failCase(t, func(x *chunker.Index, st *memStore) []fetch.Store {
		// The store hands out a few chunks, then the extract is cancelled
		// (as SIGINT does) while the rest wait.
		st.gate = make(chan struct{})
		go func() {
			for i := 0; i < 10; i++ {
				st.gate <- struct{}{}
			}
			cancel()
		}()
		return []fetch.Store{st}
	}, func() context.Context { return ctx })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v is not context.Canceled", err)
	}
}

func TestBlobReplacesOutputKeepingMode(t *testing.T) {
	data, x, st := fixture(t, 300<<10)
	dir := t.TempDir()
	out := filepath.Join(dir, "img")
	os.WriteFile(out, []byte("old"), 0o600)
	if _, err := Blob(context.Background(), newBlob(t, x, st), out, Options{}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, data) {
		t.Fatal("output differs from the image")
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want the old file's 0600", fi.Mode())
	}
	noTemps(t, dir)
}

func TestBlobRefusesFIFO(t *testing.T) {
	_, x, st := fixture(t, 100<<10)
	out := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(out, 0o644); err != nil {
		t.Skip("mkfifo:", err)
	}
	_, err := Blob(context.Background(), newBlob(t, x, st), out, Options{})
	if !errors.Is(err, ErrNotSeekable) {
		t.Fatalf("got %v, want ErrNotSeekable", err)
	}
}

func TestStream(t *testing.T) {
	data, x, st := fixture(t, 700<<10)
	var buf bytes.Buffer
	res, err := Stream(context.Background(), newBlob(t, x, st), &buf, Options{Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), data) {
		t.Fatal("stream differs from the image")
	}
	if res.FetchedBytes+res.ZeroBytes != int64(len(data)) {
		t.Errorf("result %+v", res)
	}
	delete(st.chunks, x.Chunks[2].ID)
	if _, err := Stream(context.Background(), newBlob(t, x, st), io.Discard, Options{}); !errors.Is(err, fetch.ErrNotFound) {
		t.Errorf("stream with a missing chunk: %v", err)
	}
}

func TestWriteZeros(t *testing.T) {
	data, x, st := fixture(t, 600<<10)
	out := filepath.Join(t.TempDir(), "img")
	if _, err := Blob(context.Background(), newBlob(t, x, st), out, Options{WriteZeros: true}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, data) {
		t.Fatal("output differs from the image")
	}
	var sst syscall.Stat_t
	syscall.Stat(out, &sst)
	if sst.Blocks*512 < int64(len(data))-4096 {
		t.Errorf("only %d bytes allocated of %d: zeros were not written", sst.Blocks*512, len(data))
	}
}

// countingStore counts Gets.
type countingStore struct {
	*memStore
	gets atomic.Int64
}

func (s *countingStore) Get(ctx context.Context, id chunker.ID) ([]byte, error) {
	s.gets.Add(1)
	return s.memStore.Get(ctx, id)
}

func TestBlobSeedOutputAndScanCache(t *testing.T) {
	v1, x1, _ := fixture(t, 800<<10)
	v2 := append([]byte(nil), v1...)
	rand.New(rand.NewSource(3)).Read(v2[500<<10 : 520<<10])
	x2, st2 := reindex(t, v2)
	dir := t.TempDir()
	out := filepath.Join(dir, "img")
	os.WriteFile(out, v1, 0o644)
	in1 := map[chunker.ID]bool{}
	for _, c := range x1.Chunks {
		in1[c.ID] = true
	}
	want := map[chunker.ID]bool{}
	b := newBlob(t, x2, st2)
	for i, c := range x2.Chunks {
		if !in1[c.ID] && !b.IsZero(i) {
			want[c.ID] = true
		}
	}
	cs := &countingStore{memStore: st2}
	sc := &seed.ScanCache{Dir: t.TempDir()}
	res, err := Blob(context.Background(), newBlob(t, x2, cs), out, Options{SeedOutput: true, ScanCache: sc})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, v2) {
		t.Fatal("output differs from v2")
	}
	if cs.gets.Load() != int64(len(want)) || res.SeededChunks == 0 {
		t.Errorf("fetched %d chunks, %d are not in v1; result %+v", cs.gets.Load(), len(want), res)
	}
	noTemps(t, dir)
	// The written image was recorded: extracting again takes every chunk
	// from it with no scan, and corrupting the record costs no wrong byte.
	cs.gets.Store(0)
	res, err = Blob(context.Background(), newBlob(t, x2, cs), out, Options{SeedOutput: true, ScanCache: sc})
	if err != nil {
		t.Fatal(err)
	}
	if cs.gets.Load() != 0 {
		t.Errorf("second extract fetched %d chunks", cs.gets.Load())
	}
	got, _ = os.ReadFile(out)
	if !bytes.Equal(got, v2) {
		t.Fatal("output differs from v2")
	}
}

// reindex chunks data with the fixture's parameters.
func reindex(t testing.TB, data []byte) (*chunker.Index, *memStore) {
	p := chunker.Params{Min: 1 << 10, Avg: 4 << 10, Max: 16 << 10}
	x := &chunker.Index{Flags: chunker.FlagSHA512_256, Min: p.Min, Avg: p.Avg, Max: p.Max}
	st := &memStore{chunks: map[chunker.ID][]byte{}}
	ck, _ := chunker.NewChunker(bytes.NewReader(data), p)
	off := uint64(0)
	for {
		b, err := ck.Next()
		if err != nil {
			break
		}
		id := x.Digest().Sum(b)
		x.Chunks = append(x.Chunks, chunker.Chunk{ID: id, Start: off, Size: uint64(len(b))})
		off += uint64(len(b))
		z, _ := fetch.Compress(fetch.Zstd, b)
		st.chunks[id] = z
	}
	return x, st
}
