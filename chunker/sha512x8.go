package chunker

import (
	"crypto/sha512"
	"encoding"
	"encoding/binary"
	"slices"
)

// Hashing many chunks at once: on CPUs with AVX-512, eight chunks are
// hashed side by side, one in each 64-bit lane of the vector registers
// (SHA-512 works on 64-bit words), which is several times the throughput of
// hashing them one after another; with AVX2 only, four at a time (twice
// per pass of the eight lanes), ~1.6-1.8x crypto/sha512's speed here (an
// AMD EPYC without AVX-512; BenchmarkSumBatch). A lane whose chunk ends
// takes the next chunk of the batch. The final partial block and padding
// of each chunk are left to crypto/sha512, resumed from the lane's state.

// SHA-512/256 initial hash value (FIPS 180-4 §5.3.6.2).
var sha512_256IV = [8]uint64{
	0x22312194fc2bf72c, 0x9f555fa3c84c64c2, 0x2393b86b6f53b151, 0x963877195940eabd,
	0x96283ee2a88effe3, 0xbe5e1e2553863992, 0x2b0199fc2c85b8aa, 0x0eb72ddc81c52ca2,
}

// SHA-512 round constants (FIPS 180-4 §4.2.3).
var sha512K = [...]uint64{
	0x428a2f98d728ae22,
	0x7137449123ef65cd,
	0xb5c0fbcfec4d3b2f,
	0xe9b5dba58189dbbc,
	0x3956c25bf348b538,
	0x59f111f1b605d019,
	0x923f82a4af194f9b,
	0xab1c5ed5da6d8118,
	0xd807aa98a3030242,
	0x12835b0145706fbe,
	0x243185be4ee4b28c,
	0x550c7dc3d5ffb4e2,
	0x72be5d74f27b896f,
	0x80deb1fe3b1696b1,
	0x9bdc06a725c71235,
	0xc19bf174cf692694,
	0xe49b69c19ef14ad2,
	0xefbe4786384f25e3,
	0x0fc19dc68b8cd5b5,
	0x240ca1cc77ac9c65,
	0x2de92c6f592b0275,
	0x4a7484aa6ea6e483,
	0x5cb0a9dcbd41fbd4,
	0x76f988da831153b5,
	0x983e5152ee66dfab,
	0xa831c66d2db43210,
	0xb00327c898fb213f,
	0xbf597fc7beef0ee4,
	0xc6e00bf33da88fc2,
	0xd5a79147930aa725,
	0x06ca6351e003826f,
	0x142929670a0e6e70,
	0x27b70a8546d22ffc,
	0x2e1b21385c26c926,
	0x4d2c6dfc5ac42aed,
	0x53380d139d95b3df,
	0x650a73548baf63de,
	0x766a0abb3c77b2a8,
	0x81c2c92e47edaee6,
	0x92722c851482353b,
	0xa2bfe8a14cf10364,
	0xa81a664bbc423001,
	0xc24b8b70d0f89791,
	0xc76c51a30654be30,
	0xd192e819d6ef5218,
	0xd69906245565a910,
	0xf40e35855771202a,
	0x106aa07032bbd1b8,
	0x19a4c116b8d2d0c8,
	0x1e376c085141ab53,
	0x2748774cdf8eeb99,
	0x34b0bcb5e19b48a8,
	0x391c0cb3c5c95a63,
	0x4ed8aa4ae3418acb,
	0x5b9cca4f7763e373,
	0x682e6ff3d6b2b8a3,
	0x748f82ee5defb2fc,
	0x78a5636f43172f60,
	0x84c87814a1f0ab72,
	0x8cc702081a6439ec,
	0x90befffa23631e28,
	0xa4506cebde82bde9,
	0xbef9a3f7b2c67915,
	0xc67178f2e372532b,
	0xca273eceea26619c,
	0xd186b8c721c0c207,
	0xeada7dd6cde0eb1e,
	0xf57d4f7fee6ed178,
	0x06f067aa72176fba,
	0x0a637dc5a2c898a6,
	0x113f9804bef90dae,
	0x1b710b35131c471b,
	0x28db77f523047d84,
	0x32caab7b40c72493,
	0x3c9ebe0a15c9bebc,
	0x431d67c49c100d4c,
	0x4cc5d4becb3e42b6,
	0x597f299cfc657e2a,
	0x5fcb6fab3ad6faec,
	0x6c44198c4a475817,
}

// bswapMask reverses the bytes of each 64-bit word (VPSHUFB indices).
var bswapMask = [8]uint64{
	0x0001020304050607, 0x08090a0b0c0d0e0f, 0x0001020304050607, 0x08090a0b0c0d0e0f,
	0x0001020304050607, 0x08090a0b0c0d0e0f, 0x0001020304050607, 0x08090a0b0c0d0e0f,
}

const lanes = 8

// x8 is the state of eight SHA-512 computations.
type x8 struct {
	h    [8][lanes]uint64 // [word][lane]
	ptrs [lanes]uint64    // address of each lane's next block
	w    [80][lanes]uint64
}

// minLanes is the fewest busy lanes worth a pass of the eight-lane code:
// it hashes each lane at about a quarter of the speed of crypto/sha512's
// single-stream code (AVX2), so with fewer lanes the rest of each chunk is
// hashed one after another instead.
const minLanes = 4

// minLanesX4 is minLanes for the AVX2 code (sha512x4), which hashes four
// lanes a pass at ~1.6x crypto/sha512's speed in all (BenchmarkSumBatch):
// three busy lanes of a pass still beat hashing them one by one.
const minLanesX4 = 3

