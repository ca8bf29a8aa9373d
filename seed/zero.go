package seed

import (
	"encoding/binary"
	"sync"

	"github.com/camount/camount/chunker"
)

// Seeds of disk images are often mostly zeros (free space, holes): a chunk
// of zeros is recognised by looking at it, far faster than hashing it, and
// its ID is the hash of zeros of its size, computed once per size.

type zeroKey struct {
	d chunker.Digest
	n int
}

var zeroIDs sync.Map // zeroKey -> chunker.ID

// zeroID returns the ID of n zero bytes under digest d.
func zeroID(d chunker.Digest, n int) chunker.ID {
	k := zeroKey{d, n}
	if id, ok := zeroIDs.Load(k); ok {
		return id.(chunker.ID)
	}
	id := d.Sum(make([]byte, n))
	zeroIDs.Store(k, id)
	return id
}

// isZero reports whether b holds only zero bytes.
func isZero(b []byte) bool {
	i := 0
	for ; i+32 <= len(b); i += 32 {
		if binary.LittleEndian.Uint64(b[i:])|binary.LittleEndian.Uint64(b[i+8:])|
			binary.LittleEndian.Uint64(b[i+16:])|binary.LittleEndian.Uint64(b[i+24:]) != 0 {
			return false
		}
	}
	for ; i < len(b); i++ {
		if b[i] != 0 {
			return false
		}
	}
	return true
}

// sumChunks sets ids[i] to the ID of datas[i]: zero chunks by looking,
// the others hashed in one batch.
func sumChunks(d chunker.Digest, ids []chunker.ID, datas [][]byte) {
	var idx []int
	var rest [][]byte
	for i, b := range datas {
		if len(b) > 0 && isZero(b) {
			ids[i] = zeroID(d, len(b))
			continue
		}
		idx = append(idx, i)
		rest = append(rest, b)
	}
	if len(rest) == len(datas) {
		d.SumBatch(ids, datas)
		return
	}
	sums := make([]chunker.ID, len(rest))
	d.SumBatch(sums, rest)
	for k, i := range idx {
		ids[i] = sums[k]
	}
}
