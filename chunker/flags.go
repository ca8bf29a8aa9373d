package chunker

import "fmt"

// Feature flag bits that matter to the index codec (FORMAT.md §6).
const (
	flagFeatureMax     uint64 = 0xf0000001ffffffff
	flag16BitUIDs      uint64 = 0x1
	flag32BitUIDs      uint64 = 0x2
	flagUserNames      uint64 = 0x4
	flagSecTime        uint64 = 0x8
	flagUsecTime       uint64 = 0x10
	flagNsecTime       uint64 = 0x20
	flag2SecTime       uint64 = 0x40
	flagReadOnly       uint64 = 0x80
	flagPermissions    uint64 = 0x100
	flagFlagNodump     uint64 = 0x100000
	flagSubvolume      uint64 = 0x4000000
	flagSubvolumeRO    uint64 = 0x8000000
	flagACL            uint64 = 0x20000000
	FlagExcludeFile    uint64 = 0x1000000000000000
	FlagExcludeNodump  uint64 = 0x8000000000000000
	FlagExcludeSubmnts uint64 = 0x4000000000000000
)

// NormalizeFlags applies casync's normalization rules (FORMAT.md §6.3),
// for index files here and for archives through catar.Normalize.
func NormalizeFlags(f uint64) uint64 {
	if f&flagACL != 0 && f&(flag16BitUIDs|flag32BitUIDs|flagUserNames) == 0 {
		f |= flag32BitUIDs | flagUserNames
	}
	if f&flag32BitUIDs != 0 {
		f &^= flag16BitUIDs
	}
	switch {
	case f&flagNsecTime != 0:
		f &^= flagUsecTime | flagSecTime | flag2SecTime
	case f&flagUsecTime != 0:
		f &^= flagSecTime | flag2SecTime
	case f&flagSecTime != 0:
		f &^= flag2SecTime
	}
	if f&flagACL != 0 {
		f &^= flagPermissions | flagReadOnly
	}
	if f&flagPermissions != 0 {
		f &^= flagReadOnly
	}
	if f&FlagExcludeNodump != 0 {
		f &^= flagFlagNodump
	}
	if f&flagSubvolumeRO != 0 {
		f |= flagSubvolume
	}
	return f
}

// CheckFlags reports unknown or non-normalized feature flags, as casync's
// readers do.
func CheckFlags(f uint64) error {
	if f == ^uint64(0) || f&^flagFeatureMax != 0 {
		return fmt.Errorf("unknown feature flags %#x", f&^flagFeatureMax)
	}
	if n := NormalizeFlags(f); n != f {
		return fmt.Errorf("feature flags %#x are not normalized (want %#x)", f, n)
	}
	return nil
}
