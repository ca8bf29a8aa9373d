package chunker

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// r1m is FORMAT.md's 1 MiB test input: block i (32 B) = SHA-256(le64(i)).
func r1m() []byte {
	var out []byte
	var b [8]byte
	for i := 0; i < 32768; i++ {
		binary.LittleEndian.PutUint64(b[:], uint64(i))
		s := sha256.Sum256(b[:])
		out = append(out, s[:]...)
	}
	return out
}

// makeIndex chunks data and builds its index as casync make does for a blob.
func makeIndex(t testing.TB, data []byte, p Params, d Digest) *Index {
	t.Helper()
	c, err := NewChunker(bytes.NewReader(data), p)
	if err != nil {
		t.Fatal(err)
	}
	flags := FlagExcludeNodump | FlagExcludeFile
	if d == SHA512_256 {
		flags |= FlagSHA512_256
	}
	x := &Index{Flags: flags, Min: p.Min, Avg: p.Avg, Max: p.Max}
	var off uint64
	for {
		b, err := c.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		x.Chunks = append(x.Chunks, Chunk{ID: d.Sum(b), Start: off, Size: uint64(len(b))})
		off += uint64(len(b))
	}
	return x
}

// TestCasyncVectors checks the chunker and index writer against indexes made
// by the real casync (FORMAT.md §7, files in testdata made with casync make).
func TestCasyncVectors(t *testing.T) {
	four, _ := ParseParams("4096")
	cases := []struct {
		file string
		data []byte
		p    Params
		d    Digest
	}{
		{"hello.caibx", []byte("hello\n"), DefaultParams, SHA512_256},
		{"empty.caibx", nil, DefaultParams, SHA512_256},
		{"r1m.caibx", r1m(), DefaultParams, SHA512_256},
		{"r1m-4k.caibx", r1m(), four, SHA512_256},
		{"r1m-sha256.caibx", r1m(), DefaultParams, SHA256},
		{"zero1m.caibx", make([]byte, 1000000), DefaultParams, SHA512_256},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			x := makeIndex(t, tc.data, tc.p, tc.d)
			var got bytes.Buffer
			if _, err := x.WriteTo(&got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Fatalf("index bytes differ from casync's (%d vs %d bytes)", got.Len(), len(want))
			}
			back, err := ReadIndex(bytes.NewReader(want))
			if err != nil {
				t.Fatal(err)
			}
			if back.Size() != uint64(len(tc.data)) || len(back.Chunks) != len(x.Chunks) {
				t.Fatalf("read back size %d chunks %d", back.Size(), len(back.Chunks))
			}
		})
	}
}

func TestV3CutPoints(t *testing.T) {
	x := makeIndex(t, r1m(), DefaultParams, SHA512_256)
	ends := []uint64{80921, 138220, 187412, 237372, 296795, 348909, 437333, 483751, 584033, 676269, 776182, 792964, 865744, 907329, 945783, 1048576}
	if len(x.Chunks) != len(ends) {
		t.Fatalf("%d chunks, want %d", len(x.Chunks), len(ends))
	}
	for i, c := range x.Chunks {
		if c.End() != ends[i] {
			t.Errorf("chunk %d ends at %d, want %d", i, c.End(), ends[i])
		}
	}
	if got := x.Chunks[0].ID.String(); got != "0fac270dc01e8432b80e21552476de6483653a3b261f710457abdd5c8f22e860" {
		t.Errorf("first ID %s", got)
	}
}

func TestWindowHash(t *testing.T) {
	var w [49]byte
	for i := range w {
		w[i] = byte(i)
	}
	if h := windowHash(w[:48]); h != 0x6b67dec6 {
		t.Fatalf("h(0..47) = %#x", h)
	}
	if h := windowHash(w[1:49]); h != 0xa3fc25f1 {
		t.Fatalf("h(1..48) = %#x", h)
	}
	if h := windowHash(make([]byte, 48)); h != 0x9e489e48 {
		t.Fatalf("h(zeros) = %#x", h)
	}
}

func TestDiscriminator(t *testing.T) {
	for avg, want := range map[uint64]uint32{65536: 49535, 4096: 3075, 1000: 750, 100: 75, 64: 48} {
		p := Params{1, avg, avg * 4}
		if got := p.discriminator(); got != want {
			t.Errorf("avg %d: d = %d, want %d", avg, got, want)
		}
	}
}

func TestEndOfStream(t *testing.T) {
	for n, want := range map[int]int{524288: 2, 524289: 3, 0: 0, 1: 1} {
		x := makeIndex(t, make([]byte, n), DefaultParams, SHA512_256)
		if len(x.Chunks) != want {
			t.Errorf("%d zero bytes: %d chunks, want %d", n, len(x.Chunks), want)
		}
	}
}

