package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/camount/camount/blockdev"
	"github.com/camount/camount/fetch"
	"github.com/camount/camount/location"
	"github.com/camount/camount/vfs"
)

func init() {
	register(&command{
		name:    "mkdev",
		args:    "[--via=auto|nbd|loop] [--device=/dev/nbdN] [--connections=N] [--store=DIR|URL]... [--cache=DIR] [--prefetch=…] INDEX.caibx|IMAGE [NODE]",
		summary: "make a read-only kernel block device (/dev/nbdN, else a loop device) of a .caibx image or a plain image file; stays serving it",
		setup: func(fl *flag.FlagSet) func(context.Context, *env, []string) error {
			bf := addBlobFlags(fl)
			addSeedFlags(fl, bf, false)
			pf := addPrefetchFlags(fl)
			via := fl.String("via", "auto", "`HOW`: nbd (/dev/nbdN, loading the nbd module), loop (a loop device over a private FUSE mount), or auto (nbd where the kernel has it, else loop)")
			conns := fl.Int("connections", 1, "NBD connections (sockets) the kernel uses, `N` ≥ 1")
			method := fl.String("nbd-method", "", "NBD attach interface `HOW`: netlink or ioctl (default: netlink, ioctl where the kernel lacks it)")
			device := fl.String("device", "", "the NBD device `/dev/nbdN` to connect (default: the first free one); also given as NODE, as casync does")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 1 && len(args) != 2 {
					return usagef("want one .caibx INDEX, and optionally a NODE (/dev/nbdN, a /dev name or a symlink path)")
				}
				if err := setMkdevDevice(*device, via); err != nil {
					return err
				}
				if len(args) == 2 {
					if err := setMkdevNode(args[1], via); err != nil {
						return err
					}
					defer removeMkdevNode(e)
				}
				plain := isPlainBlob(args[0]) // mkdev_blob.go
				if kindOf(args[0]) != kindBlobIndex && !plain {
					return usagef("%s: mkdev makes block devices of block images: want a .caibx index (or a plain image file, --what=blob)", args[0])
				}
				switch *via {
				case "auto", "nbd", "loop":
				default:
					return usagef("--via must be auto, nbd or loop, not %q", *via)
				}
				if *conns < 1 || *conns > 64 {
					return usagef("--connections must be 1…64")
				}
				if *method != "" && *method != "netlink" && *method != "ioctl" {
					return usagef("--nbd-method must be netlink or ioctl, not %q", *method)
				}
				if err := pf.check(); err != nil {
					return err
				}
				if plain {
					return runMkdevPlain(ctx, e, args[0], *via, *method, *conns)
				}
				index, err := bf.checkReadLocations(args[0])
				if err != nil {
					return err
				}
				return runMkdev(ctx, e, bf, pf, index, *via, *method, *conns)
			}
		},
	})
	register(&command{
		name:    "rmdev",
		args:    "DEVICE",
		summary: "detach a block device made by 'camount mkdev' (/dev/nbdN or /dev/loopN); the serving process then exits",
		setup: func(fl *flag.FlagSet) func(context.Context, *env, []string) error {
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 1 {
					return usagef("want one DEVICE (/dev/nbdN or /dev/loopN)")
				}
				return runRmdev(e, args[0])
			}
		},
	})
}

func runMkdev(ctx context.Context, e *env, bf *blobFlags, pf *prefetchFlags, index, via, method string, conns int) error {
	if !hasCapSysAdmin() {
		return errNeedsRoot
	}
	blob, x, err := openBlob(ctx, e, index, bf)
	if err != nil {
		return err
	}
	defer blob.Scheduler().Close()
	// Keep the heap near the chunk cache, as mount and nbd do (issue 15.5).
	if os.Getenv("GOMEMLIMIT") == "" && bf.cacheSize > 0 {
		debug.SetMemoryLimit(int64(bf.cacheSize) + 40<<20)
	}
	stopServices, err := startBlobServices(ctx, e, blob, bf, pf)
	if err != nil {
		return err
	}
	defer stopServices()
	// Serving outlives the signal that ends the verb: detaching needs the
	// server to answer the kernel until it lets go.
	serveCtx := context.WithoutCancel(ctx)
	src := &nbdBlob{b: blob, avg: int64(x.Avg)}
	if via != "loop" {
		err := mkdevNBD(ctx, serveCtx, e, index, src, method, conns)
		if err == nil || via == "nbd" || !errors.Is(err, blockdev.ErrNoKernelNBD) {
			return err
		}
		e.log.Info("mkdev: no NBD in this kernel; using a loop device over FUSE", "reason", err)
	}
	return mkdevLoop(ctx, e, index, blob)
}

