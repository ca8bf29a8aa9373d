package blockdev

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pmorjan/kmod"
	"golang.org/x/sys/unix"
)

// Kernel attach: the Linux nbd driver speaks only the transmission phase,
// over sockets handed to it by a program that did the handshake. AttachNBD
// makes a socketpair per connection, hands one end of each to the kernel
// (generic netlink "nbd" CONNECT, or the older ioctls) and serves the other
// end with a ServeFunc — for camount, Server.ServeTransmission.

// ErrNoKernelNBD is returned (wrapped, with the reason) when the running
// kernel has no NBD driver and it cannot be loaded: no nbd module, no
// module tree for this kernel, or not permitted.
var ErrNoKernelNBD = errors.New("the kernel has no NBD support")

// ErrNotNBD is returned by DetachNBD for a path that is not /dev/nbdN.
var ErrNotNBD = errors.New("not an NBD device")

// ServeFunc serves the transmission phase on nc until the kernel sends
// NBD_CMD_DISC or closes its end, or ctx is cancelled; it closes nc.
type ServeFunc func(ctx context.Context, nc net.Conn) error

// KernelOptions configure AttachNBD. The zero value is usable.
type KernelOptions struct {
	// Logger receives progress and errors; nil discards them.
	Logger *slog.Logger
	// BlockSize is the logical block size of the device, a power of two
	// in [512, page size]. 0: 512 (the sector size partition tables of
	// disk images assume).
	BlockSize int64
	// Connections is the number of sockets (served concurrently). 0: 1.
	Connections int
	// Method selects the attach interface: "" (netlink, falling back to
	// ioctl when the kernel has no nbd netlink family), "netlink" or
	// "ioctl".
	Method string
	// NoModuleLoad skips loading the nbd module.
	NoModuleLoad bool
	// ModuleParams are passed when the module is loaded. "": "nbds_max=16".
	ModuleParams string
	// Device is the /dev/nbdN to connect. "": the first free one. A
	// device in use gives an error wrapping ErrDeviceBusy.
	Device string
}

// ErrDeviceBusy is returned by AttachNBD when the KernelOptions.Device
// asked for is connected already.
var ErrDeviceBusy = errors.New("NBD device is in use")

// Linux nbd ioctls (_IO(0xab, n)); x/sys/unix does not define them.
const (
	nbdSetSock       = 0xab00
	nbdSetBlksize    = 0xab01
	nbdDoIt          = 0xab03
	nbdClearSock     = 0xab04
	nbdClearQue      = 0xab05
	nbdSetSizeBlocks = 0xab07
	nbdDisconnect    = 0xab08
	nbdSetFlags      = 0xab0a
)

// The nbd generic netlink family (include/uapi/linux/nbd-netlink.h).
const (
	nbdGenlName    = "nbd"
	nbdGenlVersion = 1

	nbdCmdConnect    = 1
	nbdCmdDisconnect = 2

	nbdAttrIndex          = 1
	nbdAttrSizeBytes      = 2
	nbdAttrBlockSizeBytes = 3
	nbdAttrServerFlags    = 5
	nbdAttrClientFlags    = 6
	nbdAttrSockets        = 7

	nbdSockItem = 1
	nbdSockFD   = 1
)

// Transmission flags the kernel is told the (camount) server has.
const (
	kflagHasFlags     = 1 << 0
	kflagReadOnly     = 1 << 1
	kflagSendFlush    = 1 << 2
	kflagCanMultiConn = 1 << 8
)

const kernelServerFlags = kflagHasFlags | kflagReadOnly | kflagSendFlush | kflagCanMultiConn

// NBDDevice is a /dev/nbdN served by this process.
type NBDDevice struct {
	index  int
	method string
	log    *slog.Logger

	cancel  context.CancelFunc
	serving sync.WaitGroup // serve goroutines
	done    chan struct{}  // closed when the device is disconnected
	doItErr chan error     // ioctl path: DO_IT's result

	detachOnce sync.Once
	detachErr  error
}

// Path returns the device node, /dev/nbdN.
func (d *NBDDevice) Path() string { return "/dev/nbd" + strconv.Itoa(d.index) }

