// Package catar reads and writes casync's catar archive format: an encoder
// that serialises a directory tree byte-for-byte as casync does, a streaming
// decoder, and random access over an io.ReaderAt through the goodbye tables.
// It depends on the standard library and package chunker (for the
// feature-flag rules) only.
//
// All integers in the format are little-endian uint64; records are packed
// without padding; every record starts with {le64 size, le64 type}.
package catar

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/camount/camount/chunker"
)

// Record types (FORMAT.md §4.1).
const (
	TypeEntry           uint64 = 0x1396fabcea5bbb51
	TypeUser            uint64 = 0xf453131aaeeaccb3
	TypeGroup           uint64 = 0x25eb6ac969396a52
	TypeXattr           uint64 = 0xb8157091f80bc486
	TypeACLUser         uint64 = 0x297dc88b2ef12faf
	TypeACLGroup        uint64 = 0x36f2acb56cb3dd0b
	TypeACLGroupObj     uint64 = 0x23047110441f38f3
	TypeACLDefault      uint64 = 0xfe3eeda6823c8cd0
	TypeACLDefaultUser  uint64 = 0xbdf03df9bd010a91
	TypeACLDefaultGroup uint64 = 0xa0cb1168782d1f51
	TypeFCaps           uint64 = 0xf7267db0afed0629
	TypeQuotaProjID     uint64 = 0x161baf2d8772a72b
	TypeSELinux         uint64 = 0x46faf0602fd26c59
	TypeSymlink         uint64 = 0x664a6fb6830e0d6c
	TypeDevice          uint64 = 0xac3dace369dfe643
	TypePayload         uint64 = 0x8b9e1d93d6dcffc9
	TypeFilename        uint64 = 0x6dbb6ebcb3161f0b
	TypeGoodbye         uint64 = 0xdfd35c5e8327c403
	GoodbyeTailMarker   uint64 = 0x57446fa533702943
)

const (
	headerSize      = 16
	entrySize       = 64
	goodbyeItemSize = 24
	maxDepth        = 64 // casync handles root + 63 levels
)

// Feature flags (FORMAT.md §6.1).
const (
	With16BitUIDs       uint64 = 0x1
	With32BitUIDs       uint64 = 0x2
	WithUserNames       uint64 = 0x4
	WithSecTime         uint64 = 0x8
	WithUsecTime        uint64 = 0x10
	WithNsecTime        uint64 = 0x20
	With2SecTime        uint64 = 0x40
	WithReadOnly        uint64 = 0x80
	WithPermissions     uint64 = 0x100
	WithSymlinks        uint64 = 0x200
	WithDeviceNodes     uint64 = 0x400
	WithFIFOs           uint64 = 0x800
	WithSockets         uint64 = 0x1000
	WithFlagHidden      uint64 = 0x2000
	WithFlagSystem      uint64 = 0x4000
	WithFlagArchive     uint64 = 0x8000
	WithFlagAppend      uint64 = 0x10000
	WithFlagNoatime     uint64 = 0x20000
	WithFlagCompr       uint64 = 0x40000
	WithFlagNocow       uint64 = 0x80000
	WithFlagNodump      uint64 = 0x100000
	WithFlagDirsync     uint64 = 0x200000
	WithFlagImmutable   uint64 = 0x400000
	WithFlagSync        uint64 = 0x800000
	WithFlagNocomp      uint64 = 0x1000000
	WithFlagProjinherit uint64 = 0x2000000
	WithSubvolume       uint64 = 0x4000000
	WithSubvolumeRO     uint64 = 0x8000000
	WithXattrs          uint64 = 0x10000000
	WithACL             uint64 = 0x20000000
	WithSELinux         uint64 = 0x40000000
	WithFCaps           uint64 = 0x80000000
	WithQuotaProjID     uint64 = 0x100000000
	ExcludeFile         uint64 = 0x1000000000000000
	SHA512_256          uint64 = 0x2000000000000000
	ExcludeSubmounts    uint64 = 0x4000000000000000
	ExcludeNodump       uint64 = 0x8000000000000000
	FeatureFlagsMax     uint64 = 0xf0000001ffffffff
	WithMask            uint64 = 0x00000001ffffffff
	WithBest            uint64 = 0x00000001fffffe26
	WithUnix            uint64 = 0x0000000000001f09
	WithFat             uint64 = 0x000000000000e0c0
	WithChattr          uint64 = 0x0000000003ff0000
	WithFatAttrs        uint64 = 0x000000000000e000
	WithPrivileged      uint64 = 0x00000001ec414407
	WithFuse            uint64 = 0x0000000013fffffb
	withUIDs                   = With16BitUIDs | With32BitUIDs
	withTimes                  = WithNsecTime | WithUsecTime | WithSecTime | With2SecTime
	flagsPerFile               = WithFatAttrs | WithChattr | WithSubvolume | WithSubvolumeRO
	DefaultFeatures            = 0xb0000001ffeffe26 // casync make's default for trees
	DefaultExcludeSHA          = ExcludeNodump | ExcludeFile | SHA512_256
)

