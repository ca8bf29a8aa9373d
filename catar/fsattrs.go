package catar

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"unsafe"
)

// File-system specific flags casync stores (and restores): FAT attributes
// (on vfat, and FUSE file systems that answer the ioctl) and btrfs
// subvolumes (a directory that is a subvolume, and whether it is
// read-only).

const (
	msdosMagic = 0x4d44
	fuseMagic  = 0x65735546
	btrfsMagic = 0x9123683e

	fatIoctlGetAttributes  = 0x80047210 // _IOR('r', 0x10, __u32)
	fatIoctlSetAttributes  = 0x40047211 // _IOW('r', 0x11, __u32)
	btrfsIocSubvolGetflags = 0x80089419 // _IOR(0x94, 25, __u64)
	btrfsIocSubvolSetflags = 0x4008941a // _IOW(0x94, 26, __u64)
	btrfsIocSubvolCreate   = 0x5000940e // _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
	btrfsSubvolRdonly      = 1 << 1
	btrfsPathNameMax       = 4087
)

// fsMagics caches the file-system type of each device.
type fsMagics struct{ m sync.Map } // st_dev → f_type

func (c *fsMagics) of(f *rawFile, dev uint64) int64 {
	if v, ok := c.m.Load(dev); ok {
		return v.(int64)
	}
	var s syscall.Statfs_t
	if syscall.Fstatfs(f.fd, &s) != nil {
		return 0
	}
	c.m.Store(dev, int64(s.Type))
	return int64(s.Type)
}

func unsupported(errno syscall.Errno) bool {
	return errno == syscall.ENOTTY || errno == syscall.EOPNOTSUPP || errno == syscall.EINVAL || errno == syscall.ENOSYS
}

// fsFlags returns the FAT attribute and subvolume flags casync stores for
// a regular file or directory (t), masked by the features f.
func fsFlags(magics *fsMagics, fl *rawFile, st *syscall.Stat_t, t uint32, f uint64) (uint64, error) {
	if fl == nil || (t != ModeReg && t != ModeDir) {
		return 0, nil
	}
	var flags uint64
	if f&WithFatAttrs != 0 {
		if m := magics.of(fl, st.Dev); m == msdosMagic || m == fuseMagic {
			var v uint32
			if errno := ioctlPtr(fl, fatIoctlGetAttributes, unsafe.Pointer(&v)); errno != 0 {
				if !unsupported(errno) {
					return 0, &os.PathError{Op: "FAT_IOCTL_GET_ATTRIBUTES", Path: fl.Name(), Err: errno}
				}
			} else {
				flags |= flagsFromFatAttrs(uint64(v)) & f
			}
		}
	}
	if t == ModeDir && f&WithSubvolume != 0 && st.Ino == 256 && magics.of(fl, st.Dev) == btrfsMagic {
		var v uint64
		if errno := ioctlPtr(fl, btrfsIocSubvolGetflags, unsafe.Pointer(&v)); errno != 0 {
			return 0, &os.PathError{Op: "BTRFS_IOC_SUBVOL_GETFLAGS", Path: fl.Name(), Err: errno}
		}
		flags |= WithSubvolume
		if v&btrfsSubvolRdonly != 0 {
			flags |= WithSubvolumeRO & f
		}
	}
	return flags, nil
}

func flagsFromFatAttrs(a uint64) uint64 {
	var f uint64
	for _, m := range fatMap {
		if a&m.fat != 0 {
			f |= m.flag
		}
	}
	return f
}

// openPath opens path for an ioctl when no fd is at hand.
func openPath(path string, fd int) (*rawFile, func(), error) {
	if fd >= 0 {
		return &rawFile{fd: fd, name: path}, func() {}, nil
	}
	nfd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &rawFile{fd: nfd, name: path}, func() { syscall.Close(nfd) }, nil
}

