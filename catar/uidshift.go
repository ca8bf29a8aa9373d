package catar

import (
	"fmt"
	"strconv"
	"strings"
)

// UIDShift maps owners between a file system and an archive, as casync's
// --uid-shift and --uid-range do, for trees of user namespaces: make
// stores (id − Shift) mod Range, extract and mount give (id mod Range) +
// Shift. A nil *UIDShift maps nothing.
type UIDShift struct {
	Shift uint32
	// Range is the number of ids of the namespace, 1..2^32; 0 means 2^32
	// (no modulo). casync's default, with a shift given, is 65536.
	Range uint64
}

// DefaultUIDRange is casync's --uid-range when only --uid-shift is given.
const DefaultUIDRange = 0x10000

func validID(id uint32) bool { return id != 0xFFFFFFFF && id != 0xFFFF }

// ToArchive maps a file system id to the archive's; ok is false for an id
// below Shift or one casync calls invalid (2^32−1, 2^16−1).
func (s *UIDShift) ToArchive(id uint32) (uint32, bool) {
	if s == nil {
		return id, true
	}
	if !validID(id) || id < s.Shift {
		return 0, false
	}
	r := uint64(id - s.Shift)
	if s.Range != 0 {
		r %= s.Range
	}
	return uint32(r), true
}

// FromArchive maps an archive's id to the file system's; ok is false when
// the result overflows 32 bits or the id is invalid.
func (s *UIDShift) FromArchive(id uint32) (uint32, bool) {
	if s == nil {
		return id, true
	}
	if !validID(id) {
		return 0, false
	}
	r := uint64(id)
	if s.Range != 0 {
		r %= s.Range
	}
	r += uint64(s.Shift)
	if r > 0xFFFFFFFF {
		return 0, false
	}
	return uint32(r), true
}

// ParseUIDShift parses casync's --uid-shift and --uid-range values (""
// when not given): a shift is a uid or a boolean (yes: shift 0), a range
// 1..2^32 or a boolean. It returns nil when neither applies a shift.
func ParseUIDShift(shift, rng string) (*UIDShift, error) {
	apply := false
	s := &UIDShift{Range: DefaultUIDRange}
	if shift != "" {
		if v, err := strconv.ParseUint(shift, 10, 32); err == nil && validID(uint32(v)) {
			s.Shift, apply = uint32(v), true
		} else if b, ok := parseBool(shift); ok {
			apply = b
		} else {
			return nil, fmt.Errorf("--uid-shift=%s: want a uid or yes/no", shift)
		}
	}
	if rng != "" {
		if v, err := strconv.ParseUint(rng, 10, 64); err == nil && v >= 1 && v <= 1<<32 {
			s.Range, apply = v%(1<<32), true
		} else if b, ok := parseBool(rng); ok {
			apply = b
		} else {
			return nil, fmt.Errorf("--uid-range=%s: want 1..4294967296 or yes/no", rng)
		}
	}
	if !apply {
		return nil, nil
	}
	return s, nil
}

// parseBool accepts casync's (systemd's) boolean spellings.
func parseBool(v string) (bool, bool) {
	switch strings.ToLower(v) {
	case "1", "yes", "y", "true", "t", "on":
		return true, true
	case "0", "no", "n", "false", "f", "off":
		return false, true
	}
	return false, false
}
