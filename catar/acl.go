package catar

import "sort"

// Linux POSIX ACL xattr encoding (linux/posix_acl_xattr.h), the value of
// system.posix_acl_access and system.posix_acl_default: le32 version 2, then
// entries of le16 tag, le16 perm (4 read, 2 write, 1 execute), le32 id.
const (
	aclXattrVersion = 2

	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20

	aclPermBits = 7          // ACL_READ | ACL_WRITE | ACL_EXECUTE
	aclNoID     = 0xffffffff // ACL_UNDEFINED_ID, the id of the *_OBJ, MASK and OTHER entries
)

// ACLXattrOptions selects the variant ACLXattrs writes. The zero value
// writes the stored ids and an access ACL_MASK only where the archive
// records one (with ACL_GROUP_OBJ), as extract restores them.
type ACLXattrOptions struct {
	// AlwaysMask gives every access ACL an ACL_MASK entry holding the
	// mode's group bits, as stat and getfacl show an ACL on a mount.
	AlwaysMask bool
	// ID maps a named entry (ACL_USER, or ACL_GROUP when group) to the id
	// to write; ok false leaves the entry out. nil writes the stored ID.
	ID func(a ACLEntry, group bool) (id uint32, ok bool)
}

// ACLXattrs encodes e's stored ACLs as the values of
// system.posix_acl_access and system.posix_acl_default. access is nil when
// e has no ACL beyond its mode, dflt when it has no default ACL. The access
// ACL's owner, other and mask come from the mode, its owning group from
// ACL_GROUP_OBJ (else the mode); named entries are ordered by id.
func ACLXattrs(e *Entry, o ACLXattrOptions) (access, dflt []byte) {
	a := e.ACL
	if a == nil {
		return nil, nil
	}
	if len(a.User) > 0 || len(a.Group) > 0 || a.HasGroupObj {
		m := uint64(e.Mode)
		groupObj, mask := m>>3, NoMask
		if a.HasGroupObj {
			groupObj, mask = a.GroupObj, m>>3
		}
		if o.AlwaysMask {
			mask = m >> 3
		}
		access = o.encode(m>>6, a.User, groupObj, a.Group, mask, m)
	}
	if d := a.Default; d != nil {
		dflt = o.encode(d.UserObj, a.DefaultUser, d.GroupObj, a.DefaultGroup, d.Mask, d.Other)
	}
	return access, dflt
}

// encode writes one ACL in the kernel's order of tags; mask NoMask leaves
// out ACL_MASK.
func (o *ACLXattrOptions) encode(userObj uint64, users []ACLEntry, groupObj uint64, groups []ACLEntry, mask, other uint64) []byte {
	b := le.AppendUint32(nil, aclXattrVersion)
	b = appendACLXattrEntry(b, aclUserObj, userObj, aclNoID)
	b = o.appendNamed(b, aclUser, users, false)
	b = appendACLXattrEntry(b, aclGroupObj, groupObj, aclNoID)
	b = o.appendNamed(b, aclGroup, groups, true)
	if mask != NoMask {
		b = appendACLXattrEntry(b, aclMask, mask, aclNoID)
	}
	return appendACLXattrEntry(b, aclOther, other, aclNoID)
}

// appendNamed writes the ACL_USER or ACL_GROUP entries l, mapped through
// o.ID, in increasing id order (stable for equal ids).
func (o *ACLXattrOptions) appendNamed(b []byte, tag uint16, l []ACLEntry, group bool) []byte {
	type named struct {
		id   uint32
		perm uint64
	}
	es := make([]named, 0, len(l))
	for _, a := range l {
		id := uint32(a.ID)
		if o.ID != nil {
			var ok bool
			if id, ok = o.ID(a, group); !ok {
				continue
			}
		}
		es = append(es, named{id, a.Perm})
	}
	sort.SliceStable(es, func(i, j int) bool { return es[i].id < es[j].id })
	for _, e := range es {
		b = appendACLXattrEntry(b, tag, e.perm, e.id)
	}
	return b
}

func appendACLXattrEntry(b []byte, tag uint16, perm uint64, id uint32) []byte {
	b = le.AppendUint16(b, tag)
	b = le.AppendUint16(b, uint16(perm&aclPermBits))
	return le.AppendUint32(b, id)
}
