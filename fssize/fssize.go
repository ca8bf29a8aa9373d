// Package fssize reads the size a file system claims in its superblock,
// for the file systems casync make probes on a block device (casync's
// src/fssize.c): squashfs, Android boot images, FAT and ext2/3/4. casync
// serialises a block device only up to that size when it is smaller than
// the device, so an index of a partition larger than its file system
// covers the file system alone; camount make does the same, byte for byte.
//
// Other file systems (btrfs, xfs, erofs, …) are not probed by casync, and
// so not here either: their devices are serialised whole, as casync does.
// Regular files are never probed (casync probes block devices only).
package fssize

import (
	"encoding/binary"
	"io"
	"math/bits"
)

// probeSize is how many bytes casync reads: its largest superblock view
// (ext2/3/4's, whose fields end 1082 bytes in).
const probeSize = 1024 + 13*4 + 3*2

const (
	squashfsMagic = 0x73717368
	androidMagic1 = 0x52444e41 // "ANDR"
	androidMagic2 = 0x2144494f // "OID!"
	fatSignature  = 0xaa55
	ext2Magic     = 0xef53
)

var le = binary.LittleEndian

func alignTo(l, a uint64) uint64 { return (l + a - 1) &^ (a - 1) }

// Size returns the size the file system at the start of r claims, and ok
// false when it is none casync recognises (or r is shorter than casync's
// probe). Errors are read errors.
func Size(r io.ReaderAt) (size uint64, ok bool, err error) {
	b := make([]byte, probeSize)
	n, err := r.ReadAt(b, 0)
	if n < probeSize {
		if err == io.EOF || err == nil {
			return 0, false, nil // casync: "don't know such short file systems"
		}
		return 0, false, err
	}
	return Parse(b)
}

// Parse is Size over the first bytes of a device (at least 1082).
func Parse(b []byte) (size uint64, ok bool, err error) {
	if len(b) < probeSize {
		return 0, false, nil
	}
	if le.Uint32(b[0:]) == squashfsMagic {
		return alignTo(le.Uint64(b[40:]), 4096), true, nil
	}
	if le.Uint32(b[0:]) == androidMagic1 && le.Uint32(b[4:]) == androidMagic2 {
		page := uint64(le.Uint32(b[36:]))
		if bits.OnesCount64(page) == 1 {
			s := alignTo(608, page)
			for _, off := range []int{8, 16, 24, 40} { // kernel, initrd, second, dtb sizes
				s += alignTo(uint64(le.Uint32(b[off:])), page)
			}
			return s, true, nil
		}
	}
	if le.Uint16(b[510:]) == fatSignature {
		sector := uint64(le.Uint16(b[11:]))
		if bits.OnesCount64(sector) == 1 {
			l := uint64(le.Uint16(b[19:])) * sector
			if l == 0 {
				l = uint64(le.Uint32(b[32:])) * sector
			}
			if l > 0 {
				return l, true, nil
			}
		}
	}
	if le.Uint16(b[1024+56:]) == ext2Magic {
		shift := 10 + uint64(le.Uint32(b[1024+24:]))
		if shift < 64 {
			return uint64(le.Uint32(b[1024+4:])) << shift, true, nil
		}
	}
	return 0, false, nil
}