// fsAttrs restores FAT attributes (on vfat and FUSE) and the read-only
// flag of a btrfs subvolume, as casync extract does; it runs last among a
// node's metadata. Where the file system cannot hold FAT attributes the
// archive sets, casync fails; camount warns and goes on.
//
// magic, if not 0, is the file system's type, known from the directory.
func (x *extractor) fsAttrs(path string, e *Entry, fd int, t uint32, magic int64) error {
	wantFAT := x.mask&WithFatAttrs != 0
	wantRO := t == ModeDir && x.mask&WithSubvolumeRO != 0 && e.Flags&WithSubvolume != 0
	if wantFAT && !wantRO && magic != 0 && magic != msdosMagic && magic != fuseMagic && FatAttrsFromFlags(e.Flags&x.mask) == 0 {
		return nil // nothing to set, and no FAT attributes to clear
	}
	if !wantFAT && !wantRO {
		return nil
	}
	f, done, err := openPath(path, fd)
	if err != nil {
		return err
	}
	defer done()
	var sfs syscall.Statfs_t
	if err := syscall.Fstatfs(f.fd, &sfs); err != nil {
		return &os.PathError{Op: "fstatfs", Path: path, Err: err}
	}
	magic = int64(sfs.Type)
	if wantFAT {
		value := uint32(FatAttrsFromFlags(e.Flags & x.mask))
		mask := uint32(FatAttrsFromFlags(x.mask))
		if magic == msdosMagic || magic == fuseMagic {
			var cur uint32
			if errno := ioctlPtr(f, fatIoctlGetAttributes, unsafe.Pointer(&cur)); errno != 0 {
				if !unsupported(errno) || value != 0 {
					return &os.PathError{Op: "FAT_IOCTL_GET_ATTRIBUTES", Path: path, Err: errno}
				}
			} else if nv := cur&^mask | value; nv != cur {
				if errno := ioctlPtr(f, fatIoctlSetAttributes, unsafe.Pointer(&nv)); errno != 0 {
					return &os.PathError{Op: "FAT_IOCTL_SET_ATTRIBUTES", Path: path, Err: errno}
				}
			}
		} else if value != 0 {
			x.log.Warn("cannot restore FAT attributes: not a FAT file system", "path", path)
		}
	}
	if wantRO {
		var st syscall.Stat_t
		if syscall.Fstat(f.fd, &st) != nil || magic != btrfsMagic || st.Ino != 256 {
			return nil // made as a plain directory (mkdir warned)
		}
		var cur uint64
		if errno := ioctlPtr(f, btrfsIocSubvolGetflags, unsafe.Pointer(&cur)); errno != 0 {
			return &os.PathError{Op: "BTRFS_IOC_SUBVOL_GETFLAGS", Path: path, Err: errno}
		}
		nv := cur &^ btrfsSubvolRdonly
		if e.Flags&WithSubvolumeRO != 0 {
			nv |= btrfsSubvolRdonly
		}
		if nv != cur {
			if errno := ioctlPtr(f, btrfsIocSubvolSetflags, unsafe.Pointer(&nv)); errno != 0 {
				return &os.PathError{Op: "BTRFS_IOC_SUBVOL_SETFLAGS", Path: path, Err: errno}
			}
		}
	}
	return nil
}

// mkSubvolume creates path as a btrfs subvolume, as casync extract does
// for a directory the archive marks as one. ok false (no error) when the
// file system cannot: the caller makes a plain directory.
func (x *extractor) mkSubvolume(path string) (ok bool, err error) {
	name := filepath.Base(path)
	if len(name) > btrfsPathNameMax {
		return false, nil
	}
	dfd, err := syscall.Open(filepath.Dir(path), syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return false, &os.PathError{Op: "open", Path: filepath.Dir(path), Err: err}
	}
	defer syscall.Close(dfd)
	var args [4096]byte // struct btrfs_ioctl_vol_args: __s64 fd; char name[4088]
	copy(args[8:], name)
	errno := ioctlPtr(&rawFile{fd: dfd, name: path}, btrfsIocSubvolCreate, unsafe.Pointer(&args[0]))
	switch {
	case errno == 0:
		if err := syscall.Chmod(path, 0o700); err != nil {
			return true, &os.PathError{Op: "chmod", Path: path, Err: err}
		}
		return true, nil
	case errno == syscall.EEXIST:
		return false, nil // the caller's mkdir sees what is there
	case unsupported(errno) || errno == syscall.EXDEV || errno == syscall.EPERM:
		x.subvolWarn.Do(func() {
			x.log.Warn("cannot create btrfs subvolumes here: making plain directories", "path", path, "err", errno)
		})
		return false, nil
	}
	return false, &os.PathError{Op: "BTRFS_IOC_SUBVOL_CREATE", Path: path, Err: errno}
}