// Index returns N of /dev/nbdN.
func (d *NBDDevice) Index() int { return d.index }

// Method returns how the device was attached: "netlink" or "ioctl".
func (d *NBDDevice) Method() string { return d.method }

// Done is closed when the device has been disconnected: by Detach, by
// another program (DetachNBD, nbd-client -d), or because serving ended.
func (d *NBDDevice) Done() <-chan struct{} { return d.done }

// LoadNBDModule makes sure the kernel's nbd driver is present, loading the
// module with params ("" means "nbds_max=16") if needed. A kernel without
// NBD gives an error wrapping ErrNoKernelNBD.
func LoadNBDModule(params string) error {
	if nbdPresent() {
		return nil
	}
	if params == "" {
		params = "nbds_max=16"
	}
	k, err := kmod.New()
	if err != nil {
		var u unix.Utsname
		unix.Uname(&u)
		rel := unix.ByteSliceToString(u.Release[:])
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: no module tree for kernel %s (/lib/modules/%s/modules.dep is missing)", ErrNoKernelNBD, rel, rel)
		}
		return fmt.Errorf("%w: loading module nbd: %v", ErrNoKernelNBD, err)
	}
	if err := k.Load("nbd", params, 0); err != nil {
		if errors.Is(err, kmod.ErrModuleNotFound) {
			return fmt.Errorf("%w: the module tree has no nbd module", ErrNoKernelNBD)
		}
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("%w: loading module nbd: %v (needs CAP_SYS_MODULE)", ErrNoKernelNBD, err)
		}
		return fmt.Errorf("%w: loading module nbd: %v", ErrNoKernelNBD, err)
	}
	if !nbdPresent() {
		return fmt.Errorf("%w: module nbd loaded but /sys/module/nbd is missing", ErrNoKernelNBD)
	}
	return nil
}

// nbdPresent reports whether the nbd driver is in the kernel (built in or
// loaded).
func nbdPresent() bool {
	_, err := os.Stat("/sys/module/nbd")
	return err == nil
}

// AttachNBD connects a free /dev/nbdN of the given size (bytes, a multiple
// of the block size) to serve, read-only. It returns once the kernel has
// the sockets and serving has started; the partition table is scanned
// before it returns. Call Detach to disconnect.
func AttachNBD(ctx context.Context, size int64, serve ServeFunc, opt KernelOptions) (*NBDDevice, error) {
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bs := opt.BlockSize
	if bs == 0 {
		bs = 512
	}
	if bs < 512 || bs > int64(os.Getpagesize()) || bs&(bs-1) != 0 {
		return nil, fmt.Errorf("nbd attach: block size %d is not a power of two in [512, %d]", bs, os.Getpagesize())
	}
	if size <= 0 || size%bs != 0 {
		return nil, fmt.Errorf("nbd attach: size %d is not a positive multiple of the block size %d", size, bs)
	}
	conns := max(opt.Connections, 1)
	want := -1
	if opt.Device != "" {
		n, err := NBDIndex(opt.Device)
		if err != nil {
			return nil, fmt.Errorf("nbd attach: %w", err)
		}
		want = n
	}
	if !opt.NoModuleLoad {
		if err := LoadNBDModule(opt.ModuleParams); err != nil {
			return nil, err
		}
	} else if !nbdPresent() {
		return nil, fmt.Errorf("%w: /sys/module/nbd is missing", ErrNoKernelNBD)
	}

	ctx, cancel := context.WithCancel(ctx)
	d := &NBDDevice{log: log, cancel: cancel, done: make(chan struct{})}
	var err error
	switch opt.Method {
	case "", "netlink":
		err = d.attachNetlink(ctx, size, bs, conns, want, serve)
		if opt.Method == "" && errors.Is(err, ErrNoGenlFamily) {
			log.Debug("nbd: no netlink interface, using ioctls", "err", err)
			err = d.attachIoctl(ctx, size, bs, want, serve)
		}
	case "ioctl":
		if conns > 1 {
			err = errors.New("nbd attach: the ioctl interface takes one connection")
			break
		}
		err = d.attachIoctl(ctx, size, bs, want, serve)
	default:
		err = fmt.Errorf("nbd attach: unknown method %q (netlink or ioctl)", opt.Method)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	log.Debug("nbd: attached", "device", d.Path(), "method", d.method, "size", size)
	// Opening the device makes the kernel scan its partition table (the
	// reads are served by the goroutines started above).
	if f, err := os.Open(d.Path()); err == nil {
		f.Close()
	} else {
		log.Warn("nbd: opening device for the partition scan", "device", d.Path(), "err", err)
	}
	return d, nil
}

// socketpair returns the kernel's end (an fd) and ours (a net.Conn).
func socketpair() (int, net.Conn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, fmt.Errorf("socketpair: %w", err)
	}
	f := os.NewFile(uintptr(fds[1]), "nbd-socket")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		unix.Close(fds[0])
		return -1, nil, fmt.Errorf("socketpair: %w", err)
	}
	return fds[0], nc, nil
}

