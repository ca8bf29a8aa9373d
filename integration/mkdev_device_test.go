package integration

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestMkdevDeviceErrors: 'camount mkdev --device=' (and casync's NODE
// spelling of it) is refused before any work when it cannot apply. The
// device really chosen, and a busy one, are checked in the VM (TestVMNBD).
func TestMkdevDeviceErrors(t *testing.T) {
	dir := t.TempDir()
	idx := filepath.Join(dir, "x.caibx")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--device=/dev/sda", idx}, "--device /dev/sda: want an NBD device /dev/nbdN"},
		{[]string{"--device=nbd1", idx}, "want an NBD device /dev/nbdN"},
		{[]string{"--device=/dev/nbd1p1", idx}, "want an NBD device /dev/nbdN"},
		{[]string{"--device=/dev/nbd1", "--via=loop", idx}, "cannot be chosen"},
		{[]string{"--device=/dev/nbd1", idx, "/dev/nbd2"}, "name different devices"},
		{[]string{"--via=loop", idx, "/dev/nbd2"}, "cannot be chosen"},
	} {
		out, err := tryCamount(append([]string{"mkdev"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("mkdev %s: %v %s, want an error containing %q", strings.Join(c.args, " "), err, out, c.want)
		}
	}
}
