package extract

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrNotSeekable is returned for an output that is neither a regular file
// nor a block device (a FIFO, a character device, a socket): the blob is
// written at random offsets, as casync does, so it refuses them too. Write
// to standard output ("-" on the command line, Stream here) instead.
var ErrNotSeekable = errors.New("output is neither a regular file nor a block device; refusing (write the stream to standard output with - instead)")

// PartialDeviceError is returned when writing to a block device failed or
// was interrupted: the device was written in place and now holds a partial
// image, neither the old contents nor the new.
type PartialDeviceError struct {
	Device string
	Err    error
}

func (e *PartialDeviceError) Error() string {
	return fmt.Sprintf("%s: %v; the device now holds a PARTIAL image (neither its old contents nor the new): extract again before using it", e.Device, e.Err)
}

func (e *PartialDeviceError) Unwrap() error { return e.Err }

// output is where a blob is written: a temporary file beside a regular
// file target, renamed over it by commit, or a block device written in
// place.
type output struct {
	target string   // the path the caller named (symlinks resolved)
	tmp    string   // the temporary file; "" for a block device
	f      *os.File // open for writing (and reading back, for reflinks)
	device bool
	old    *os.File // the existing regular file at target, opened read-only, if any
	mode   fs.FileMode
}

// tempName returns casync's temporary name for path: ".#" + base + 16
// random hex digits, in the same directory (so rename is atomic).
func tempName(path string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(path), ".#"+filepath.Base(path)+hex.EncodeToString(b[:])), nil
}

// openOutput prepares target for a blob of size bytes. A regular file (or
// a path that does not exist yet) gets a temporary file beside it of that
// size, all holes; an existing regular file is left untouched (and opened
// read-only in old, to seed from) until commit. A block device is opened
// for writing in place after checking that the image fits.
func openOutput(target string, size int64) (*output, error) {
	if r, err := filepath.EvalSymlinks(target); err == nil {
		target = r // write beside, and rename over, the file the link names
	}
	o := &output{target: target}
	st, err := os.Stat(target)
	switch {
	case err == nil && st.Mode()&fs.ModeDevice != 0 && st.Mode()&fs.ModeCharDevice == 0:
		f, err := os.OpenFile(target, os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		n, err := deviceSize(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", target, err)
		}
		if n < size {
			f.Close()
			return nil, fmt.Errorf("%s: device holds %d bytes, the image needs %d", target, n, size)
		}
		o.f, o.device = f, true
		return o, nil
	case err == nil && st.Mode().IsRegular():
		o.mode = st.Mode().Perm()
		if old, err := os.Open(target); err == nil {
			o.old = old
		}
	case err == nil && st.IsDir():
		return nil, fmt.Errorf("%s: is a directory; a .caibx extracts to a file or block device", target)
	case err == nil:
		return nil, fmt.Errorf("%s: %w", target, ErrNotSeekable)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	tmp, err := tempName(target)
	if err != nil {
		o.closeOld()
		return nil, err
	}
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
	if err != nil {
		o.closeOld()
		return nil, err
	}
	o.f, o.tmp = f, tmp
	// Start from a hole of the right size so zero chunks need no writes.
	if err := f.Truncate(size); err != nil {
		o.abort()
		return nil, fmt.Errorf("%s: %w", tmp, err)
	}
	return o, nil
}

func deviceSize(f *os.File) (int64, error) {
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("cannot read the device size: %w", err)
	}
	return n, nil
}

func (o *output) closeOld() {
	if o.old != nil {
		o.old.Close()
		o.old = nil
	}
}

// commit makes the written image the target: it syncs a block device, or
// gives the temporary file the old file's permissions (a new one keeps
// 0666 less the umask, as casync's) and renames it over the target.
func (o *output) commit() error {
	defer o.closeOld()
	if o.device {
		err := o.f.Sync()
		if cerr := o.f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return &PartialDeviceError{Device: o.target, Err: err}
		}
		return nil
	}
	var err error
	if o.old != nil {
		err = o.f.Chmod(o.mode)
	}
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(o.tmp, o.target)
	}
	if err != nil {
		os.Remove(o.tmp)
		return fmt.Errorf("%s: %w", o.target, err)
	}
	return nil
}

// abort removes the temporary file, leaving the target as it was. For a
// block device it wraps err in a *PartialDeviceError.
func (o *output) abort() {
	o.closeOld()
	o.f.Close()
	if o.tmp != "" {
		os.Remove(o.tmp)
	}
}
