package main

import (
	"os"
	"path/filepath"
	"strings"
)

// mkdevNode is casync mkdev's optional NODE: a symlink to the device made,
// created when it is ready and removed when mkdev ends. (casync also takes
// a /dev/nbdN to use or a /dev name for udev; camount picks the device.)
// One mkdev runs per process, so a package variable suffices.
var mkdevNode string

func setMkdevNode(node string) error {
	if strings.HasPrefix(filepath.Clean(node), "/dev/") {
		return usagef("NODE %s: camount picks the device itself; give a symlink path outside /dev", node)
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
