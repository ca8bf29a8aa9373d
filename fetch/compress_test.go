package fetch

import (
	"bytes"
	"testing"

	"github.com/camount/camount/chunker"
)

// TestAppendCompress checks that AppendCompress keeps what dst holds, that
// a reused buffer gives the same frames as a fresh one, and that every
// codec's output (for zstd: this build's encoder, libzstd under cgo) decodes
// back, including the empty chunk and chunks of casync's maximum size.
func TestAppendCompress(t *testing.T) {
	inputs := [][]byte{
		{},
		[]byte("hello\n"),
		append(randBytes(70000, 7), make([]byte, 30000)...),
		randBytes(chunker.DefaultMax, 8),
		bytes.Repeat([]byte("camount "), chunker.DefaultMax/8),
	}
	for _, comp := range []Compression{Zstd, XZ, Gzip, None} {
		var buf []byte
		for i, data := range inputs {
			fresh, err := Compress(comp, data)
			if err != nil {
				t.Fatalf("%v input %d: %v", comp, i, err)
			}
			prefix := []byte("prefix")
			b, err := AppendCompress(append([]byte(nil), prefix...), comp, data)
			if err != nil || !bytes.HasPrefix(b, prefix) || !bytes.Equal(b[len(prefix):], fresh) {
				t.Fatalf("%v input %d: append onto a prefix: err %v, prefix kept %v, same frame %v", comp, i, err, bytes.HasPrefix(b, prefix), bytes.Equal(b[len(prefix):], fresh))
			}
			buf, err = AppendCompress(buf[:0], comp, data)
			if err != nil || !bytes.Equal(buf, fresh) {
				t.Fatalf("%v input %d: reused buffer: err %v, same frame %v", comp, i, err, bytes.Equal(buf, fresh))
			}
			if comp == None && len(data) == 0 {
				continue // an empty file is not a valid stored chunk
			}
			c := chunker.Chunk{ID: chunker.SHA512_256.Sum(data), Size: uint64(len(data))}
			got, err := DecodeChunk(c, chunker.SHA512_256, buf)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%v input %d: decode: err %v, equal %v", comp, i, err, bytes.Equal(got, data))
			}
			if comp == Zstd && i == 4 && len(buf) > len(data)/20 {
				t.Errorf("zstd (%s) left a repetitive %d-byte chunk at %d bytes", ZstdEncoder, len(data), len(buf))
			}
		}
	}
}
