package seed

import (
	"math/rand"
	"testing"

	"github.com/camount/camount/chunker"
)

// TestSumChunksZeros: zero chunks get the digest of their zeros without
// hashing, the others their digest, in place.
func TestSumChunksZeros(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	var datas [][]byte
	for i := 0; i < 40; i++ {
		b := make([]byte, 1+rng.Intn(70000))
		switch i % 4 {
		case 0: // zeros
		case 1:
			b[len(b)-1] = 1 // zeros but the last byte
		case 2:
			b[rng.Intn(len(b))] = 0x80
		default:
			rng.Read(b)
		}
		datas = append(datas, b)
	}
	datas = append(datas, []byte{})
	for _, d := range []chunker.Digest{chunker.SHA512_256, chunker.SHA256} {
		ids := make([]chunker.ID, len(datas))
		sumChunks(d, ids, datas)
		for i, b := range datas {
			if want := d.Sum(b); ids[i] != want {
				t.Fatalf("%v: chunk %d (%d bytes): %s, want %s", d, i, len(b), ids[i], want)
			}
		}
	}
}
