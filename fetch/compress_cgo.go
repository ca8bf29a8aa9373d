//go:build cgo

package fetch

import (
	"fmt"
	"sync"

	"github.com/DataDog/zstd"
)

const zstdEncoderName = "libzstd"

// zstdCtxs holds libzstd contexts (one per concurrent caller; a context
// is not safe for concurrent use, and reusing one saves setting up its
// tables for every chunk), for compressing and decompressing.
var zstdCtxs = sync.Pool{New: func() any { return zstd.NewCtx() }}

func zstdAppend(dst, data []byte) ([]byte, error) {
	n := len(dst)
	if bound := zstd.CompressBound(len(data)); cap(dst)-n < bound {
		grown := make([]byte, n, n+bound)
		copy(grown, dst)
		dst = grown
	}
	c := zstdCtxs.Get().(zstd.Ctx)
	out, err := c.CompressLevel(dst[n:cap(dst)], data, ZstdLevel)
	zstdCtxs.Put(c)
	if err != nil {
		return nil, err
	}
	return dst[:n+len(out)], nil
}

// decodeZstd decodes stored zstd frames that the index says hold want
// bytes with libzstd, straight into a buffer of exactly want bytes: no
// scratch buffer and no copy (cold cat of the corpus's disk image: 12%
// faster than the pure-Go decoder's scratch-and-copy). Frames that decode
// to more than want fail (the buffer is full); fewer leave a short result,
// which DecodeChunk rejects. libzstd is casync's own decoder.
func decodeZstd(b []byte, want uint64) ([]byte, error) {
	if want == 0 {
		return decodeZstdGo(b, want)
	}
	out := make([]byte, want)
	c := zstdCtxs.Get().(zstd.Ctx)
	n, err := c.DecompressInto(out, b)
	zstdCtxs.Put(c)
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	return out[:n], nil
}
