package chunker

import (
	"fmt"
	"math/rand"
	"testing"
)

// TestSumBatch: SumBatch gives the same IDs as Sum, for batches of many
// sizes and chunk lengths around block boundaries (0, 127, 128, 129, ...),
// with both digests, and with and without the vector code.
func TestSumBatch(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	buf := make([]byte, 600<<10)
	rng.Read(buf)
	lengths := []int{0, 1, 111, 112, 127, 128, 129, 239, 240, 255, 256, 257, 1000, 16 << 10, 65536, 65536 + 17, 256 << 10}
	for i := 0; i < 40; i++ {
		lengths = append(lengths, rng.Intn(300<<10))
	}
	defer func(m int) { minBatch = m }(minBatch)
	minBatch = 2 // the vector code for the smallest batches too
	type mode struct{ x8, x4 bool }
	for _, m := range []mode{{haveX8, haveX4}, {false, haveX4}, {false, false}} {
		saved8, saved4 := haveX8, haveX4
		haveX8, haveX4 = m.x8, m.x4
		for _, d := range []Digest{SHA512_256, SHA256} {
			for _, n := range []int{1, 2, 3, 5, 7, 8, 9, 13, 20, len(lengths)} {
				datas := make([][]byte, n)
				for i := range datas {
					l := lengths[(i*7+n)%len(lengths)]
					o := rng.Intn(len(buf) - l + 1)
					datas[i] = buf[o : o+l]
				}
				ids := make([]ID, n)
				d.SumBatch(ids, datas)
				for i, b := range datas {
					if want := d.Sum(b); ids[i] != want {
						t.Fatalf("AVX-512 %v, AVX2 %v, %v, batch of %d: chunk %d (%d bytes): %s, want %s", m.x8, m.x4, d, n, i, len(b), ids[i], want)
					}
				}
			}
		}
		haveX8, haveX4 = saved8, saved4
	}
	if !haveX8 {
		t.Log("this CPU lacks AVX-512 (F, BW): the eight-lane code was not tested")
	}
	if !haveX4 {
		t.Log("this CPU lacks AVX2: the four-lane code was not tested")
	}
}

func BenchmarkSumBatch(b *testing.B) {
	data := make([]byte, 64<<20)
	rand.New(rand.NewSource(2)).Read(data)
	var datas [][]byte
	for o := 0; o+65536 <= len(data); o += 65536 {
		datas = append(datas, data[o:o+65536-int(o/65536%1000)])
	}
	ids := make([]ID, len(datas))
	b.SetBytes(int64(len(data)))
	for _, vec := range []bool{false, true} {
		name := "sequential"
		if vec {
			name = "vector"
		}
		b.Run(name, func(b *testing.B) {
			saved8, saved4 := haveX8, haveX4
			haveX8, haveX4 = haveX8 && vec, haveX4 && vec
			defer func() { haveX8, haveX4 = saved8, saved4 }()
			b.SetBytes(int64(len(data)))
			for i := 0; i < b.N; i++ {
				for j := 0; j < len(datas); j += 32 {
					SHA512_256.SumBatch(ids[j:min(j+32, len(datas))], datas[j:min(j+32, len(datas))])
				}
			}
		})
	}
}

// FuzzSumBatch: for any bytes, cut into any chunks, SumBatch gives each
// chunk the ID Sum gives it (the vector code hashes lanes of different
// lengths side by side; a slip would make IDs casync does not make).
func FuzzSumBatch(f *testing.F) {
	f.Add([]byte("abc"), []byte{1, 2})
	f.Add(make([]byte, 4096), []byte{0, 127, 128, 129, 255, 17, 111, 112})
	defer func(m int) { minBatch = m }(minBatch)
	minBatch = 2 // the vector code for the smallest batches too
	f.Fuzz(func(t *testing.T, data []byte, cuts []byte) {
		// Each cut byte makes a chunk of up to ~2 KiB (scaled so that
		// lengths around the 128-byte block and 112-byte padding limits
		// come up often); the chunks overlap the data cyclically.
		if len(data) == 0 || len(cuts) == 0 || len(cuts) > 64 {
			return
		}
		datas := make([][]byte, len(cuts))
		o := 0
		for i, c := range cuts {
			n := int(c) * (1 + int(c)%9)
			if n > len(data) {
				n = n % (len(data) + 1)
			}
			o %= len(data) - n + 1
			datas[i] = data[o : o+n]
			o += int(c)
		}
		ids := make([]ID, len(datas))
		SHA512_256.SumBatch(ids, datas)
		for i, b := range datas {
			if want := SHA512_256.Sum(b); ids[i] != want {
				t.Fatalf("chunk %d of %d (%d bytes): SumBatch %s, Sum %s", i, len(datas), len(b), ids[i], want)
			}
		}
	})
}

// BenchmarkSumBatchUneven: batches of eight chunks of uneven lengths
// (16 KiB + an exponential spread, mean ~64 KiB, cut at 256 KiB, as the
// chunker makes them), as the fetch decoder verifies prefetched chunks;
// batch=1 is crypto/sha512 one chunk at a time.
func BenchmarkSumBatchUneven(b *testing.B) {
	r := rand.New(rand.NewSource(3))
	var datas [][]byte
	total := 0
	for len(datas) < 512 {
		n := min(16<<10+int(r.ExpFloat64()*48*1024), 256<<10)
		d := make([]byte, n)
		r.Read(d)
		datas = append(datas, d)
		total += n
	}
	ids := make([]ID, len(datas))
	for _, batch := range []int{1, 4, 8, 12, 16} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			b.SetBytes(int64(total))
			for i := 0; i < b.N; i++ {
				for j := 0; j < len(datas); j += batch {
					k := min(j+batch, len(datas))
					SHA512_256.SumBatch(ids[j:k], datas[j:k])
				}
			}
		})
	}
}
