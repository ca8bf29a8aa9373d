//go:build cgo

package fetch

import (
	"bytes"
	"fmt"
	"testing"
)

// With cgo (as `make test` builds), make compresses with libzstd.
func TestZstdEncoderIsLibzstdWithCgo(t *testing.T) {
	if ZstdEncoder != "libzstd" {
		t.Fatalf("zstd encoder %q in a cgo build, want libzstd", ZstdEncoder)
	}
}

// TestDecodeZstdLibzstdMatchesGo: libzstd (cgo builds) and the pure-Go
// decoder agree on which stored bytes decode to exactly the size the index
// gives, and on those bytes: exact frames, a size off by one either way,
// concatenated frames, skippable frames, trailing garbage, truncation.
func TestDecodeZstdLibzstdMatchesGo(t *testing.T) {
	a := bytes.Repeat([]byte("camount "), 9000)
	b := randBytes(70000, 5)
	fa, _ := Compress(Zstd, a)
	fb, _ := Compress(Zstd, b)
	skippable := append([]byte{0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0}, 1, 2, 3, 4)
	cases := []struct {
		name   string
		stored []byte
		want   int
	}{
		{"exact", fa, len(a)},
		{"one short of the frame", fa, len(a) - 1},
		{"one beyond the frame", fa, len(a) + 1},
		{"incompressible", fb, len(b)},
		{"two frames", append(append([]byte(nil), fa...), fb...), len(a) + len(b)},
		{"skippable frame first", append(append([]byte(nil), skippable...), fa...), len(a)},
		{"trailing garbage", append(append([]byte(nil), fa...), "garbage"...), len(a)},
		{"truncated", fa[:len(fa)-3], len(a)},
		{"flipped byte", func() []byte { c := append([]byte(nil), fa...); c[len(c)/2] ^= 0x40; return c }(), len(a)},
	}
	exact := func(out []byte, err error, want int) string {
		if err != nil || len(out) != want {
			return "rejected"
		}
		return fmt.Sprintf("%x", out[:16])
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := decodeZstd(c.stored, uint64(c.want))
			goOut, goErr := decodeZstdGo(c.stored, uint64(c.want))
			lib, gol := exact(out, err, c.want), exact(goOut, goErr, c.want)
			if lib != gol || (lib != "rejected" && !bytes.Equal(out, goOut)) {
				t.Fatalf("libzstd: %s (%v), Go: %s (%v)", lib, err, gol, goErr)
			}
		})
	}
}
