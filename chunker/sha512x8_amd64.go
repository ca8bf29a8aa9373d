package chunker

import (
	"runtime"
	"unsafe"
)

// haveX8: the CPU and OS support the AVX-512 instructions sha512x8 uses
// (AVX512F, AVX512BW) and the OS saves the vector and mask registers.
// haveX4: the same for AVX2 (sha512x4) and the vector registers.
var haveX8, haveX4 = vectorSupport()

func vectorSupport() (x8, x4 bool) {
	_, _, c1, _ := cpuid(1, 0)
	if c1&(1<<27) == 0 { // OSXSAVE
		return false, false
	}
	_, b7, _, _ := cpuid(7, 0)
	state, _ := xgetbv()
	x8 = state&0xe6 == 0xe6 && b7&(1<<16) != 0 && b7&(1<<30) != 0 // XMM, YMM, opmask, ZMM state; AVX512F, AVX512BW
	x4 = state&0x6 == 0x6 && b7&(1<<5) != 0                       // XMM, YMM state; AVX2
	return x8, x4
}

// sha512x4 is sha512x8 for four lanes with AVX2: h, ptrs and w point at
// the first of the four lanes of rows of eight (64 bytes a row).
//
//go:noescape
func sha512x4(h *uint64, ptrs *uint64, nblocks int, w *uint64)

//go:noescape
func sha512x8(h *[8][lanes]uint64, ptrs *[lanes]uint64, nblocks int, w *[80][lanes]uint64)

func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
func xgetbv() (eax, edx uint32)

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

func keepAlive(x any) { runtime.KeepAlive(x) }
