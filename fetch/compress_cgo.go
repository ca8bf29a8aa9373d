//go:build cgo

package fetch

import (
	"sync"

	"github.com/DataDog/zstd"
)

const zstdEncoderName = "libzstd"

// zstdCtxs holds libzstd compression contexts (one per concurrent caller;
// a context is not safe for concurrent use, and reusing one saves setting
// up its tables for every chunk).
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
