package fetch

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/camount/camount/cache"
	"github.com/camount/camount/chunker"
)

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func chunkOf(d chunker.Digest, data []byte) chunker.Chunk {
	return chunker.Chunk{ID: d.Sum(data), Size: uint64(len(data))}
}

func TestDecodeChunkAllCompressions(t *testing.T) {
	data := append(randBytes(5000, 1), make([]byte, 5000)...)
	for _, d := range []chunker.Digest{chunker.SHA512_256, chunker.SHA256} {
		c := chunkOf(d, data)
		for _, comp := range []Compression{Zstd, XZ, Gzip, None} {
			stored, err := Compress(comp, data)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeChunk(c, d, stored)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%v/%v: err %v, equal %v", d, comp, err, bytes.Equal(got, data))
			}
		}
	}
}

// TestDecodeChunkCasyncBytes decodes the exact zstd frame casync wrote for "hello\n".
func TestDecodeChunkCasyncBytes(t *testing.T) {
	stored := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58, 0x31, 0x00, 0x00, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x0a}
	c := chunkOf(chunker.SHA512_256, []byte("hello\n"))
	if c.ID.String() != "7f3f0c0d5219f51459578305ed2bbc198588758da85d08024c79c1195d1cd611" {
		t.Fatal("unexpected ID")
	}
	got, err := DecodeChunk(c, chunker.SHA512_256, stored)
	if err != nil || string(got) != "hello\n" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestDecodeChunkRejects(t *testing.T) {
	data := randBytes(10000, 2)
	d := chunker.SHA512_256
	c := chunkOf(d, data)
	z, _ := Compress(Zstd, data)
	other, _ := Compress(Zstd, randBytes(10000, 3))
	flipped := append([]byte(nil), z...)
	flipped[len(flipped)/2] ^= 0x40
	short := chunkOf(d, data[:9999])
	cases := map[string]struct {
		c      chunker.Chunk
		stored []byte
	}{
		"empty":         {c, nil},
		"other data":    {c, other},
		"bit flip":      {c, flipped},
		"truncated":     {c, z[:len(z)-3]},
		"trailing":      {c, append(append([]byte(nil), z...), 1, 2, 3)},
		"wrong size":    {chunker.Chunk{ID: c.ID, Size: 5}, z},
		"size mismatch": {short, z},
		"garbage":       {c, []byte("not a chunk at all")},
	}
	for name, tc := range cases {
		got, err := DecodeChunk(tc.c, d, tc.stored)
		var ce *CorruptChunkError
		if err == nil || !errors.As(err, &ce) || got != nil {
			t.Errorf("%s: got %d bytes, err %v; want CorruptChunkError and no bytes", name, len(got), err)
		}
	}
}

func FuzzDecodeChunk(f *testing.F) {
	data := []byte("hello\n")
	for _, comp := range []Compression{Zstd, XZ, Gzip, None} {
		b, _ := Compress(comp, data)
		f.Add(b)
	}
	c := chunkOf(chunker.SHA512_256, data)
	// A batch (DecodeChunks, hashing side by side) of good chunks around
	// the fuzzed one must give the fuzzed one what DecodeChunk gives it.
	var cs []chunker.Chunk
	var stores, want [][]byte
	for i := 0; i < 7; i++ {
		d := bytes.Repeat([]byte{byte('a' + i)}, 200+i*977)
		b, _ := Compress(Zstd, d)
		cs, stores, want = append(cs, chunkOf(chunker.SHA512_256, d)), append(stores, b), append(want, d)
	}
	const mid = 3
	cs[mid], want[mid] = c, data
	f.Fuzz(func(t *testing.T, stored []byte) {
		got, err := DecodeChunk(c, chunker.SHA512_256, stored)
		if err == nil && !bytes.Equal(got, data) {
			t.Fatalf("accepted bytes that are not the chunk: %q", got)
		}
		if err != nil && got != nil {
			t.Fatal("returned bytes with an error")
		}
		batch := append([][]byte(nil), stores...)
		batch[mid] = stored
		outs, errs := DecodeChunks(cs, chunker.SHA512_256, batch)
		for i := range cs {
			switch {
			case i == mid && ((errs[i] == nil) != (err == nil) || !bytes.Equal(outs[i], got)):
				t.Fatalf("in a batch: %q, %v; alone: %q, %v", outs[i], errs[i], got, err)
			case i != mid && (errs[i] != nil || !bytes.Equal(outs[i], want[i])):
				t.Fatalf("good chunk %d in a batch with the fuzzed one: %v", i, errs[i])
			}
		}
	})
}

// memStore is an in-memory Store that counts Gets.
type memStore struct {
	name string
	mu   sync.Mutex
	m    map[chunker.ID][]byte
	gets int
}

func (s *memStore) Get(ctx context.Context, id chunker.ID) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gets++
	b, ok := s.m[id]
	if !ok {
		return nil, ErrNotFound
	}
	return b, nil
}
func (s *memStore) String() string { return s.name }

// blobFixture makes an index and stores for data chunked with small chunks.
func blobFixture(t *testing.T, data []byte) (*chunker.Index, *memStore) {
	t.Helper()
	p, _ := chunker.ParseParams("1024")
	ck, err := chunker.NewChunker(bytes.NewReader(data), p)
	if err != nil {
		t.Fatal(err)
	}
	x := &chunker.Index{Flags: chunker.FlagSHA512_256 | chunker.FlagExcludeFile | chunker.FlagExcludeNodump, Min: p.Min, Avg: p.Avg, Max: p.Max}
	st := &memStore{name: "mem", m: map[chunker.ID][]byte{}}
	var off uint64
	for {
		b, err := ck.Next()
		if err != nil {
			break
		}
		id := x.Digest().Sum(b)
		z, _ := Compress(Zstd, b)
		st.m[id] = z
		x.Chunks = append(x.Chunks, chunker.Chunk{ID: id, Start: off, Size: uint64(len(b))})
		off += uint64(len(b))
	}
	return x, st
}