// FeatureNames lists the --with/--without names in casync's order; the last
// eight are sets.
var FeatureNames = []struct {
	Name  string
	Value uint64
}{
	{"16bit-uids", With16BitUIDs}, {"32bit-uids", With32BitUIDs}, {"user-names", WithUserNames},
	{"sec-time", WithSecTime}, {"usec-time", WithUsecTime}, {"nsec-time", WithNsecTime},
	{"2sec-time", With2SecTime}, {"read-only", WithReadOnly}, {"permissions", WithPermissions},
	{"symlinks", WithSymlinks}, {"device-nodes", WithDeviceNodes}, {"fifos", WithFIFOs},
	{"sockets", WithSockets}, {"flag-hidden", WithFlagHidden}, {"flag-system", WithFlagSystem},
	{"flag-archive", WithFlagArchive}, {"flag-append", WithFlagAppend}, {"flag-noatime", WithFlagNoatime},
	{"flag-compr", WithFlagCompr}, {"flag-nocow", WithFlagNocow}, {"flag-nodump", WithFlagNodump},
	{"flag-dirsync", WithFlagDirsync}, {"flag-immutable", WithFlagImmutable}, {"flag-sync", WithFlagSync},
	{"flag-nocomp", WithFlagNocomp}, {"flag-projinherit", WithFlagProjinherit}, {"subvolume", WithSubvolume},
	{"subvolume-ro", WithSubvolumeRO}, {"xattrs", WithXattrs}, {"acl", WithACL}, {"selinux", WithSELinux},
	{"fcaps", WithFCaps}, {"quota-projid", WithQuotaProjID},
	{"best", WithBest}, {"unix", WithUnix}, {"fat", WithFat}, {"chattr", WithChattr},
	{"fat-attrs", WithFatAttrs}, {"privileged", WithPrivileged}, {"fuse", WithFuse}, {"all", WithMask},
}

// ParseFeature returns the bits of one --with/--without name (a single
// feature or a set).
func ParseFeature(name string) (uint64, error) {
	for _, f := range FeatureNames {
		if f.Name == name {
			return f.Value, nil
		}
	}
	names := make([]string, len(FeatureNames))
	for i, f := range FeatureNames {
		names[i] = f.Name
	}
	return 0, fmt.Errorf("unknown feature %q (known: %s)", name, strings.Join(names, ", "))
}

// ParseFeatureList parses names separated by commas or spaces and ORs them.
func ParseFeatureList(list []string) (uint64, error) {
	var v uint64
	for _, s := range list {
		for _, n := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
			b, err := ParseFeature(n)
			if err != nil {
				return 0, err
			}
			v |= b
		}
	}
	return v, nil
}

// FormatFeatures names the WITH bits of flags, sets not expanded.
func FormatFeatures(flags uint64) string {
	var out []string
	for _, f := range FeatureNames[:33] {
		if flags&f.Value != 0 {
			out = append(out, f.Name)
		}
	}
	return strings.Join(out, " ")
}

// ErrUnsupportedFeatures reports feature-flag bits outside FeatureFlagsMax.
var ErrUnsupportedFeatures = errors.New("unknown feature flag bits")

// Normalize rejects bits outside FeatureFlagsMax, then drops redundant bits
// as casync does (FORMAT.md §6.3) by chunker.NormalizeFlags, so archives
// and index files follow one set of rules.
func Normalize(flags uint64) (uint64, error) {
	if flags == ^uint64(0) {
		return 0, fmt.Errorf("feature flags 0x%x: %w", flags, ErrUnsupportedFeatures)
	}
	if flags&^FeatureFlagsMax != 0 {
		return 0, fmt.Errorf("feature flags 0x%x: %w", flags, ErrUnsupportedFeatures)
	}
	return chunker.NormalizeFlags(flags), nil
}

// IsNormalized reports whether flags are what a writer must store.
func IsNormalized(flags uint64) bool {
	n, err := Normalize(flags)
	return err == nil && n == flags
}

