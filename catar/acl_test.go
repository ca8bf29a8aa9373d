package catar

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// TestACLXattrs pins the bytes of both ACLXattrs variants: the mount's
// (AlwaysMask, stored ids) and extract's (mask only with ACL_GROUP_OBJ,
// names mapped to local ids).
func TestACLXattrs(t *testing.T) {
	// Each entry: le16 tag, le16 perm, le32 id.
	const (
		v2 = "02000000 "
		no = "ffffffff "
	)
	x := func(s string) []byte {
		if s == "" {
			return nil
		}
		b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	local := map[string]uint32{"u:bob": 2000, "u:alice": 1000, "g:staff": 50}
	mapID := func(a ACLEntry, group bool) (uint32, bool) {
		k := "u:" + a.Name
		if group {
			k = "g:" + a.Name
		}
		id, ok := local[k]
		return id, ok
	}
	for _, c := range []struct {
		name           string
		e              Entry
		mount, extract [2]string // access, default
		mapNames       bool
	}{
		{
			name: "no ACL",
			e:    Entry{Mode: ModeReg | 0644},
		},
		{
			name: "named entries with group_obj",
			e: Entry{Mode: ModeReg | 0754, ACL: &ACL{
				User:     []ACLEntry{{ID: 1000, Perm: 6}, {ID: 70000, Perm: 4}},
				Group:    []ACLEntry{{ID: 100, Perm: 5}},
				GroupObj: 4, HasGroupObj: true,
			}},
			mount: [2]string{v2 +
				"0100 0700 " + no + "0200 0600 e8030000 " + "0200 0400 70110100 " +
				"0400 0400 " + no + "0800 0500 64000000 " + "1000 0500 " + no + "2000 0400 " + no},
		},
		{
			name: "named user without group_obj",
			e: Entry{Mode: ModeReg | 0640, ACL: &ACL{
				User: []ACLEntry{{ID: 1000, Perm: 7}},
			}},
			mount: [2]string{v2 +
				"0100 0600 " + no + "0200 0700 e8030000 " + "0400 0400 " + no + "1000 0400 " + no + "2000 0000 " + no},
			extract: [2]string{v2 +
				"0100 0600 " + no + "0200 0700 e8030000 " + "0400 0400 " + no + "2000 0000 " + no},
		},
		{
			name: "default only, no mask",
			e: Entry{Mode: ModeDir | 0755, ACL: &ACL{
				Default: &ACLDefault{UserObj: 7, GroupObj: 5, Other: 1, Mask: NoMask},
			}},
			mount: [2]string{"", v2 + "0100 0700 " + no + "0400 0500 " + no + "2000 0100 " + no},
		},
		{
			name: "names mapped to local ids",
			e: Entry{Mode: ModeDir | 0770, ACL: &ACL{
				User:     []ACLEntry{{Name: "bob", Perm: 7}, {Name: "nobody-here", Perm: 7}, {Name: "alice", Perm: 5}},
				Group:    []ACLEntry{{Name: "staff", Perm: 3}},
				GroupObj: 7, HasGroupObj: true,
				Default:     &ACLDefault{UserObj: 7, GroupObj: 0, Other: 0, Mask: 6},
				DefaultUser: []ACLEntry{{Name: "alice", Perm: 6}},
			}},
			mapNames: true,
			// The mount shows the stored ids (0 in a names-only archive),
			// in stored order.
			mount: [2]string{
				v2 + "0100 0700 " + no + "0200 0700 00000000 " + "0200 0700 00000000 " + "0200 0500 00000000 " +
					"0400 0700 " + no + "0800 0300 00000000 " + "1000 0700 " + no + "2000 0000 " + no,
				v2 + "0100 0700 " + no + "0200 0600 00000000 " + "0400 0000 " + no + "1000 0600 " + no + "2000 0000 " + no,
			},
			// Extract maps names, drops unknown ones and orders by local id.
			extract: [2]string{
				v2 + "0100 0700 " + no + "0200 0500 e8030000 " + "0200 0700 d0070000 " +
					"0400 0700 " + no + "0800 0300 32000000 " + "1000 0700 " + no + "2000 0000 " + no,
				v2 + "0100 0700 " + no + "0200 0600 e8030000 " + "0400 0000 " + no + "1000 0600 " + no + "2000 0000 " + no,
			},
		},
	} {
		if c.extract == [2]string{} {
			c.extract = c.mount // the variants differ only without group_obj or with names
		}
		check := func(variant string, o ACLXattrOptions, want [2]string) {
			acc, def := ACLXattrs(&c.e, o)
			for i, got := range [][]byte{acc, def} {
				w := x(want[i])
				if !bytes.Equal(got, w) || (got == nil) != (w == nil) {
					t.Errorf("%s, %s: %s = %x, want %x", c.name, variant, []string{"access", "default"}[i], got, w)
				}
			}
		}
		check("mount", ACLXattrOptions{AlwaysMask: true}, c.mount)
		o := ACLXattrOptions{}
		if c.mapNames {
			o.ID = mapID
		}
		check("extract", o, c.extract)
	}
}
