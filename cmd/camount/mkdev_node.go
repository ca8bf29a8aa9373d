package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/camount/camount/blockdev"
)

// mkdevNode is casync mkdev's optional NODE when it is not an NBD device:
// a symlink to the device made, created when it is ready and removed when
// mkdev ends. A NODE under /dev (casync's udev "friendly name") is such a
// symlink in /dev. mkdevDevice is the /dev/nbdN to connect (--device, or
// a NODE naming one, as casync takes it); "" lets the kernel pick. One
// mkdev runs per process, so package variables suffice.
var mkdevNode, mkdevDevice string

// setMkdevDevice checks --device=/dev/nbdN; giving one means NBD, never
// the loop fallback.
func setMkdevDevice(dev string, via *string) error {
	if dev == "" {
		return nil
	}
	if _, err := blockdev.NBDIndex(dev); err != nil || !strings.HasPrefix(filepath.Clean(dev), "/dev/") {
		return usagef("--device %s: want an NBD device /dev/nbdN", dev)
	}
	if *via == "loop" {
		return usagef("--device %s: a loop device over FUSE (--via=loop) cannot be chosen; --device needs --via=nbd or auto", dev)
	}
	if mkdevDevice != "" && filepath.Clean(dev) != mkdevDevice {
		return usagef("--device %s and NODE %s name different devices", dev, mkdevDevice)
	}
	mkdevDevice = filepath.Clean(dev)
	*via = "nbd"
	return nil
}

func setMkdevNode(node string, via *string) error {
	clean := filepath.Clean(node)
	if _, err := blockdev.NBDIndex(clean); err == nil && filepath.Dir(clean) == "/dev" {
		return setMkdevDevice(clean, via)
	}
	if _, err := os.Lstat(node); err == nil {
		return usagef("NODE %s exists", node)
	}
	mkdevNode = node
	return nil
}

func makeMkdevNode(e *env, dev string) {
	if mkdevNode == "" {
		return
	}
	if err := os.Symlink(dev, mkdevNode); err != nil {
		e.log.Error("mkdev: cannot create the symlink NODE", "node", mkdevNode, "err", err)
	}
}

func removeMkdevNode(e *env) {
	if mkdevNode == "" {
		return
	}
	if target, err := os.Readlink(mkdevNode); err == nil && strings.HasPrefix(target, "/dev/") {
		os.Remove(mkdevNode)
	}
}
