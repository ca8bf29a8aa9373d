package catar

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strings"
)

// ErrFormat is wrapped by every error about malformed archive bytes.
var ErrFormat = errors.New("malformed catar archive")

// FormatError describes malformed archive bytes at an archive offset.
type FormatError struct {
	Offset int64  // archive offset of the offending record
	Msg    string // what is wrong
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("catar: at offset %d: %s", e.Offset, e.Msg)
}

// Unwrap makes errors.Is(err, ErrFormat) true.
func (e *FormatError) Unwrap() error { return ErrFormat }

func formatErr(off int64, format string, a ...any) error {
	return &FormatError{Offset: off, Msg: fmt.Sprintf(format, a...)}
}

// Xattr is one extended attribute (user.* or trusted.*).
type Xattr struct {
	Name  string
	Value []byte
}

// ACLEntry is a named ACL entry. ID is 0 unless the archive stores
// numeric ids; Name is empty unless it stores user names.
type ACLEntry struct {
	ID   uint64
	Name string
	Perm uint64 // 4 read, 2 write, 1 execute
}

// ACL is the POSIX ACL of an entry, as stored (FORMAT.md §4.1).
type ACL struct {
	User, Group []ACLEntry
	// GroupObj is the owning group's permissions; valid when HasGroupObj
	// (only stored when the access ACL has a mask, which then is in the mode's
	// group bits).
	GroupObj    uint64
	HasGroupObj bool
	// Default is the default ACL of a directory, or nil.
	Default                   *ACLDefault
	DefaultUser, DefaultGroup []ACLEntry
}

// ACLDefault is the ACL_DEFAULT record. Mask is NoMask when there is none.
type ACLDefault struct{ UserObj, GroupObj, Other, Mask uint64 }

// NoMask is the ACL_DEFAULT mask value meaning "no mask".
const NoMask = ^uint64(0)

// Entry is one node of an archive: its metadata and where its parts lie in
// the archive. Offsets are archive offsets; Offset is unique per node and
// stable, so it can serve as an inode number.
type Entry struct {
	Name string // file name; "" for the root
	Path string // slash-separated path from the root; "" for the root

	Offset     int64 // ENTRY record
	NameOffset int64 // FILENAME record, -1 for the root
	End        int64 // end of the node's serialization (after a directory's GOODBYE); 0 if unknown

	Features uint64 // archive feature flags (the same in every entry)
	Mode     uint32 // S_IFMT | permission bits, as stored
	Flags    uint64 // chattr/FAT/subvolume bits, as feature-flag values
	UID, GID uint64
	User     string // from USER; "" when absent
	Group    string // from GROUP
	MTime    uint64 // ns since the epoch (two's complement for times before 1970)

	Xattrs  []Xattr // sorted by name
	ACL     *ACL    // nil when no ACL record
	FCaps   []byte  // raw security.capability value, or nil
	SELinux string
	ProjID  uint64

	Size          int64  // regular file: payload size
	PayloadOffset int64  // regular file: archive offset of the first payload byte
	Target        string // symlink target
	DevMajor      uint64 // block/char device
	DevMinor      uint64

	metaEnd int64 // offset of the body record (PAYLOAD/SYMLINK/DEVICE/FILENAME/GOODBYE) or of what follows
	depth   int   // Archive: directories above the entry (0 for the root)
}

// Type returns the S_IFMT bits of the mode.
func (e *Entry) Type() uint32 { return e.Mode & ModeType }

// IsDir reports whether e is a directory.
func (e *Entry) IsDir() bool { return e.Type() == ModeDir }

// IsRegular reports whether e is a regular file.
func (e *Entry) IsRegular() bool { return e.Type() == ModeReg }