// mkdevReady prints the device path on stdout and a ready line on stderr.
func mkdevReady(e *env, dev, index, how string, size int64) {
	makeMkdevNode(e, dev)
	fmt.Fprintln(e.stdout, dev)
	if f, ok := e.stdout.(*os.File); ok {
		f.Sync()
	}
	fmt.Fprintf(e.stderr, "camount mkdev: ready, %s is %s (%d bytes, read-only) via %s; stop with Ctrl-C or 'camount rmdev %s'\n", dev, location.Redact(index), size, how, dev)
	if err := sdNotify("READY=1\nSTATUS=serving " + dev + "\n"); err != nil {
		e.log.Warn("mkdev: cannot notify readiness", "err", err)
	}
}

func mkdevNBD(ctx, serveCtx context.Context, e *env, index string, src blockdev.Source, method string, conns int) error {
	srv, err := blockdev.NewServer([]blockdev.Export{{Name: "", Source: src}}, blockdev.Options{Logger: e.log})
	if err != nil {
		return err
	}
	size, _ := srv.ExportSize("")
	d, err := blockdev.AttachNBD(serveCtx, size, func(ctx context.Context, nc net.Conn) error {
		return srv.ServeTransmission(ctx, nc, "")
	}, blockdev.KernelOptions{Logger: e.log, Connections: conns, Method: method, Device: mkdevDevice})
	if err != nil {
		return err
	}
	mkdevReady(e, d.Path(), index, "nbd "+d.Method(), size)
	select {
	case <-ctx.Done():
		sdNotify("STOPPING=1\n")
		e.log.Debug("mkdev: detaching", "device", d.Path())
		warnInUse(e, d.Path())
	case <-d.Done():
		e.log.Info("mkdev: device disconnected", "device", d.Path())
	}
	if err := d.Detach(); err != nil {
		return fmt.Errorf("detaching %s: %w", d.Path(), err)
	}
	return nil
}

// paddedSource reads a source padded with zeros to a multiple of 512
// bytes, as a loop device (like NBD) only shows whole sectors.
type paddedSource struct {
	src  vfs.Source
	size int64
}

func (p *paddedSource) Size() int64 { return p.size }

func (p *paddedSource) ReadAtContext(ctx context.Context, b []byte, off int64) (int, error) {
	n := 0
	if real := p.src.Size(); off < real {
		want := b[:min(int64(len(b)), real-off)]
		m, err := p.src.ReadAtContext(ctx, want, off)
		n += m
		if m < len(want) {
			if err == nil {
				err = fmt.Errorf("short read at %d", off+int64(m))
			}
			return n, err
		}
	}
	for off+int64(n) < p.size && n < len(b) {
		b[n] = 0
		n++
	}
	return n, nil
}

