//go:build !amd64

package chunker

var haveX8, haveX4 = false, false

func sha512x4(h *uint64, ptrs *uint64, nblocks int, w *uint64) {
	panic("unreachable")
}

func sha512x8(h *[8][lanes]uint64, ptrs *[lanes]uint64, nblocks int, w *[80][lanes]uint64) {
	panic("unreachable")
}

func uintptrOf(b []byte) uintptr { return 0 }

func keepAlive(x any) {}
