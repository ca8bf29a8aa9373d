//go:build cgo

package fetch

import "testing"

// With cgo (as `make test` builds), make compresses with libzstd.
func TestZstdEncoderIsLibzstdWithCgo(t *testing.T) {
	if ZstdEncoder != "libzstd" {
		t.Fatalf("zstd encoder %q in a cgo build, want libzstd", ZstdEncoder)
	}
}