func mkdevLoop(ctx context.Context, e *env, index string, blob *fetch.Blob) error {
	dir, err := os.MkdirTemp("", "camount-mkdev-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	name := indexName(index, ".caibx")
	if name == "" || strings.HasPrefix(name, ".") || strings.ContainsAny(name, "/\x00") {
		name = "image"
	}
	size := (blob.Size() + 511) &^ 511
	var src vfs.Source = blob
	if size != blob.Size() {
		src = &paddedSource{src: blob, size: size}
	}
	root := vfs.NewBlob(src, vfs.BlobOptions{Name: name, Perm: 0o400, Log: e.log})
	srv, err := vfs.Mount(dir, root, vfs.MountOptions{FsName: indexSource(index), Log: e.log})
	if err != nil {
		return err
	}
	served := make(chan struct{})
	go func() { srv.Wait(); close(served) }()
	unmount := func() {
		if err := srv.Unmount(); err != nil {
			// The loop device still holds the file: the mount goes away
			// when it lets go, which this process cannot wait for.
			e.log.Warn("mkdev: unmount failed; detaching lazily", "dir", dir, "err", err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
			return
		}
		select {
		case <-served:
		case <-time.After(5 * time.Second):
		}
	}
	d, err := blockdev.AttachLoop(filepath.Join(dir, name), blockdev.LoopOptions{PartScan: true})
	if err != nil {
		unmount()
		return err
	}
	mkdevReady(e, d.Path(), index, "loop over FUSE", size)
	select {
	case <-ctx.Done():
		sdNotify("STOPPING=1\n")
		warnInUse(e, d.Path())
	case <-served:
		e.log.Warn("mkdev: the FUSE mount behind the loop device went away", "dir", dir)
	}
	derr := d.Detach(2 * time.Second)
	if derr != nil && ctx.Err() != nil {
		// Still open elsewhere (a mount, a reader, a loop device on top):
		// the kernel releases it at the last close. Keep serving until
		// then, unless asked again.
		e.log.Warn("mkdev: the device is still in use; serving until it is released (signal again to stop now, making its reads fail)", "device", d.Path())
		again := make(chan os.Signal, 1)
		signal.Notify(again, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(again)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
	wait:
		for {
			select {
			case <-again:
				break wait
			case <-served:
				break wait
			case <-tick.C:
				if derr = d.Detach(0); derr == nil {
					break wait
				}
			}
		}
	}
	unmount()
	if derr != nil {
		return fmt.Errorf("%w; reads from it now fail", derr)
	}
	return nil
}

// runRmdev detaches a device made by mkdev. An NBD device is disconnected
// through the kernel (its server sees the disconnect and exits); a loop
// device is detached by signalling the mkdev process that holds it.
func runRmdev(e *env, dev string) error {
	if real, err := filepath.EvalSymlinks(dev); err == nil {
		dev = real
	}
	if _, err := blockdev.NBDIndex(dev); err == nil {
		return blockdev.DetachNBD(dev)
	}
	idx, err := blockdev.LoopIndex(dev)
	if err != nil {
		return fmt.Errorf("%s: not a device made by camount mkdev (want /dev/nbdN or /dev/loopN)", dev)
	}
	backing := blockdev.LoopAttachedTo(idx)
	if backing == "" {
		return fmt.Errorf("%s is not attached", dev)
	}
	pids := mkdevOwners("/dev/loop" + strconv.Itoa(idx))
	if len(pids) == 0 {
		return fmt.Errorf("%s (backing file %s) is not served by a camount mkdev process; use losetup -d", dev, backing)
	}
	for _, pid := range pids {
		e.log.Debug("rmdev: signalling", "pid", pid)
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signalling camount mkdev (pid %d) of %s: %w", pid, dev, err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for blockdev.LoopAttachedTo(idx) == backing {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is still attached 20 s after signalling pid %v (is it in use?)", dev, pids)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// mkdevOwners returns the pids of camount mkdev processes (other than this
// one) that hold dev open.
func mkdevOwners(dev string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + ent.Name() + "/cmdline")
		if err != nil {
			continue
		}
		argv := strings.Split(string(cmdline), "\x00")
		if len(argv) < 2 || argv[1] != "mkdev" {
			continue
		}
		fds, _ := os.ReadDir("/proc/" + ent.Name() + "/fd")
		for _, fd := range fds {
			if l, err := os.Readlink("/proc/" + ent.Name() + "/fd/" + fd.Name()); err == nil && l == dev {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// warnInUse warns when the device or one of its partitions is mounted:
// detaching it makes reads there fail.
func warnInUse(e *env, dev string) {
	name := filepath.Base(dev)
	devs := map[string]string{} // major:minor → node
	if b, err := os.ReadFile("/sys/block/" + name + "/dev"); err == nil {
		devs[strings.TrimSpace(string(b))] = dev
	}
	parts, _ := filepath.Glob("/sys/block/" + name + "/" + name + "p*/dev")
	for _, p := range parts {
		if b, err := os.ReadFile(p); err == nil {
			devs[strings.TrimSpace(string(b))] = "/dev/" + filepath.Base(filepath.Dir(p))
		}
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	for _, l := range strings.Split(string(mi), "\n") {
		// id parent major:minor root mountpoint ...
		f := strings.Fields(l)
		if len(f) > 4 && devs[f[2]] != "" {
			e.log.Warn("mkdev: detaching a device that is still mounted; reads there now fail", "device", devs[f[2]], "mountpoint", unescapeMount(f[4]))
		}
	}
}
