package blockdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotLoop is returned by LoopIndex for a path that is not /dev/loopN.
var ErrNotLoop = errors.New("not a loop device")

// LoopOptions configure AttachLoop. The zero value is usable.
type LoopOptions struct {
	// PartScan asks the kernel to scan the partition table
	// (LO_FLAGS_PARTSCAN); /dev/loopNpM nodes appear where devtmpfs or
	// udev make them.
	PartScan bool
}

// LoopDevice is a read-only /dev/loopN over a file, attached by this
// process. It is set to clear itself automatically (LO_FLAGS_AUTOCLEAR):
// the kernel releases it when the last opener closes it, so a process that
// dies does not leave it behind.
type LoopDevice struct {
	index int
	file  string
	f     *os.File // the open loop device; closing it detaches
}

// Path returns /dev/loopN.
func (d *LoopDevice) Path() string { return "/dev/loop" + strconv.Itoa(d.index) }

// Index returns N of /dev/loopN.
func (d *LoopDevice) Index() int { return d.index }

// AttachLoop attaches a free loop device read-only to file.
func AttachLoop(file string, opt LoopOptions) (*LoopDevice, error) {
	backing, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("loop attach: %w", err)
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("loop attach: %w (is the loop module loaded?)", err)
		}
		return nil, fmt.Errorf("loop attach: %w", err)
	}
	defer ctl.Close()
	abs, _ := filepath.Abs(file)
	flags := uint32(unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR)
	if opt.PartScan {
		flags |= unix.LO_FLAGS_PARTSCAN
	}
	var info unix.LoopInfo64
	info.Flags = flags
	copy(info.File_name[:len(info.File_name)-1], abs)
	for attempt := 0; attempt < 16; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("loop attach: LOOP_CTL_GET_FREE: %w", err)
		}
		path := "/dev/loop" + strconv.Itoa(n)
		dev, err := openLoopNode(path)
		if err != nil {
			return nil, fmt.Errorf("loop attach: %w", err)
		}
		fd := int(dev.Fd())
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd()), Size: 512, Info: info}
		err = unix.IoctlLoopConfigure(fd, &cfg)
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) && !opt.PartScan {
			// Before Linux 5.8: LOOP_SET_FD, then the status.
			err = unix.IoctlSetInt(fd, unix.LOOP_SET_FD, int(backing.Fd()))
			if err == nil {
				if err = unix.IoctlLoopSetStatus64(fd, &info); err != nil {
					unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
				}
			}
		}
		if errors.Is(err, unix.EBUSY) {
			dev.Close() // taken by someone else meanwhile: try another
			continue
		}
		if err != nil {
			dev.Close()
			return nil, fmt.Errorf("loop attach %s to %s: %w", path, file, err)
		}
		return &LoopDevice{index: n, file: file, f: dev}, nil
	}
	return nil, errors.New("loop attach: no free loop device after 16 attempts")
}

// openLoopNode opens /dev/loopN, making the node if /dev has no devtmpfs.
func openLoopNode(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		n, _ := LoopIndex(path)
		if merr := unix.Mknod(path, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); merr == nil || errors.Is(merr, unix.EEXIST) {
			f, err = os.OpenFile(path, os.O_RDONLY, 0)
		}
	}
	return f, err
}

// Detach releases the loop device. If another program still has it open
// (a mount, a reader), the kernel releases it when that program closes it;
// Detach waits up to wait for that and reports a device still attached.
func (d *LoopDevice) Detach(wait time.Duration) error {
	if d.f != nil {
		// Clear explicitly (works when we are the only opener); closing
		// our descriptor triggers the autoclear otherwise.
		unix.IoctlSetInt(int(d.f.Fd()), unix.LOOP_CLR_FD, 0)
		d.f.Close()
		d.f = nil
	}
	deadline := time.Now().Add(wait)
	for {
		if b := LoopAttachedTo(d.index); b == "" || !sameFile(b, d.file) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("loop detach: %s is still in use (it is released when its last user closes it)", d.Path())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sameFile(a, b string) bool {
	aa, _ := filepath.Abs(a)
	bb, _ := filepath.Abs(b)
	return aa == bb
}

// LoopAttachedTo returns the backing file of /dev/loopN, or "" when it is
// not attached.
func LoopAttachedTo(index int) string {
	b, err := os.ReadFile(fmt.Sprintf("/sys/block/loop%d/loop/backing_file", index))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// LoopIndex parses N from /dev/loopN (or loopN).
func LoopIndex(path string) (int, error) {
	rest, ok := strings.CutPrefix(filepath.Base(path), "loop")
	if !ok || rest == "" {
		return 0, fmt.Errorf("%s: %w", path, ErrNotLoop)
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s: %w", path, ErrNotLoop)
	}
	return n, nil
}
