package fetch

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/camount/camount/chunker"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Compression is a chunk compression format of casync stores.
type Compression int

const (
	Zstd Compression = iota // casync's default
	XZ
	Gzip
	None // uncompressed chunk files (no .cacnk suffix); casync reads but never writes them
)

func (c Compression) String() string {
	switch c {
	case Zstd:
		return "zstd"
	case XZ:
		return "xz"
	case Gzip:
		return "gzip"
	}
	return "none"
}

// ParseCompression parses --compression values.
func ParseCompression(s string) (Compression, error) {
	switch s {
	case "zstd", "":
		return Zstd, nil
	case "xz":
		return XZ, nil
	case "gzip":
		return Gzip, nil
	}
	return 0, fmt.Errorf("unknown compression %q (want zstd, xz or gzip)", s)
}

// MaxChunkSize bounds decompressed and compressed chunk sizes, as casync does.
const MaxChunkSize = chunker.MaxChunkSizeLimit

var (
	magicXZ   = []byte{0xfd, '7', 'z', 'X', 'Z', 0}
	magicGzip = []byte{0x1f, 0x8b}
	magicZstd = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// detect returns the compression of stored bytes from their magic, testing
// xz, gzip, zstd in casync's order; None when no magic matches.
func detect(b []byte) Compression {
	switch {
	case bytes.HasPrefix(b, magicXZ):
		return XZ
	case bytes.HasPrefix(b, magicGzip):
		return Gzip
	case bytes.HasPrefix(b, magicZstd):
		return Zstd
	}
	return None
}

var (
	zstdDecOnce sync.Once
	zstdDec     *zstd.Decoder
)

func zstdDecoder() *zstd.Decoder {
	zstdDecOnce.Do(func() {
		zstdDec, _ = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithDecoderMaxMemory(MaxChunkSize),
			zstd.WithDecoderMaxWindow(MaxChunkSize))
	})
	return zstdDec
}

var errTrailing = errors.New("bytes after the end of the compressed stream")

// zstdSlack is the room past the end of the output that klauspost's
// DecodeAll needs to take its assembly fast path: casync's frames do not
// record their content size, so unless a whole block (at most 128 KiB)
// plus 16 bytes fit after what is decoded so far, it runs the generic Go
// sequence decoder, which is about half as fast.
const zstdSlack = 128<<10 + 16

// zstdScratchMax bounds the chunk sizes decoded through a pooled scratch
// buffer (and the buffers kept in the pool); larger chunks are rare and
// decode into a buffer of their own.
const zstdScratchMax = 4 << 20

var zstdScratch sync.Pool // *[]byte, cap >= len + zstdSlack of a recent chunk

// decodeZstdGo decodes a zstd frame of want bytes with the pure-Go
// decoder into a fresh slice of exactly want bytes' capacity (rounded to
// the allocator's size class): it decodes into a pooled scratch buffer with
// zstdSlack room, then copies out, which is cheaper than decoding into an
// exact-size buffer. Builds with cgo decode with libzstd instead
// (decodeZstd in compress_cgo.go), straight into the result.
func decodeZstdGo(b []byte, want uint64) ([]byte, error) {
	if want > zstdScratchMax {
		out, err := zstdDecoder().DecodeAll(b, make([]byte, 0, want))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return out, nil
	}
	need := int(want) + zstdSlack
	bp, _ := zstdScratch.Get().(*[]byte)
	if bp == nil || cap(*bp) < need {
		s := make([]byte, 0, max(need, 256<<10+zstdSlack))
		bp = &s
	}
	defer zstdScratch.Put(bp)
	// A frame that decodes to more than the scratch holds grows a new
	// buffer (bounded by WithDecoderMaxMemory); the pool keeps the old one.
	out, err := zstdDecoder().DecodeAll(b, (*bp)[:0])
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	// append to nil copies without zeroing the new slice first.
	return append([]byte(nil), out...), nil
}

// decompress decodes stored bytes of a known compression into a buffer of
// capacity want (the size the index gives the chunk).
func decompress(c Compression, b []byte, want uint64) ([]byte, error) {
	switch c {
	case Zstd:
		return decodeZstd(b, want)
	case XZ:
		r, err := xz.ReaderConfig{SingleStream: true}.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return readBounded(r, want, "xz")
	case Gzip:
		br := bytes.NewReader(b)
		r, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		r.Multistream(false)
		out, err := readBounded(r, want, "gzip")
		if err == nil && br.Len() > 0 {
			err = fmt.Errorf("gzip: %w", errTrailing)
		}
		return out, err
	}
	return b, nil
}

