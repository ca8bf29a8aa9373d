package main

import (
	"io"
	"os"

	"github.com/camount/camount/fssize"
)

// blockInput limits a block device to the size its file system claims
// when that is smaller than the device, as casync make does (package
// fssize). Anything else (regular files included, as with casync) is
// returned as it is, with size.
func blockInput(e *env, f *os.File, st os.FileInfo, size int64) (io.Reader, int64) {
	if st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 || size < 0 {
		return f, size
	}
	n, ok, err := fssize.Size(f)
	if err != nil {
		e.log.Warn("make: cannot read the file system size; serialising the whole device", "device", f.Name(), "err", err)
		return f, size
	}
	if !ok || int64(n) >= size || int64(n) < 0 {
		return f, size
	}
	e.log.Debug("make: serialising the file system only, as casync", "device", f.Name(), "device_size", size, "fs_size", n)
	return io.NewSectionReader(f, 0, int64(n)), int64(n)
}
