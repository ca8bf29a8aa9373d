package fetch

import (
	"bytes"
	"compress/gzip"
	"fmt"

	"github.com/ulikunitz/xz"
)

// The write side of chunk codecs: what camount make stores.
//
// zstd frames are made at level 3, casync's setting, by the C libzstd (the
// sources bundled in github.com/DataDog/zstd, built through cgo) when cgo is
// available: it is about 1.5x faster than the pure-Go encoder and compresses
// slightly better. Without cgo (CGO_ENABLED=0) the pure-Go
// github.com/klauspost/compress encoder at its default level is used. Both
// write standard frames that casync and every decoder here read.

// ZstdLevel is the zstd level chunks are compressed at (casync's).
const ZstdLevel = 3

// ZstdEncoder names the zstd encoder this build uses: "libzstd" (cgo) or
// "klauspost" (pure Go).
const ZstdEncoder = zstdEncoderName

// Compress encodes a chunk for a store, as casync writes it.
func Compress(c Compression, data []byte) ([]byte, error) {
	return AppendCompress(nil, c, data)
}

// AppendCompress appends the encoding of a chunk to dst and returns the
// extended slice; reusing dst across calls saves an allocation per chunk.
func AppendCompress(dst []byte, c Compression, data []byte) ([]byte, error) {
	switch c {
	case Zstd:
		return zstdAppend(dst, data)
	}
	b, err := compressOther(c, data)
	if err != nil {
		return nil, err
	}
	return append(dst, b...), nil
}

func compressOther(c Compression, data []byte) ([]byte, error) {
	switch c {
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