func TestBlobReadsExactly(t *testing.T) {
	data := append(append(randBytes(200000, 4), make([]byte, 40000)...), randBytes(50000, 5)...)
	x, st := blobFixture(t, data)
	s, err := NewScheduler(SchedulerOptions{Stores: []Store{st}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b := NewBlob(x, s, "test")
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 9))
			for i := 0; i < 200; i++ {
				off := r.Int64N(int64(len(data)))
				n := r.IntN(20000)
				p := make([]byte, n)
				got, err := b.ReadAt(p, off)
				want := min(n, len(data)-int(off))
				if got != want || (err != nil && got == n) || !bytes.Equal(p[:got], data[off:off+int64(got)]) {
					t.Errorf("ReadAt(%d, %d) = %d, %v", n, off, got, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	if z := ZeroChunks(x); func() bool {
		for _, v := range z {
			if v {
				return true
			}
		}
		return false
	}() == false {
		t.Error("no zero chunk detected in a 40000-byte zero run")
	}
}

func TestBlobCorruptChunkFallsBackAndNeverServesBadBytes(t *testing.T) {
	data := randBytes(100000, 6)
	x, good := blobFixture(t, data)
	bad := &memStore{name: "bad", m: map[chunker.ID][]byte{}}
	for id, b := range good.m {
		bb := append([]byte(nil), b...)
		bb[len(bb)-5] ^= 1
		bad.m[id] = bb
	}
	// bad first, then good: every chunk comes from good.
	s, _ := NewScheduler(SchedulerOptions{Stores: []Store{bad, good}, Memory: cache.NewMemory(1 << 20)})
	b := NewBlob(x, s, "test")
	got := make([]byte, len(data))
	if _, err := b.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read through a corrupt first store: %v", err)
	}
	s.Close()
	// Only the bad store: reads fail with a CorruptChunkError and no data.
	s2, _ := NewScheduler(SchedulerOptions{Stores: []Store{bad}})
	defer s2.Close()
	b2 := NewBlob(x, s2, "test")
	p := make([]byte, 100)
	n, err := b2.ReadAt(p, 5000)
	var ce *CorruptChunkError
	if err == nil || !errors.As(err, &ce) || n != 0 || !bytes.Equal(p, make([]byte, 100)) {
		t.Fatalf("n %d err %v", n, err)
	}
}

func TestLocalStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := NewLocalStore(dir)
	data := []byte("hello\n")
	id := chunker.SHA512_256.Sum(data)
	if _, err := s.Get(context.Background(), id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing chunk: %v", err)
	}
	z, _ := Compress(Zstd, data)
	if err := s.Put(id, z); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(id, z); err != nil {
		t.Fatal("second put of the same chunk:", err)
	}
	want := filepath.Join(dir, "7f3f", id.String()+".cacnk")
	if st, err := os.Stat(want); err != nil || st.Mode().Perm() != 0o444 {
		t.Fatalf("chunk file %s: %v", want, err)
	}
	got, err := s.Get(context.Background(), id)
	if err != nil || !bytes.Equal(got, z) {
		t.Fatal(err)
	}
	// An uncompressed chunk file (no suffix) is read too.
	os.Remove(want)
	os.WriteFile(filepath.Join(dir, "7f3f", id.String()), data, 0o444)
	got, err = s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if dec, err := DecodeChunk(chunker.Chunk{ID: id, Size: 6}, chunker.SHA512_256, got); err != nil || string(dec) != "hello\n" {
		t.Fatal("raw chunk", err)
	}
}

// TestLocalStorePooledReads fetches chunks of every compression, and
// uncompressed ones, from a local store through the scheduler concurrently
// and many times: the stored bytes are read into pooled buffers, so a
// chunk handed out (and cached) must never change when later reads reuse
// those buffers.
func TestLocalStorePooledReads(t *testing.T) {
	dir := t.TempDir()
	st := NewLocalStore(dir)
	d := chunker.SHA512_256
	var chunks []chunker.Chunk
	var datas [][]byte
	for i := 0; i < 40; i++ {
		data := append(randBytes(1000+i*997, uint64(i)), make([]byte, i*1500)...)
		c := chunkOf(d, data)
		switch comp := []Compression{Zstd, XZ, Gzip, None}[i%4]; comp {
		case None: // no suffix: casync's uncompressed chunk file
			p := st.Path(c.ID)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p[:len(p)-len(ChunkSuffix)], data, 0o444); err != nil {
				t.Fatal(err)
			}
		default:
			stored, err := Compress(comp, data)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Put(c.ID, stored); err != nil {
				t.Fatal(err)
			}
		}
		chunks, datas = append(chunks, c), append(datas, data)
	}
	// A tiny memory cache: chunks are fetched (into pooled buffers) again and again.
	s, err := NewScheduler(SchedulerOptions{Stores: []Store{st}, Memory: cache.NewMemory(1), Workers: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := make([][]byte, len(chunks))
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < 5; r++ {
				for i := range chunks {
					b, err := s.Fetch(context.Background(), chunks[i], d, Foreground)
					if err != nil || !bytes.Equal(b, datas[i]) {
						t.Errorf("chunk %d: err %v, equal %v", i, err, bytes.Equal(b, datas[i]))
						return
					}
					if g == 0 && r == 0 {
						got[i] = b
					}
				}
			}
		}()
	}
	wg.Wait()
	for i, b := range got {
		if b != nil && !bytes.Equal(b, datas[i]) {
			t.Fatalf("chunk %d changed after it was handed out", i)
		}
	}
}