// attachNetlink connects /dev/nbd<want>, or any free device if want < 0.
func (d *NBDDevice) attachNetlink(ctx context.Context, size, bs int64, conns, want int, serve ServeFunc) error {
	c, err := dialGenl()
	if err != nil {
		return err
	}
	defer c.Close()
	fam, err := c.family(nbdGenlName)
	if err != nil {
		return err
	}
	var kfds []int
	var ours []net.Conn
	defer func() {
		for _, fd := range kfds {
			unix.Close(fd) // the kernel holds its own reference
		}
	}()
	var items []nlattr
	for range conns {
		kfd, nc, err := socketpair()
		if err != nil {
			for _, nc := range ours {
				nc.Close()
			}
			return err
		}
		kfds = append(kfds, kfd)
		ours = append(ours, nc)
		items = append(items, attrNested(nbdSockItem, attrU32(nbdSockFD, uint32(kfd))))
	}
	attrs := []nlattr{
		attrU64(nbdAttrSizeBytes, uint64(size)),
		attrU64(nbdAttrBlockSizeBytes, uint64(bs)),
		attrU64(nbdAttrServerFlags, kernelServerFlags),
		attrU64(nbdAttrClientFlags, 0),
		attrNested(nbdAttrSockets, items...),
	}
	if want >= 0 {
		attrs = append(attrs, attrU32(nbdAttrIndex, uint32(want)))
	}
	replies, err := c.request(fam, nbdCmdConnect, nbdGenlVersion, attrs)
	if err != nil {
		for _, nc := range ours {
			nc.Close()
		}
		if want >= 0 && errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("nbd attach: /dev/nbd%d: %w", want, ErrDeviceBusy)
		}
		return fmt.Errorf("nbd attach: netlink CONNECT: %w", err)
	}
	d.index = -1
	for _, m := range replies {
		if v, ok := m[nbdAttrIndex]; ok && len(v) >= 4 {
			d.index = int(binary.NativeEndian.Uint32(v))
		}
	}
	d.method = "netlink"
	d.startServing(ctx, ours, serve)
	if d.index < 0 {
		d.Detach()
		return fmt.Errorf("nbd attach: netlink CONNECT reply has no device index (%d replies: %v)", len(replies), replies)
	}
	return nil
}

// startServing runs serve on each connection; when all have ended the
// device is marked done.
func (d *NBDDevice) startServing(ctx context.Context, conns []net.Conn, serve ServeFunc) {
	for _, nc := range conns {
		d.serving.Add(1)
		go func() {
			defer d.serving.Done()
			if err := serve(ctx, nc); err != nil && ctx.Err() == nil {
				d.log.Warn("nbd: serving the kernel ended", "device", d.Path(), "err", err)
			}
		}()
	}
	go func() {
		d.serving.Wait()
		if d.doItErr != nil { // ioctl path: wait for DO_IT to return
			if err := <-d.doItErr; err != nil {
				d.log.Debug("nbd: DO_IT returned", "device", d.Path(), "err", err)
			}
		}
		close(d.done)
	}()
}