// FileMode converts the stored mode into an io/fs.FileMode.
func (e *Entry) FileMode() fs.FileMode {
	m := fs.FileMode(e.Mode & 0777)
	switch e.Type() {
	case ModeDir:
		m |= fs.ModeDir
	case ModeLink:
		m |= fs.ModeSymlink
	case ModeBlock:
		m |= fs.ModeDevice
	case ModeChar:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case ModeFIFO:
		m |= fs.ModeNamedPipe
	case ModeSock:
		m |= fs.ModeSocket
	}
	if e.Mode&04000 != 0 {
		m |= fs.ModeSetuid
	}
	if e.Mode&02000 != 0 {
		m |= fs.ModeSetgid
	}
	if e.Mode&01000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// Rdev returns the Linux dev_t encoding of a device entry's numbers.
func (e *Entry) Rdev() uint64 {
	ma, mi := e.DevMajor, e.DevMinor
	return (mi & 0xff) | ((ma & 0xfff) << 8) | ((mi &^ 0xff) << 12) | ((ma &^ 0xfff) << 32)
}

// Xattr returns the value of the named extended attribute.
func (e *Entry) Xattr(name string) ([]byte, bool) {
	for _, x := range e.Xattrs {
		if x.Name == name {
			return x.Value, true
		}
	}
	return nil, false
}

// HasUID reports whether the archive stores numeric uids/gids.
func (e *Entry) HasUID() bool { return e.Features&withUIDs != 0 }

// HasMTime reports whether the archive stores modification times.
func (e *Entry) HasMTime() bool { return e.Features&withTimes != 0 }

// Maximum record sizes per type (FORMAT.md §4.7).
func maxRecordSize(t uint64) uint64 {
	switch t {
	case TypeEntry:
		return entrySize
	case TypeUser, TypeGroup:
		return 272
	case TypeXattr:
		return 65808
	case TypeACLUser, TypeACLGroup, TypeACLDefaultUser, TypeACLDefaultGroup:
		return 288
	case TypeACLGroupObj, TypeQuotaProjID:
		return 24
	case TypeACLDefault:
		return 48
	case TypeFCaps:
		return 65552
	case TypeSELinux, TypeSymlink:
		return 4112
	case TypeDevice:
		return 32
	case TypeFilename:
		return 16 + 4096 + 1
	case TypeGoodbye:
		return 16 + 24*(1<<24)
	case TypePayload:
		return 1<<63 - 1
	}
	return 0
}

// metaStage orders the metadata records after ENTRY (FORMAT.md §4.2).
func metaStage(t uint64) int {
	switch t {
	case TypeUser:
		return 1
	case TypeGroup:
		return 2
	case TypeXattr:
		return 3
	case TypeACLUser:
		return 4
	case TypeACLGroup:
		return 5
	case TypeACLGroupObj:
		return 6
	case TypeACLDefault:
		return 7
	case TypeACLDefaultUser:
		return 8
	case TypeACLDefaultGroup:
		return 9
	case TypeSELinux:
		return 10
	case TypeFCaps:
		return 11
	case TypeQuotaProjID:
		return 12
	}
	return 0
}

// repeatable stages may occur more than once.
func repeatable(stage int) bool {
	return stage == 3 || stage == 4 || stage == 5 || stage == 8 || stage == 9
}

// nodeParser accumulates ENTRY and its metadata records and checks them.
type nodeParser struct {
	e         *Entry
	features  uint64 // archive flags fixed by the first ENTRY; 0 = not yet known
	stage     int
	lastXattr string
	lastACL   *ACLEntry
}

// parseEntry checks an ENTRY record body (the 48 bytes after the header).
func parseEntry(off int64, body []byte, archiveFeatures uint64) (*Entry, error) {
	if len(body) != entrySize-headerSize {
		return nil, formatErr(off, "ENTRY has size %d, want 64", len(body)+headerSize)
	}
	e := &Entry{Offset: off, NameOffset: -1}
	e.Features = le.Uint64(body[0:])
	mode := le.Uint64(body[8:])
	e.Flags = le.Uint64(body[16:])
	e.UID = le.Uint64(body[24:])
	e.GID = le.Uint64(body[32:])
	e.MTime = le.Uint64(body[40:])
	f := e.Features
	if f == ^uint64(0) || f&^FeatureFlagsMax != 0 {
		return nil, formatErr(off, "ENTRY feature flags 0x%x have unknown bits", f)
	}
	if !IsNormalized(f) {
		return nil, formatErr(off, "ENTRY feature flags 0x%x are not normalized", f)
	}
	if archiveFeatures != 0 && f != archiveFeatures {
		return nil, formatErr(off, "ENTRY feature flags 0x%x differ from the archive's 0x%x", f, archiveFeatures)
	}
	if mode&^uint64(ModeType|ModePerm) != 0 {
		return nil, formatErr(off, "ENTRY mode 0%o has unknown bits", mode)
	}
	e.Mode = uint32(mode)
	perm := mode & ModePerm
	switch mode & ModeType {
	case ModeReg, ModeDir:
	case ModeLink:
		if f&WithSymlinks == 0 {
			return nil, formatErr(off, "symlink entry but the archive has no symlinks feature")
		}
		if perm != 0777 {
			return nil, formatErr(off, "symlink with mode 0%o, want 0777", perm)
		}
	case ModeBlock, ModeChar:
		if f&WithDeviceNodes == 0 {
			return nil, formatErr(off, "device entry but the archive has no device-nodes feature")
		}
	case ModeFIFO:
		if f&WithFIFOs == 0 {
			return nil, formatErr(off, "fifo entry but the archive has no fifos feature")
		}
	case ModeSock:
		if f&WithSockets == 0 {
			return nil, formatErr(off, "socket entry but the archive has no sockets feature")
		}
	default:
		return nil, formatErr(off, "ENTRY mode 0%o has an unknown file type", mode)
	}
	if mode&ModeType != ModeLink && f&(WithPermissions|WithACL) == 0 {
		ok := perm == 0666 || perm == 0777
		if f&WithReadOnly != 0 {
			ok = ok || perm == 0444 || perm == 0555
		}
		if !ok {
			return nil, formatErr(off, "ENTRY permissions 0%o not allowed without the permissions feature", perm)
		}
	}
	if e.Flags&^(f&flagsPerFile) != 0 {
		return nil, formatErr(off, "ENTRY flags 0x%x not allowed by feature flags 0x%x", e.Flags, f)
	}
	if e.Flags != 0 && mode&ModeType != ModeReg && mode&ModeType != ModeDir {
		return nil, formatErr(off, "ENTRY flags 0x%x on something other than a file or directory", e.Flags)
	}
	if e.Flags&(WithSubvolume|WithSubvolumeRO) != 0 && mode&ModeType != ModeDir {
		return nil, formatErr(off, "subvolume flag on a non-directory")
	}
	if err := checkID(off, f, e.UID, "uid"); err != nil {
		return nil, err
	}
	if err := checkID(off, f, e.GID, "gid"); err != nil {
		return nil, err
	}
	g := Granularity(f)
	switch {
	case e.MTime == ^uint64(0):
		return nil, formatErr(off, "ENTRY mtime is invalid (UINT64_MAX)")
	case g == 0 && e.MTime != 0:
		return nil, formatErr(off, "ENTRY mtime %d but the archive stores no times", e.MTime)
	case g > 1 && e.MTime%g != 0:
		return nil, formatErr(off, "ENTRY mtime %d is not a multiple of the granularity %d ns", e.MTime, g)
	}
	return e, nil
}

func checkID(off int64, f, id uint64, what string) error {
	switch {
	case f&With32BitUIDs != 0:
		if id >= 0xffffffff || id == 65535 {
			return formatErr(off, "ENTRY %s %d is invalid", what, id)
		}
	case f&With16BitUIDs != 0:
		if id >= 65535 {
			return formatErr(off, "ENTRY %s %d does not fit 16 bits", what, id)
		}
	default:
		if id != 0 {
			return formatErr(off, "ENTRY %s %d but the archive stores no ids", what, id)
		}
	}
	return nil
}

func validUserName(s string) bool {
	if s == "" || len(s) > 255 || s == "root" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == ':' || c == '/' || c >= 127 {
			return false
		}
	}
	return true
}

