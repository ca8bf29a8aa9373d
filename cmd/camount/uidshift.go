package main

import (
	"flag"

	"github.com/camount/camount/catar"
)

// uidShiftFlags are casync's --uid-shift and --uid-range.
type uidShiftFlags struct{ shift, rng string }

func addUIDShiftFlags(fs *flag.FlagSet) *uidShiftFlags {
	u := &uidShiftFlags{}
	fs.StringVar(&u.shift, "uid-shift", "", "shift owners for a user namespace, as casync: make stores (id − `N`) mod RANGE, extract and mount give (id mod RANGE) + N; yes: N=0")
	fs.StringVar(&u.rng, "uid-range", "", "ids of the user namespace for --uid-shift, `RANGE` 1..4294967296 (default with --uid-shift: 65536)")
	return u
}

// get returns the shift, or nil when none applies.
func (u *uidShiftFlags) get() (*catar.UIDShift, error) {
	if u == nil {
		return nil, nil
	}
	s, err := catar.ParseUIDShift(u.shift, u.rng)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return s, nil
}