// TreeFeatures composes the flags casync make uses for a tree:
// (with, or all when with is 0) &^ without, plus the exclude and digest bits,
// normalized. sha256 selects SHA-256 instead of SHA-512/256.
func TreeFeatures(with, without uint64, sha256 bool) (uint64, error) {
	return ComposeFeatures(with, without, DefaultExcludeSHA&^SHA512_256, sha256)
}

// ComposeFeatures is TreeFeatures with the EXCLUDE_* bits given explicitly
// (any of ExcludeNodump, ExcludeSubmounts, ExcludeFile).
func ComposeFeatures(with, without, exclude uint64, sha256 bool) (uint64, error) {
	if with == 0 {
		with = WithMask
	}
	f := with &^ without
	f |= exclude & (ExcludeNodump | ExcludeSubmounts | ExcludeFile)
	if !sha256 {
		f |= SHA512_256
	}
	return Normalize(f)
}

// Granularity returns the mtime granularity in ns for flags, or 0 when no
// time is stored.
func Granularity(flags uint64) uint64 {
	switch {
	case flags&WithNsecTime != 0:
		return 1
	case flags&WithUsecTime != 0:
		return 1000
	case flags&WithSecTime != 0:
		return 1000000000
	case flags&With2SecTime != 0:
		return 2000000000
	}
	return 0
}

// chattr (FS_IOC_GETFLAGS) bits and their feature-flag equivalents.
var chattrMap = []struct{ chattr, flag uint64 }{
	{0x20, WithFlagAppend}, {0x80, WithFlagNoatime}, {0x4, WithFlagCompr}, {0x800000, WithFlagNocow},
	{0x40, WithFlagNodump}, {0x10000, WithFlagDirsync}, {0x10, WithFlagImmutable}, {0x8, WithFlagSync},
	{0x400, WithFlagNocomp}, {0x20000000, WithFlagProjinherit},
}

// FAT attribute bits and their feature-flag equivalents.
var fatMap = []struct{ fat, flag uint64 }{
	{0x02, WithFlagHidden}, {0x04, WithFlagSystem}, {0x20, WithFlagArchive},
}

// FlagsFromChattr maps FS_IOC_GETFLAGS bits to feature-flag bits.
func FlagsFromChattr(c uint64) uint64 {
	var f uint64
	for _, m := range chattrMap {
		if c&m.chattr != 0 {
			f |= m.flag
		}
	}
	return f
}

// ChattrFromFlags maps feature-flag bits back to FS_IOC_GETFLAGS bits.
func ChattrFromFlags(f uint64) uint64 {
	var c uint64
	for _, m := range chattrMap {
		if f&m.flag != 0 {
			c |= m.chattr
		}
	}
	return c
}

// FatAttrsFromFlags maps feature-flag bits to FAT attribute bits.
func FatAttrsFromFlags(f uint64) uint64 {
	var c uint64
	for _, m := range fatMap {
		if f&m.flag != 0 {
			c |= m.fat
		}
	}
	return c
}

var le = binary.LittleEndian

// Unix file type bits as stored in ENTRY.mode.
const (
	ModeType   = 0170000
	ModeSock   = 0140000
	ModeLink   = 0120000
	ModeReg    = 0100000
	ModeBlock  = 0060000
	ModeDir    = 0040000
	ModeChar   = 0020000
	ModeFIFO   = 0010000
	ModePerm   = 07777
	maxUID16   = 65535
	maxSymlink = 4096
)

func recordName(t uint64) string {
	switch t {
	case TypeEntry:
		return "ENTRY"
	case TypeUser:
		return "USER"
	case TypeGroup:
		return "GROUP"
	case TypeXattr:
		return "XATTR"
	case TypeACLUser:
		return "ACL_USER"
	case TypeACLGroup:
		return "ACL_GROUP"
	case TypeACLGroupObj:
		return "ACL_GROUP_OBJ"
	case TypeACLDefault:
		return "ACL_DEFAULT"
	case TypeACLDefaultUser:
		return "ACL_DEFAULT_USER"
	case TypeACLDefaultGroup:
		return "ACL_DEFAULT_GROUP"
	case TypeFCaps:
		return "FCAPS"
	case TypeQuotaProjID:
		return "QUOTA_PROJID"
	case TypeSELinux:
		return "SELINUX"
	case TypeSymlink:
		return "SYMLINK"
	case TypeDevice:
		return "DEVICE"
	case TypePayload:
		return "PAYLOAD"
	case TypeFilename:
		return "FILENAME"
	case TypeGoodbye:
		return "GOODBYE"
	}
	return fmt.Sprintf("unknown(0x%016x)", t)
}
