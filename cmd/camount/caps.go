package main

import (
	"errors"
	"os"
	"strconv"
	"strings"
)

// errNeedsRoot is mkdev's refusal without CAP_SYS_ADMIN: one line that says
// what is missing and what works instead.
var errNeedsRoot = errors.New("attaching a block device (/dev/nbdN or a loop device) needs root (CAP_SYS_ADMIN); as a normal user use 'camount mount' (FUSE) or 'camount nbd'")

// capSysAdmin is CAP_SYS_ADMIN's bit in the capability sets.
const capSysAdmin = 21

// hasCapSysAdmin reports whether the process's effective capabilities hold
// CAP_SYS_ADMIN (as root normally does; a container may drop it).
func hasCapSysAdmin() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return os.Geteuid() == 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return os.Geteuid() == 0
			}
			return caps&(1<<capSysAdmin) != 0
		}
	}
	return os.Geteuid() == 0
}