// attachIoctl runs the whole ioctl setup and DO_IT on one locked OS
// thread: the kernel ties the setup to the calling task.
func (d *NBDDevice) attachIoctl(ctx context.Context, size, bs int64, want int, serve ServeFunc) error {
	kfd, nc, err := socketpair()
	if err != nil {
		return err
	}
	type result struct {
		index int
		fd    int
		err   error
	}
	ready := make(chan result, 1)
	d.doItErr = make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is not unlocked: it exits with the goroutine, so no
		// other goroutine runs on a thread the kernel associated with nbd,
		// and the signal mask set here dies with it. DO_IT waits
		// interruptibly: a signal landing on this thread (SIGTERM, SIGCHLD,
		// the runtime's own) would make the kernel shut the sockets down,
		// so every signal is blocked here.
		var all unix.Sigset_t
		for i := range all.Val {
			all.Val[i] = ^uint64(0)
		}
		unix.PthreadSigmask(unix.SIG_BLOCK, &all, nil)
		defer unix.Close(kfd)
		idx, fd, err := ioctlSetup(kfd, size, bs, want)
		ready <- result{idx, fd, err}
		if err != nil {
			return
		}
		// DO_IT blocks until disconnect.
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), nbdDoIt, 0)
		unix.Syscall(unix.SYS_IOCTL, uintptr(fd), nbdClearQue, 0)
		unix.Syscall(unix.SYS_IOCTL, uintptr(fd), nbdClearSock, 0)
		unix.Close(fd)
		if e != 0 {
			d.doItErr <- fmt.Errorf("NBD_DO_IT: %w", e)
		} else {
			d.doItErr <- nil
		}
	}()
	r := <-ready
	if r.err != nil {
		nc.Close()
		return r.err
	}
	d.index, d.method = r.index, "ioctl"
	d.startServing(ctx, []net.Conn{nc}, serve)
	// DO_IT has started once the kernel reports a pid for the device, and
	// the device is usable once it has its size (set after the pid).
	deadline := time.Now().Add(10 * time.Second)
	for !nbdConnected(d.index) || nbdSectors(d.index) != size/512 {
		if time.Now().After(deadline) {
			d.Detach()
			return fmt.Errorf("nbd attach: %s did not come up", d.Path())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// ioctlSetup finds a free /dev/nbdN (/dev/nbd<want> if want >= 0) and
// configures it with the socket.
func ioctlSetup(kfd int, size, bs int64, want int) (int, int, error) {
	for i := max(want, 0); ; i++ {
		path := "/dev/nbd" + strconv.Itoa(i)
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ENOENT) && want >= 0 {
				return 0, -1, fmt.Errorf("nbd attach: %s does not exist", path)
			}
			if errors.Is(err, unix.ENOENT) {
				if i == 0 {
					return 0, -1, fmt.Errorf("%w: %s does not exist", ErrNoKernelNBD, path)
				}
				return 0, -1, fmt.Errorf("nbd attach: no free device among /dev/nbd0…%d", i-1)
			}
			return 0, -1, osErr("open", path, err)
		}
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), nbdSetSock, uintptr(kfd)); e != 0 {
			unix.Close(fd)
			if (e == unix.EBUSY || e == unix.EINVAL) && want >= 0 {
				return 0, -1, fmt.Errorf("nbd attach: %s: %w", path, ErrDeviceBusy)
			}
			if e == unix.EBUSY || e == unix.EINVAL {
				continue // in use
			}
			return 0, -1, osErr("NBD_SET_SOCK", path, e)
		}
		steps := []struct {
			name string
			req  uintptr
			arg  uintptr
		}{
			{"NBD_SET_BLKSIZE", nbdSetBlksize, uintptr(bs)},
			{"NBD_SET_SIZE_BLOCKS", nbdSetSizeBlocks, uintptr(size / bs)},
			{"NBD_SET_FLAGS", nbdSetFlags, kernelServerFlags},
		}
		for _, s := range steps {
			if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), s.req, s.arg); e != 0 {
				unix.Syscall(unix.SYS_IOCTL, uintptr(fd), nbdClearSock, 0)
				unix.Close(fd)
				return 0, -1, osErr(s.name, path, e)
			}
		}
		if err := unix.IoctlSetPointerInt(fd, unix.BLKROSET, 1); err != nil {
			unix.Syscall(unix.SYS_IOCTL, uintptr(fd), nbdClearSock, 0)
			unix.Close(fd)
			return 0, -1, osErr("BLKROSET", path, err)
		}
		return i, fd, nil
	}
}