func validXattrName(s string) bool {
	dot := strings.IndexByte(s, '.')
	return dot > 0 && dot < len(s)-1 && len(s) <= 255
}

// cstring parses a NUL-terminated string filling the whole body.
func cstring(off int64, body []byte, what string) (string, error) {
	if len(body) == 0 || body[len(body)-1] != 0 {
		return "", formatErr(off, "%s lacks its final NUL", what)
	}
	s := body[:len(body)-1]
	if bytes.IndexByte(s, 0) >= 0 {
		return "", formatErr(off, "%s contains a NUL byte", what)
	}
	return string(s), nil
}

func compareACL(a, b *ACLEntry) int {
	switch {
	case a.ID != b.ID:
		if a.ID < b.ID {
			return -1
		}
		return 1
	case a.Name != b.Name:
		if a.Name == "" {
			return -1
		}
		if b.Name == "" {
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	case a.Perm != b.Perm:
		if a.Perm < b.Perm {
			return -1
		}
		return 1
	}
	return 0
}

// meta adds one metadata record (stage ≥ 1) to the entry.
func (p *nodeParser) meta(off int64, t uint64, body []byte) error {
	e := p.e
	f := e.Features
	st := metaStage(t)
	if st < p.stage || (st == p.stage && !repeatable(st)) {
		return formatErr(off, "%s record out of order", recordName(t))
	}
	if st != p.stage {
		p.lastACL = nil
	}
	p.stage = st
	typ := e.Type()
	switch t {
	case TypeUser, TypeGroup:
		if f&WithUserNames == 0 {
			return formatErr(off, "%s record but the archive has no user-names feature", recordName(t))
		}
		s, err := cstring(off, body, recordName(t))
		if err != nil {
			return err
		}
		if !validUserName(s) {
			return formatErr(off, "invalid %s name %q", recordName(t), s)
		}
		if t == TypeUser {
			e.User = s
		} else {
			e.Group = s
		}
	case TypeXattr:
		if f&WithXattrs == 0 {
			return formatErr(off, "XATTR record but the archive has no xattrs feature")
		}
		if typ == ModeLink {
			return formatErr(off, "XATTR record on a symlink")
		}
		if len(body) < 4 {
			return formatErr(off, "XATTR record too small")
		}
		lim := body
		if len(lim) > 256 {
			lim = lim[:256]
		}
		i := bytes.IndexByte(lim, 0)
		if i < 0 {
			return formatErr(off, "XATTR name not terminated within 255 bytes")
		}
		name := string(body[:i])
		if !validXattrName(name) {
			return formatErr(off, "invalid XATTR name %q", name)
		}
		if len(e.Xattrs) > 0 && name <= p.lastXattr {
			return formatErr(off, "XATTR %q not in strictly increasing order", name)
		}
		p.lastXattr = name
		e.Xattrs = append(e.Xattrs, Xattr{Name: name, Value: append([]byte(nil), body[i+1:]...)})
	case TypeACLUser, TypeACLGroup, TypeACLDefaultUser, TypeACLDefaultGroup:
		if f&WithACL == 0 {
			return formatErr(off, "%s record but the archive has no acl feature", recordName(t))
		}
		if typ == ModeLink {
			return formatErr(off, "ACL record on a symlink")
		}
		if len(body) < 16 {
			return formatErr(off, "%s record too small", recordName(t))
		}
		a := ACLEntry{ID: le.Uint64(body), Perm: le.Uint64(body[8:])}
		if len(body) > 16 {
			if f&WithUserNames == 0 {
				return formatErr(off, "%s has a name but the archive has no user-names feature", recordName(t))
			}
			s, err := cstring(off, body[16:], recordName(t))
			if err != nil {
				return err
			}
			if !validUserName(s) {
				return formatErr(off, "invalid %s name %q", recordName(t), s)
			}
			a.Name = s
		}
		if a.Perm&^7 != 0 {
			return formatErr(off, "%s permissions 0x%x invalid", recordName(t), a.Perm)
		}
		if err := checkID(off, f, a.ID, "ACL id"); err != nil {
			return err
		}
		if p.lastACL != nil && compareACL(p.lastACL, &a) >= 0 {
			return formatErr(off, "%s entries not in strictly increasing order", recordName(t))
		}
		if e.ACL == nil {
			e.ACL = &ACL{}
		}
		switch t {
		case TypeACLUser:
			e.ACL.User = append(e.ACL.User, a)
		case TypeACLGroup:
			e.ACL.Group = append(e.ACL.Group, a)
		case TypeACLDefaultUser, TypeACLDefaultGroup:
			if e.ACL.Default == nil || e.ACL.Default.Mask == NoMask {
				return formatErr(off, "%s without an ACL_DEFAULT record with a mask", recordName(t))
			}
			if t == TypeACLDefaultUser {
				e.ACL.DefaultUser = append(e.ACL.DefaultUser, a)
			} else {
				e.ACL.DefaultGroup = append(e.ACL.DefaultGroup, a)
			}
		}
		p.lastACL = &a
	case TypeACLGroupObj:
		if f&WithACL == 0 {
			return formatErr(off, "ACL_GROUP_OBJ record but the archive has no acl feature")
		}
		if len(body) != 8 {
			return formatErr(off, "ACL_GROUP_OBJ has size %d, want 24", len(body)+headerSize)
		}
		if typ == ModeLink {
			return formatErr(off, "ACL record on a symlink")
		}
		v := le.Uint64(body)
		if v&^7 != 0 {
			return formatErr(off, "ACL_GROUP_OBJ permissions 0x%x invalid", v)
		}
		if e.ACL == nil {
			e.ACL = &ACL{}
		}
		e.ACL.GroupObj, e.ACL.HasGroupObj = v, true
	case TypeACLDefault:
		if f&WithACL == 0 {
			return formatErr(off, "ACL_DEFAULT record but the archive has no acl feature")
		}
		if len(body) != 32 {
			return formatErr(off, "ACL_DEFAULT has size %d, want 48", len(body)+headerSize)
		}
		if typ != ModeDir {
			return formatErr(off, "default ACL on a non-directory")
		}
		d := &ACLDefault{le.Uint64(body), le.Uint64(body[8:]), le.Uint64(body[16:]), le.Uint64(body[24:])}
		if d.UserObj&^7 != 0 || d.GroupObj&^7 != 0 || d.Other&^7 != 0 || (d.Mask&^7 != 0 && d.Mask != NoMask) {
			return formatErr(off, "ACL_DEFAULT permissions invalid")
		}
		if e.ACL == nil {
			e.ACL = &ACL{}
		}
		e.ACL.Default = d
	case TypeSELinux:
		if f&WithSELinux == 0 {
			return formatErr(off, "SELINUX record but the archive has no selinux feature")
		}
		if len(body) < 2 {
			return formatErr(off, "SELINUX record too small")
		}
		s, err := cstring(off, body, "SELINUX label")
		if err != nil {
			return err
		}
		e.SELinux = s
	case TypeFCaps:
		if typ != ModeReg {
			return formatErr(off, "FCAPS record on a non-regular file")
		}
		e.FCaps = append([]byte(nil), body...)
	case TypeQuotaProjID:
		if len(body) != 8 {
			return formatErr(off, "QUOTA_PROJID has size %d, want 24", len(body)+headerSize)
		}
		if typ != ModeReg && typ != ModeDir {
			return formatErr(off, "QUOTA_PROJID on something other than a file or directory")
		}
		v := le.Uint64(body)
		if v == 0 || v > 0xffffffff {
			return formatErr(off, "QUOTA_PROJID %d invalid", v)
		}
		e.ProjID = v
	default:
		return formatErr(off, "unexpected %s record", recordName(t))
	}
	return nil
}

// finishMeta runs node-level checks once all metadata is read.
func (p *nodeParser) finishMeta(off int64) error {
	a := p.e.ACL
	if a != nil && (len(a.User) > 0 || len(a.Group) > 0) && !a.HasGroupObj {
		return formatErr(off, "named ACL entries without ACL_GROUP_OBJ")
	}
	return nil
}

// body parses a SYMLINK or DEVICE record of the entry.
func parseBody(e *Entry, off int64, t uint64, body []byte) error {
	switch t {
	case TypeSymlink:
		if e.Features&WithSymlinks == 0 {
			return formatErr(off, "SYMLINK record but the archive has no symlinks feature")
		}
		if e.Type() != ModeLink {
			return formatErr(off, "SYMLINK record for a non-symlink")
		}
		if len(body) < 2 {
			return formatErr(off, "empty symlink target")
		}
		s, err := cstring(off, body, "symlink target")
		if err != nil {
			return err
		}
		e.Target = s
	case TypeDevice:
		if e.Features&WithDeviceNodes == 0 {
			return formatErr(off, "DEVICE record but the archive has no device-nodes feature")
		}
		if len(body) != 16 {
			return formatErr(off, "DEVICE has size %d, want 32", len(body)+headerSize)
		}
		if e.Type() != ModeBlock && e.Type() != ModeChar {
			return formatErr(off, "DEVICE record for a non-device")
		}
		e.DevMajor, e.DevMinor = le.Uint64(body), le.Uint64(body[8:])
		if e.DevMajor >= 1<<12 || e.DevMinor >= 1<<20 {
			return formatErr(off, "device number %d:%d out of range", e.DevMajor, e.DevMinor)
		}
	}
	return nil
}

// bodyType returns the record type that must follow the metadata of a
// node of this type, or 0 for fifos/sockets (none) and directories.
func bodyType(mode uint32) uint64 {
	switch mode & ModeType {
	case ModeReg:
		return TypePayload
	case ModeLink:
		return TypeSymlink
	case ModeBlock, ModeChar:
		return TypeDevice
	}
	return 0
}

// validName checks a FILENAME.
func validName(off int64, name string) error {
	switch {
	case name == "":
		return formatErr(off, "empty file name")
	case name == "." || name == "..":
		return formatErr(off, "file name %q not allowed", name)
	case strings.IndexByte(name, '/') >= 0:
		return formatErr(off, "file name %q contains '/'", name)
	}
	return nil
}
