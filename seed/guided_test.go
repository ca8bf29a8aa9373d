package seed

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"testing"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
)

type gscanned struct {
	id        chunker.ID
	off, size int64
}

func collect(t *testing.T, s *FileSeed, data []byte) []gscanned {
	t.Helper()
	var out []gscanned
	err := s.Scan(context.Background(), func(id chunker.ID, l Location) {
		if l.Data != nil && !bytes.Equal(l.Data, data[l.Off:l.Off+l.Size]) {
			t.Fatalf("Data at %d is not the seed's bytes", l.Off)
		}
		out = append(out, gscanned{id, l.Off, l.Size})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestGuidedScanEqualsPlain: a scan guided by the target reports exactly
// the chunks of the plain scan (the seed chunked from its start, as
// casync does), in order, whatever the seed's differences from the target.
func TestGuidedScanEqualsPlain(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	random := func(n int) []byte { b := make([]byte, n); rng.Read(b); return b }
	const n = 3 << 20
	base := random(n)
	withZeros := append([]byte(nil), base...)
	for _, r := range [][2]int{{100 << 10, 700 << 10}, {1 << 20, 1<<20 + 5000}, {2 << 20, 2<<20 + 300<<10}} {
		clear(withZeros[r[0]:r[1]])
	}
	mod := func(b []byte, f func([]byte) []byte) []byte { return f(append([]byte(nil), b...)) }
	cases := []struct {
		name       string
		seed, targ []byte
	}{
		{"same", base, base},
		{"replaced", base, mod(base, func(b []byte) []byte { copy(b[n/3:], random(30000)); copy(b[n/2:], random(100)); return b })},
		{"inserted", base, mod(base, func(b []byte) []byte { return append(b[:n/4:n/4], append(random(12345), base[n/4:]...)...) })},
		{"deleted", base, mod(base, func(b []byte) []byte { return append(b[:n/4:n/4], base[n/4+54321:]...) })},
		{"moved", base, mod(base, func(b []byte) []byte { copy(b[n/2:], base[n/10:n/10+400000]); return b })},
		{"zeros-in-seed", withZeros, base},
		{"zeros-in-target", base, withZeros},
		{"zeros-both", withZeros, mod(withZeros, func(b []byte) []byte { copy(b[n/3:], random(50000)); return b })},
		{"seed-longer", append(append([]byte(nil), base...), random(100000)...), base},
		{"seed-shorter", base[:n-77777], base},
		{"unrelated", random(n / 2), base},
		{"many-changes", base, mod(base, func(b []byte) []byte {
			for o := 1000; o+200 < len(b); o += 60000 + rng.Intn(60000) {
				copy(b[o:], random(1+rng.Intn(200)))
			}
			return b
		})},
		{"tiny-target", base, base[:5000]},
		{"empty-seed", nil, base},
	}
	for _, c := range cases {
		for _, p := range []chunker.Params{params, {Min: 4 << 10, Avg: 4 << 10, Max: 4 << 10}, {Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10}} {
			t.Run(fmt.Sprintf("%s/%d-%d", c.name, p.Min, p.Max), func(t *testing.T) {
				x, _ := index(t, c.targ)
				if p != params {
					x = indexWith(t, c.targ, p)
				}
				// Sparse: zero blocks are holes, unread by a guided scan.
				path := writeSparse(t, c.seed)
				sp := Params{Digest: x.Digest(), Chunk: p}
				plainSeed, _ := OpenFile(path, sp)
				defer plainSeed.Close()
				plain := collect(t, plainSeed, c.seed)
				gs, _ := OpenFile(path, sp)
				defer gs.Close()
				gs.Guide(x, fetch.ZeroChunks(x))
				if gs.guide == nil {
					t.Fatal("the scan is not guided")
				}
				guided := collect(t, gs, c.seed)
				t.Logf("%d of %d bytes guessed", gs.Guessed(), len(c.seed))
				if len(plain) != len(guided) {
					t.Fatalf("guided scan reported %d chunks, the plain one %d", len(guided), len(plain))
				}
				for i := range plain {
					if plain[i] != guided[i] {
						t.Fatalf("chunk %d: guided %+v, plain %+v", i, guided[i], plain[i])
					}
				}
			})
		}
	}
}

func indexWith(t *testing.T, data []byte, p chunker.Params) *chunker.Index {
	t.Helper()
	x := &chunker.Index{Flags: chunker.FlagSHA512_256, Min: p.Min, Avg: p.Avg, Max: p.Max}
	f, err := os.CreateTemp(t.TempDir(), "t")
	if err != nil {
		t.Fatal(err)
	}
	f.Write(data)
	fs := FromFile(f, "target", Params{Digest: x.Digest(), Chunk: p})
	defer fs.Close()
	fs.Scan(context.Background(), func(id chunker.ID, l Location) {
		x.Chunks = append(x.Chunks, chunker.Chunk{ID: id, Start: uint64(l.Off), Size: uint64(l.Size)})
	})
	return x
}

// writeSparse writes data to a file whose 4 KiB blocks of zeros are holes.
func writeSparse(t *testing.T, data []byte) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "sparse")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(int64(len(data)))
	for o := 0; o < len(data); o += 4096 {
		b := data[o:min(o+4096, len(data))]
		if !isZero(b) {
			if _, err := f.WriteAt(b, int64(o)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return f.Name()
}
