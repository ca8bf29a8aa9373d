package chunker

import (
	"runtime"
	"unsafe"
)

// haveX8: the CPU and OS support the AVX-512 instructions sha512x8 uses
// (AVX512F, AVX512BW) and the OS saves the vector and mask registers.
var haveX8 = func() bool {
	_, _, c1, _ := cpuid(1, 0)
	if c1&(1<<27) == 0 { // OSXSAVE
		return false
	}
	if eax, _ := xgetbv(); eax&0xe6 != 0xe6 { // XMM, YMM, opmask, ZMM state
		return false
	}
	_, b7, _, _ := cpuid(7, 0)
	return b7&(1<<16) != 0 && b7&(1<<30) != 0 // AVX512F, AVX512BW
}()

// haveX4: the CPU and OS support AVX2 (sha512x4), and the OS saves the
// vector registers.
var haveX4 = func() bool {
	_, _, c1, _ := cpuid(1, 0)
	if c1&(1<<27) == 0 { // OSXSAVE
		return false
	}
	if eax, _ := xgetbv(); eax&0x6 != 0x6 { // XMM, YMM state
		return false
	}
	_, b7, _, _ := cpuid(7, 0)
	return b7&(1<<5) != 0 // AVX2
}()

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
