package fetch

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// The write side of chunk codecs: what camount make stores.

var (
	zstdEncOnce sync.Once
	zstdEnc     *zstd.Encoder
)

func zstdEncoder() *zstd.Encoder {
	zstdEncOnce.Do(func() {
		zstdEnc, _ = zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithEncoderCRC(false))
	})
	return zstdEnc
}

// Compress encodes a chunk for a store, as casync writes it.
func Compress(c Compression, data []byte) ([]byte, error) {
	switch c {
	case Zstd:
		return zstdEncoder().EncodeAll(data, make([]byte, 0, len(data)/2+64)), nil
	case XZ:
		var buf bytes.Buffer
		w, err := xz.WriterConfig{CheckSum: xz.CRC64}.NewWriter(&buf)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(data); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	case Gzip:
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(data)
		if err := w.Close(); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	case None:
		return data, nil
	}
	return nil, fmt.Errorf("unknown compression %d", c)
}