// minBatch is the fewest chunks SumBatch hashes side by side: a batch
// of four is no faster than hashing its chunks one by one
// (BenchmarkSumBatchUneven: 751 against 770 MB/s), a dozen 1.6x. A
// variable so that tests run the vector code on small batches too.
var minBatch = 6

// BatchFaster reports whether SumBatch hashes a batch of digest d faster
// than one by one on this CPU (SHA-512/256 with AVX-512 or AVX2): only
// then is it worth gathering chunks into batches.
func (d Digest) BatchFaster() bool { return d == SHA512_256 && (haveX8 || haveX4) }

// BatchWorth reports whether SumBatch hashes n chunks of digest d side by
// side (faster than one by one) rather than one after another.
func (d Digest) BatchWorth(n int) bool { return d.BatchFaster() && n >= minBatch }

// SumBatch sets ids[i] to the digest of datas[i], for len(datas) chunks,
// side by side where that is faster (SHA-512/256, AVX-512, at least
// minBatch chunks), else one by one.
func (d Digest) SumBatch(ids []ID, datas [][]byte) {
	if !d.BatchWorth(len(datas)) {
		for i, b := range datas {
			ids[i] = d.Sum(b)
		}
		return
	}
	sumBatch512_256(ids, datas)
}

func sumBatch512_256(ids []ID, datas [][]byte) {
	var s x8
	var lane [lanes]int // chunk index in each lane, -1: none
	var off [lanes]int  // bytes of the lane's chunk hashed so far
	var left [lanes]int // full blocks of the lane's chunk still to hash
	// Longest chunks first: lanes then run out of work at about the same
	// time at the end of the batch.
	order := make([]int, len(datas))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return len(datas[b]) - len(datas[a]) })
	next := 0
	// take puts the next chunk that has full blocks into lane l; chunks
	// shorter than a block are finished directly.
	take := func(l int) {
		lane[l] = -1
		for next < len(order) {
			i := order[next]
			next++
			if len(datas[i]) < 128 {
				ids[i] = SHA512_256.Sum(datas[i])
				continue
			}
			lane[l], off[l], left[l] = i, 0, len(datas[i])/128
			for w := range s.h {
				s.h[w][l] = sha512_256IV[w]
			}
			return
		}
	}
	for l := 0; l < lanes; l++ {
		take(l)
	}
	need := minLanes
	if !haveX8 {
		need = minLanesX4
	}
	for {
		n, any, busy := 0, -1, 0
		for l := 0; l < lanes; l++ {
			if lane[l] >= 0 {
				busy++
				if any < 0 || left[l] < n {
					n, any = left[l], l
				}
			}
		}
		if any < 0 {
			break
		}
		if busy < need && next == len(order) {
			// Too few lanes left busy for the vector code to beat hashing
			// their rest one by one (chunks of uneven lengths end so).
			for l := 0; l < lanes; l++ {
				if lane[l] >= 0 {
					ids[lane[l]] = finish512_256(&s, l, datas[lane[l]], off[l])
				}
			}
			break
		}
		if !haveX8 && next == len(order) {
			// AVX2 hashes four lanes a pass: once no chunk is left to
			// take, the busy lanes move to the first ones, so that no
			// pass runs for one or two.
			to := 0
			for l := 0; l < lanes; l++ {
				if lane[l] < 0 {
					continue
				}
				if l != to {
					for w := range s.h {
						s.h[w][to] = s.h[w][l]
					}
					lane[to], off[to], left[to] = lane[l], off[l], left[l]
					lane[l] = -1
				}
				if l == any {
					any = to
				}
				to++
			}
		}
		for l := 0; l < lanes; l++ {
			src := any // idle lanes hash a busy lane's blocks; their state is dropped
			if lane[l] >= 0 {
				src = l
			}
			s.ptrs[l] = uint64(uintptrOf(datas[lane[src]][off[src]:]))
		}
		if haveX8 {
			sha512x8(&s.h, &s.ptrs, n, &s.w)
		} else {
			// AVX2: the lanes four at a time; four idle ones are skipped.
			for half := 0; half < lanes; half += 4 {
				if lane[half] >= 0 || lane[half+1] >= 0 || lane[half+2] >= 0 || lane[half+3] >= 0 {
					sha512x4(&s.h[0][half], &s.ptrs[half], n, &s.w[0][half])
				}
			}
		}
		keepAlive(datas)
		for l := 0; l < lanes; l++ {
			if lane[l] < 0 {
				continue
			}
			off[l] += 128 * n
			left[l] -= n
			if left[l] == 0 {
				i := lane[l]
				ids[i] = finish512_256(&s, l, datas[i], off[l])
				take(l)
			}
		}
	}
}

// finish512_256 resumes crypto/sha512 from lane l's state after done bytes
// of data (a multiple of the block size) and hashes the rest.
func finish512_256(s *x8, l int, data []byte, done int) ID {
	// The state encoding of crypto/sha512's digest (MarshalBinary): magic,
	// the eight state words, the pending block (empty) and the length.
	st := make([]byte, 0, 4+64+128+8)
	st = append(st, "sha\x06"...)
	for w := range s.h {
		st = binary.BigEndian.AppendUint64(st, s.h[w][l])
	}
	st = append(st, make([]byte, 128)...)
	st = binary.BigEndian.AppendUint64(st, uint64(done))
	h := sha512.New512_256()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(st); err != nil {
		return SHA512_256.Sum(data) // cannot happen; stay correct regardless
	}
	h.Write(data[done:])
	var id ID
	h.Sum(id[:0])
	return id
}