// nbdConnected reports whether /dev/nbdN is connected (the kernel shows
// the pid of its owner while it is).
func nbdConnected(index int) bool {
	_, err := os.Stat(fmt.Sprintf("/sys/block/nbd%d/pid", index))
	return err == nil
}

// nbdSectors returns the size of /dev/nbdN in 512-byte sectors (-1 if
// unknown).
func nbdSectors(index int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/sys/block/nbd%d/size", index))
	if err != nil {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// Detach disconnects the device: the kernel sends NBD_CMD_DISC and shuts
// its sockets down, serving ends, and the device is released. It waits up
// to 30 s for that, then closes the sockets itself. Safe to call more than
// once and after the device was disconnected elsewhere.
func (d *NBDDevice) Detach() error {
	d.detachOnce.Do(func() {
		select {
		case <-d.done:
		default:
			if err := disconnectNBD(d.index, d.method); err != nil {
				d.log.Debug("nbd: disconnect", "device", d.Path(), "err", err)
				d.detachErr = err
			}
		}
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
			d.log.Warn("nbd: the kernel did not end the connection; closing it", "device", d.Path())
			d.cancel()
			<-d.done
		}
		d.cancel()
		// A netlink device whose sockets closed before a DISCONNECT stays
		// configured (dead); make sure it is released.
		if d.method == "netlink" && nbdConnected(d.index) {
			if err := disconnectNBD(d.index, "netlink"); err != nil && d.detachErr == nil {
				d.detachErr = err
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for nbdConnected(d.index) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if nbdConnected(d.index) && d.detachErr == nil {
			d.detachErr = fmt.Errorf("nbd detach: %s is still connected", d.Path())
		}
		if d.detachErr != nil && !nbdConnected(d.index) {
			d.detachErr = nil // it went away anyway (e.g. disconnected elsewhere)
		}
	})
	return d.detachErr
}

// disconnectNBD asks the kernel to disconnect /dev/nbdN.
func disconnectNBD(index int, method string) error {
	if method != "ioctl" {
		c, err := dialGenl()
		if err == nil {
			defer c.Close()
			fam, ferr := c.family(nbdGenlName)
			if ferr == nil {
				_, err = c.request(fam, nbdCmdDisconnect, nbdGenlVersion, []nlattr{attrU32(nbdAttrIndex, uint32(index))})
				if err != nil {
					return fmt.Errorf("nbd detach /dev/nbd%d: netlink DISCONNECT: %w", index, err)
				}
				return nil
			}
			if method == "netlink" {
				return ferr
			}
		}
	}
	path := "/dev/nbd" + strconv.Itoa(index)
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return osErr("open", path, err)
	}
	defer unix.Close(fd)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), nbdDisconnect, 0); e != 0 {
		return osErr("NBD_DISCONNECT", path, e)
	}
	return nil
}

// NBDIndex parses N from /dev/nbdN (or nbdN); partitions are not devices.
func NBDIndex(path string) (int, error) {
	name := filepath.Base(path)
	rest, ok := strings.CutPrefix(name, "nbd")
	if !ok || rest == "" {
		return 0, fmt.Errorf("%s: %w", path, ErrNotNBD)
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s: %w", path, ErrNotNBD)
	}
	return n, nil
}

// DetachNBD disconnects /dev/nbdN, whoever serves it, and waits (up to
// 10 s) until the kernel has released it. A device that is not connected
// is an error.
func DetachNBD(path string) error {
	idx, err := NBDIndex(path)
	if err != nil {
		return err
	}
	if !nbdConnected(idx) {
		if _, err := os.Stat(fmt.Sprintf("/sys/block/nbd%d", idx)); err != nil {
			return fmt.Errorf("%s: no such NBD device", path)
		}
		return fmt.Errorf("%s: not connected", path)
	}
	if err := disconnectNBD(idx, ""); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for nbdConnected(idx) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: still connected 10 s after the disconnect request", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}