func TestParseParams(t *testing.T) {
	good := map[string]Params{
		"":             DefaultParams,
		"auto":         DefaultParams,
		"4096":         {1024, 4096, 16384},
		"64":           {16, 64, 256},
		"1:10:50":      {1, 10, 50},
		"16K:64K:256K": DefaultParams,
	}
	for s, want := range good {
		got, err := ParseParams(s)
		if err != nil || got != want {
			t.Errorf("ParseParams(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"1:10:40", "0", "5:4:3", "x", "1:2", "1:2:268435456"} {
		if _, err := ParseParams(s); err == nil {
			t.Errorf("ParseParams(%q) accepted", s)
		}
	}
}

func TestReadIndexErrors(t *testing.T) {
	good, err := os.ReadFile("testdata/r1m.caibx")
	if err != nil {
		t.Fatal(err)
	}
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	le := binary.LittleEndian
	cases := map[string]struct {
		data []byte
		msg  string
	}{
		"empty":       {nil, "empty file"},
		"truncated":   {good[:len(good)-1], "truncated"},
		"short head":  {good[:30], "truncated header"},
		"bad magic":   {mut(func(b []byte) []byte { b[8] ^= 1; return b }), "bad magic"},
		"flags":       {mut(func(b []byte) []byte { le.PutUint64(b[16:], 1<<40); return b }), "unknown feature flags"},
		"not normal":  {mut(func(b []byte) []byte { le.PutUint64(b[16:], 0x3); return b }), "not normalized"},
		"sizes":       {mut(func(b []byte) []byte { le.PutUint64(b[24:], 1<<30); return b }), "chunk size"},
		"table":       {mut(func(b []byte) []byte { b[48] = 0; return b }), "table header"},
		"trailing":    {append(append([]byte(nil), good...), 0), "trailing"},
		"order":       {mut(func(b []byte) []byte { le.PutUint64(b[64+40:], 5); return b }), "does not increase"},
		"too big":     {mut(func(b []byte) []byte { le.PutUint64(b[64:], 300000); return b }), "exceeds the maximum"},
		"tail size":   {mut(func(b []byte) []byte { b[len(b)-16]++; return b }), ""},
		"tail marker": {mut(func(b []byte) []byte { b[len(b)-1]++; return b }), ""},
	}
	for name, tc := range cases {
		_, err := ReadIndex(bytes.NewReader(tc.data))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: error %q, want ErrFormat containing %q", name, err, tc.msg)
		}
	}
}

func TestFind(t *testing.T) {
	x := makeIndex(t, r1m(), DefaultParams, SHA512_256)
	for _, off := range []int64{0, 80920, 80921, 1048575} {
		i := x.Find(off)
		c := x.Chunks[i]
		if uint64(off) < c.Start || uint64(off) >= c.End() {
			t.Errorf("Find(%d) = chunk %d [%d,%d)", off, i, c.Start, c.End())
		}
	}
	if x.Find(-1) != -1 || x.Find(1048576) != -1 {
		t.Error("Find outside the stream should be -1")
	}
}

func FuzzReadIndex(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.caibx")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		x, err := ReadIndex(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error does not wrap ErrFormat: %v", err)
			}
			return
		}
		var out bytes.Buffer
		if _, err := x.WriteTo(&out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatal("accepted index does not round-trip byte for byte")
		}
	})
}

func BenchmarkSplitter(b *testing.B) {
	data := bytes.Repeat(r1m(), 16)
	s, _ := NewSplitter(DefaultParams)
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		for buf := data; len(buf) > 0; {
			n := s.Cut(buf)
			if n == 0 {
				n = len(buf)
			}
			buf = buf[n:]
		}
	}
}

// TestZeroSkipSameCuts: the zero-run shortcut cuts exactly where the plain
// rolling hash does, for data mixing zero runs, short zero runs and noise,
// over many chunk-size settings (including ones where a zero window cuts).
func TestZeroSkipSameCuts(t *testing.T) {
	data := r1m()
	var mixed []byte
	for i := 0; i < 40; i++ {
		mixed = append(mixed, data[i*9000:i*9000+int(i*997%7000)+1]...)
		mixed = append(mixed, make([]byte, (i*7919)%70000)...)
	}
	for _, cs := range []string{"auto", "4096", "64", "1:10:50", "1000:1000:5000", "16:64:256", "2048:65536:70000"} {
		p, err := ParseParams(cs)
		if err != nil {
			t.Fatal(err)
		}
		fast, _ := NewSplitter(p)
		slow, _ := NewSplitter(p)
		slow.skipZeros = false
		for buf := mixed; len(buf) > 0; {
			a, b := fast.Cut(buf), slow.Cut(buf)
			if a != b {
				t.Fatalf("%s: cut %d with zero skipping, %d without", cs, a, b)
			}
			if a == 0 {
				break
			}
			buf = buf[a:]
		}
	}
}
