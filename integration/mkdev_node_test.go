package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMkdevNode: 'camount mkdev INDEX NODE' makes NODE a symlink to the
// device while it serves, as casync mkdev does, and removes it at exit.
func TestMkdevNode(t *testing.T) {
	needRoot(t)
	needCmd(t, "casync", "sfdisk", "mkfs.ext4", "cmp")
	needLoopOverFUSE(t)
	dir := t.TempDir()
	d := makeDiskImage(t, dir, 8, nil)
	node := filepath.Join(dir, "disk-node")
	p := startMkdev(t, "--store="+d.store, d.caibx, node)
	if target, err := os.Readlink(node); err != nil || target != p.dev {
		t.Errorf("NODE -> %q (%v), want the device %s", target, err, p.dev)
	}
	cmpFiles(t, node, d.img) // the device, through the symlink
	if err := p.stop(t); err != nil {
		t.Errorf("mkdev: %v\nstderr: %s", err, p.stderr)
	}
	if _, err := os.Lstat(node); !os.IsNotExist(err) {
		t.Errorf("NODE still there after mkdev ended: %v", err)
	}
	// (A NODE naming /dev/nbdN picks the device: TestVMNBD checks that.)
	if _, err := tryCamount("mkdev", "--store="+d.store, d.caibx, d.caibx); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("an existing NODE: %v, want it refused", err)
	}
}