// readBounded reads a decompressor to its end, refusing more than want bytes.
func readBounded(r io.Reader, want uint64, name string) ([]byte, error) {
	out := make([]byte, 0, want)
	buf := bytes.NewBuffer(out)
	n, err := io.Copy(buf, io.LimitReader(r, int64(want)+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if uint64(n) > want {
		return nil, fmt.Errorf("%s: decompresses to more than %d bytes", name, want)
	}
	return buf.Bytes(), nil
}

// DecodeChunk turns stored bytes into the verified chunk: it decompresses by
// magic (or takes the bytes as raw), checks the size the index gives, and
// checks the digest. Any failure is a *CorruptChunkError; the returned bytes
// are always exactly the chunk.
func DecodeChunk(c chunker.Chunk, d chunker.Digest, stored []byte) ([]byte, error) {
	data, comp, err := unpack(c, stored)
	var sum chunker.ID
	if err == nil {
		sum = d.Sum(data)
	}
	return settle(c, d, stored, comp, data, sum, err)
}

// DecodeChunks decodes and verifies several chunks at once, as DecodeChunk
// does each, hashing them side by side (chunker.SumBatch) where that is
// faster. out[i] and errs[i] are chunk i's result.
func DecodeChunks(cs []chunker.Chunk, d chunker.Digest, stored [][]byte) (out [][]byte, errs []error) {
	out = make([][]byte, len(cs))
	errs = make([]error, len(cs))
	comps := make([]Compression, len(cs))
	hash := make([][]byte, len(cs)) // what unpacked; nil (nothing to hash) for the rest
	for i, c := range cs {
		out[i], comps[i], errs[i] = unpack(c, stored[i])
		if errs[i] == nil {
			hash[i] = out[i]
		}
	}
	sums := make([]chunker.ID, len(cs))
	d.SumBatch(sums, hash)
	for i, c := range cs {
		out[i], errs[i] = settle(c, d, stored[i], comps[i], out[i], sums[i], errs[i])
	}
	return out, errs
}

// unpack decompresses stored bytes and checks their size against the
// index; the digest is left to settle.
func unpack(c chunker.Chunk, stored []byte) ([]byte, Compression, error) {
	if len(stored) == 0 {
		return nil, None, errors.New("empty chunk file")
	}
	if len(stored) > MaxChunkSize {
		return nil, None, fmt.Errorf("stored size %d exceeds %d", len(stored), MaxChunkSize)
	}
	comp := detect(stored)
	if comp == None && uint64(len(stored)) != c.Size {
		// No compression magic and not the chunk's size: something else
		// (an HTML error page served with 200, a truncated file).
		return nil, None, fmt.Errorf("not a chunk: %d bytes with no zstd, xz or gzip magic, where the chunk has %d (starts %q)", len(stored), c.Size, preview(stored))
	}
	data, err := decompress(comp, stored, c.Size)
	if err == nil && uint64(len(data)) != c.Size {
		err = fmt.Errorf("decompressed to %d bytes, the index says %d", len(data), c.Size)
	}
	return data, comp, err
}

// preview is the start of some bytes, for an error message.
func preview(b []byte) string {
	if len(b) > 24 {
		return string(b[:24]) + "…"
	}
	return string(b)
}

// settle checks the digest sum of unpacked data against the chunk ID and
// turns any failure into a *CorruptChunkError, unless the stored bytes
// are themselves the chunk (stored uncompressed, starting with a magic).
func settle(c chunker.Chunk, d chunker.Digest, stored []byte, comp Compression, data []byte, sum chunker.ID, err error) ([]byte, error) {
	if err == nil && sum != c.ID {
		err = errors.New("digest mismatch")
	}
	if err != nil && comp != None && uint64(len(stored)) == c.Size && d.Sum(stored) == c.ID {
		// An uncompressed chunk that happens to start with a magic.
		return stored, nil
	}
	if err != nil {
		return nil, &CorruptChunkError{ID: c.ID, Err: err}
	}
	return data, nil
}
