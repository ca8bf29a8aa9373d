//go:build !cgo

package fetch

import (
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

const zstdEncoderName = "klauspost"

var zstdEnc = sync.OnceValue(func() *zstd.Encoder {
	// SpeedDefault is klauspost's equivalent of zstd level 3.
	e, _ := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithEncoderCRC(false))
	return e
})

func zstdAppend(dst, data []byte) ([]byte, error) {
	return zstdEnc().EncodeAll(data, dst), nil
}

// decodeZstd decodes with the pure-Go decoder (builds without cgo).
func decodeZstd(b []byte, want uint64) ([]byte, error) { return decodeZstdGo(b, want) }
