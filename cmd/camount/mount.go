package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"

	"github.com/camount/camount/catar"
	"github.com/camount/camount/fetch"
	"github.com/camount/camount/location"
	"github.com/camount/camount/vfs"
)

func init() {
	register(&command{
		name:    "mount",
		args:    "[--store=DIR]... [--cache-size=BYTES] [--name=NAME] [--mkdir=yes|no] [--allow-other] [--daemon [--log-file=FILE]] INDEX MOUNTPOINT",
		summary: "mount a .caidx/.catar as its file tree, or a .caibx as one file, read-only (FUSE)",
		setup: func(fl *flag.FlagSet) func(context.Context, *env, []string) error {
			bf := addBlobFlags(fl)
			addSeedFlags(fl, bf, false)
			pf := addPrefetchFlags(fl)
			name := fl.String("name", "", "`NAME` of the file a .caibx appears as (default: the index name without .caibx)")
			mkdir := fl.String("mkdir", "yes", "create a missing MOUNTPOINT directory: yes or no")
			allowOther := fl.Bool("allow-other", false, "let other users access the mount (FUSE allow_other; permissions are still checked)")
			fuseDebug := fl.Bool("fuse-debug", false, "log every FUSE request (with --verbose)")
			cpuProfile := fl.String("cpuprofile", "", "write a Go CPU profile of the mount's life to `FILE` (diagnostics)")
			memProfile := fl.String("memprofile", "", "write a Go heap profile to `FILE` when unmounting (diagnostics)")
			daemon := fl.Bool("daemon", false, "return once mounted, leaving the mount served by a background process (stop it with camount umount)")
			logFile := fl.String("log-file", "", "with --daemon: append the background process's log to `FILE` (default: discarded)")
			uid := addUIDShiftFlags(fl)
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 2 {
					return usagef("want INDEX and MOUNTPOINT")
				}
				shift, err := uid.get()
				if err != nil {
					return err
				}
				if *mkdir != "yes" && *mkdir != "no" {
					return usagef("--mkdir must be yes or no, not %q", *mkdir)
				}
				if err := pf.check(); err != nil {
					return err
				}
				if *logFile != "" && !*daemon {
					return usagef("--log-file applies with --daemon only")
				}
				// Every location is checked before any work (locations.go).
				index, err := bf.checkReadLocations(args[0])
				if err != nil {
					return err
				}
				mnt, err := parseLocal("MOUNTPOINT", args[1], location.Output)
				if err != nil {
					return err
				}
				for _, f := range []struct{ flag, value string }{{"--cpuprofile", *cpuProfile}, {"--memprofile", *memProfile}, {"--log-file", *logFile}} {
					if _, err := checkOutputFile(f.flag, f.value); err != nil {
						return err
					}
				}
				if *daemon && !isDaemonChild() {
					return daemonize(e)
				}
				return runMount(ctx, e, mountArgs{
					index: index, mnt: mnt, blob: bf, prefetch: pf, name: *name,
					mkdir: *mkdir == "yes", allowOther: *allowOther, debug: *fuseDebug,
					cpuProfile: *cpuProfile, memProfile: *memProfile,
					daemon: *daemon, logFile: *logFile, uidShift: shift,
				})
			}
		},
	})
	register(&command{
		name:    "umount",
		args:    "[--lazy] MOUNTPOINT",
		summary: "unmount a camount mount (the mounting process then exits)",
		setup: func(fl *flag.FlagSet) func(context.Context, *env, []string) error {
			lazy := fl.Bool("lazy", false, "detach now even if files are open (umount -l)")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 1 {
					return usagef("want MOUNTPOINT")
				}
				return runUmount(e, args[0], *lazy)
			}
		},
	})
}

type mountArgs struct {
	index, mnt, name  string
	blob              *blobFlags
	prefetch          *prefetchFlags
	mkdir, allowOther bool
	debug             bool
	cpuProfile        string
	memProfile        string
	daemon            bool   // the background child of --daemon
	logFile           string // --log-file
	uidShift          *catar.UIDShift
}

func runMount(ctx context.Context, e *env, a mountArgs) (err error) {
	kind := kindOf(a.index)
	if kind == kindUnknown {
		return usagef("%s: INDEX must end in .caibx, .caidx or .catar", a.index)
	}
	if a.name != "" && kind != kindBlobIndex {
		return usagef("--name applies to .caibx images only")
	}
	created := missingDirs(a.mnt)
	mnt, err := prepareMountpoint(a.mnt, a.mkdir)
	if err != nil {
		return err
	}
	// A mount that fails takes away the directories it made (locations.go).
	defer func() {
		if err != nil {
			removeDirs(created)
		}
	}()
	mtime := time.Now()           // an index URL (remote.go) has no local file
	if !location.IsURL(a.index) { // http(s), s3, sftp
		ist, err := os.Stat(a.index)
		if err != nil {
			return err
		}
		mtime = ist.ModTime()
	}

	var root fs.InodeEmbedder
	var closeFn func()
	switch kind {
	case kindBlobIndex:
		blob, _, err := openBlob(ctx, e, a.index, a.blob)
		if err != nil {
			return err
		}
		stopServices, err := startBlobServices(ctx, e, blob, a.blob, a.prefetch)
		if err != nil {
			blob.Scheduler().Close()
			return err
		}
		closeFn = func() { stopServices(); blob.Scheduler().Close() }
		name := a.name
		if name == "" {
			name = indexName(a.index, ".caibx")
		}
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
			return usagef("--name %q is not a valid file name", name)
		}
		root = vfs.NewBlob(blob, vfs.BlobOptions{
			Name: name, UID: uint32(os.Getuid()), GID: uint32(os.Getgid()),
			MTime: mtime, Log: e.log,
		})
	case kindTreeIndex, kindArchive:
		var src vfs.Source
		if kind == kindTreeIndex {
			// --cache-size is the memory budget of the mount: a tree mount
			// gives 60% of it to verified chunks and leaves the rest for
			// the parsed entries of the directories the kernel holds
			// (about 1 KiB each, with go-fuse's inodes) and for the
			// garbage collector's headroom. A walk needs the chunk cache
			// only to hold what it decodes ahead of the reader (directory
			// crawl, readahead); with 3/4 a cold tar of the corpus
			// (cache 256 MiB) ran 38 collections costing ~1.1 s CPU, with
			// 60% 24 costing ~0.45 s, for 0.3% more chunks fetched twice.
			bf := *a.blob
			if bf.cacheSize > 0 {
				bf.cacheSize = bf.cacheSize * 60 / 100
			}
			blob, _, err := openBlob(ctx, e, a.index, &bf)
			if err != nil {
				return err
			}
			stopServices, err := startBlobServices(ctx, e, blob, a.blob, a.prefetch)
			if err != nil {
				blob.Scheduler().Close()
				return err
			}
			closeFn = func() { stopServices(); blob.Scheduler().Close() }
			src = treeSource{b: blob}
			if os.Getenv("GOMAXPROCS") == "" {
				// One P more than the scheduler's decode workers
				// (GOMAXPROCS when it was made): while decoding
				// ahead of a walk keeps them all busy, a FUSE request
				// still gets a P at once and the kernel shares the
				// cores, instead of waiting for a decode to yield.
				// Cold find and tar of the corpus: ~10% faster.
				runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
			}
		} else {
			f, err := os.Open(a.index)
			if err != nil {
				return err
			}
			ist, err := f.Stat()
			if err != nil {
				f.Close()
				return err
			}
			closeFn = func() { f.Close() }
			src = &fileSource{f: f, size: ist.Size()}
		}
		arc, err := catar.Open(vfs.ReaderAt(context.Background(), src), src.Size())
		if err != nil {
			closeFn()
			return fmt.Errorf("%s: %w", a.index, err)
		}
		root = vfs.NewTree(arc, src, vfs.TreeOptions{Log: e.log, UIDShift: a.uidShift})
	}
	defer closeFn()

	// Keep the heap near the chunk cache: without a limit the garbage
	// collector lets the heap grow to twice the live cache. The limit
	// counts Go's memory only; the binary's text adds ~17 MiB of RSS, so
	// cache + 40 MiB keeps peak RSS within cache + 64 MiB (issue 15.5).
	if os.Getenv("GOMEMLIMIT") == "" && a.blob.cacheSize > 0 && kind != kindArchive {
		debug.SetMemoryLimit(int64(a.blob.cacheSize) + 40<<20)
	}
	// /proc/mounts is world-readable: no password, no signed query.
	srv, err := vfs.Mount(mnt, root, vfs.MountOptions{
		FsName: indexSource(a.index), AllowOther: a.allowOther, Debug: a.debug, Log: e.log,
	})
	if err != nil {
		return err
	}
	if a.cpuProfile != "" {
		pf, err := os.Create(a.cpuProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if a.memProfile != "" {
		defer func() {
			if f, err := os.Create(a.memProfile); err == nil {
				pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	served := make(chan struct{})
	go func() { srv.Wait(); close(served) }()

	fmt.Fprintf(e.stdout, "camount: mounted %s on %s (read-only); stop with Ctrl-C or 'camount umount %s'\n", location.Redact(a.index), mnt, mnt)
	if f, ok := e.stdout.(*os.File); ok {
		f.Sync()
	}
	if err := sdNotify("READY=1\nSTATUS=mounted " + mnt + "\n"); err != nil {
		e.log.Warn("mount: cannot notify readiness", "err", err)
	}
	if a.daemon {
		if err := daemonReady(a.logFile); err != nil {
			e.log.Error("mount: --daemon", "err", err)
		}
	}

	select {
	case <-served: // unmounted from outside (camount umount, fusermount3 -u)
		e.log.Debug("mount: unmounted", "mountpoint", mnt)
		return nil
	case <-ctx.Done():
	}
	sdNotify("STOPPING=1\n")
	if err := srv.Unmount(); err != nil {
		e.log.Warn("mount: unmount failed; detaching lazily (open files keep working until this process exits)", "mountpoint", mnt, "err", err)
		if err := detach(mnt, true); err != nil {
			return fmt.Errorf("unmounting %s: %w", mnt, err)
		}
	}
	select {
	case <-served:
	case <-time.After(time.Second): // lazily detached with files still open
	}
	return nil
}

// treeSource is the blob of a .caidx as a vfs.Source that prefetches the
// records a directory listing is about to read, at Readahead priority. It
// deliberately takes no per-open hints (vfs.HintedSource): a fetch.Stream
// starts a sequential run only at blob offset 0, which a file inside the
// archive never reads, so hints would buy nothing, while without them vfs
// saves the OPEN and RELEASE round trips of every file. Files still get
// the kernel's readahead (max_read sized requests, each fetching its
// chunks in parallel).
type treeSource struct{ b *fetch.Blob }

func (s treeSource) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return s.b.ReadAtContext(ctx, p, off)
}

// ReadAtBackground reads at Readahead priority, one chunk after the other
// (vfs lists directories ahead of the reader through it, after
// prefetching what the listing reads).
func (s treeSource) ReadAtBackground(ctx context.Context, p []byte, off int64) (int, error) {
	size := s.b.Size()
	switch {
	case off < 0:
		return 0, fmt.Errorf("%s: negative offset %d", s.b.Name(), off)
	case off >= size && len(p) == 0:
		return 0, nil
	case off >= size:
		return 0, io.EOF
	}
	var eof error
	want := len(p)
	if int64(want) > size-off {
		want, eof = int(size-off), io.EOF
	}
	idx := s.b.Index()
	n := 0
	for i := idx.Find(off); n < want; i++ {
		data, err := s.b.Chunk(ctx, i, fetch.Readahead)
		if err != nil {
			return n, err
		}
		lo := uint64(0)
		if n == 0 {
			lo = uint64(off) - idx.Chunks[i].Start
		}
		n += copy(p[n:want], data[lo:])
	}
	return n, eof
}

func (s treeSource) Size() int64                { return s.b.Size() }
func (s treeSource) PrefetchRange(off, n int64) { s.b.Prefetch(off, n, fetch.Readahead) }

func (s treeSource) PrefetchUrgent(off, n int64) { s.b.Prefetch(off, n, fetch.Foreground) }

// fileSource reads a local .catar file.
type fileSource struct {
	f    *os.File
	size int64
}

func (s *fileSource) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return s.f.ReadAt(p, off)
}

func (s *fileSource) Size() int64 { return s.size }

// prepareMountpoint returns the absolute mountpoint path, creating the
// directory if allowed, and refuses one that is already a mount.
func prepareMountpoint(p string, mkdir bool) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return "", fmt.Errorf("mountpoint %s is a dead FUSE mount (transport endpoint is not connected); clear it with 'camount umount %s'", abs, abs)
	case errors.Is(err, os.ErrNotExist):
		if !mkdir {
			return "", fmt.Errorf("mountpoint %s does not exist (--mkdir=no)", abs)
		}
		if err := os.MkdirAll(abs, 0755); err != nil {
			return "", fmt.Errorf("creating mountpoint: %w", err)
		}
	case err != nil:
		return "", fmt.Errorf("mountpoint %s: %w", abs, err)
	case !st.IsDir():
		return "", fmt.Errorf("mountpoint %s is not a directory", abs)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", abs, err)
	}
	m, err := findMount(real)
	if err != nil {
		return "", err
	}
	if m != nil {
		if f, err := os.Open(real); err == nil {
			_, err = f.Readdirnames(1)
			f.Close()
			if errors.Is(err, syscall.ENOTCONN) {
				return "", fmt.Errorf("mountpoint %s is a dead FUSE mount (%s from %s: its server is gone); clear it with 'camount umount %s'", real, m.fstype, m.source, real)
			}
		} else if errors.Is(err, syscall.ENOTCONN) {
			return "", fmt.Errorf("mountpoint %s is a dead FUSE mount (%s from %s: its server is gone); clear it with 'camount umount %s'", real, m.fstype, m.source, real)
		}
		return "", fmt.Errorf("mountpoint %s is already a mount point (%s from %s); unmount it first or choose another directory", real, m.fstype, m.source)
	}
	return real, nil
}

type mountInfo struct{ point, fstype, source string }

// findMount returns the topmost mount at path from /proc/self/mountinfo,
// or nil.
func findMount(path string) (*mountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMountinfo(f, path)
}

func parseMountinfo(r io.Reader, path string) (*mountInfo, error) {
	var found *mountInfo
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		if unescapeMount(fields[4]) != path {
			continue
		}
		m := &mountInfo{point: path}
		for i := 6; i < len(fields)-2; i++ {
			if fields[i] == "-" {
				m.fstype, m.source = fields[i+1], unescapeMount(fields[i+2])
				break
			}
		}
		found = m
	}
	return found, sc.Err()
}

// unescapeMount undoes the octal escapes (\040 etc.) of mountinfo paths.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func runUmount(e *env, p string, lazy bool) error {
	abs, err := filepath.Abs(p)
	if err != nil {
		return err
	}
	real := abs
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		real = r
	}
	m, err := findMount(real)
	if err != nil {
		return err
	}
	if m == nil && real != abs {
		m, err = findMount(abs)
		if err != nil {
			return err
		}
		real = abs
	}
	if m == nil {
		return fmt.Errorf("%s is not mounted", abs)
	}
	if m.fstype != "fuse.camount" {
		return fmt.Errorf("%s is a %s mount, not a camount mount; use umount(8)", real, m.fstype)
	}
	return detach(real, lazy)
}

// detach unmounts a FUSE mount: directly as root, else with fusermount3.
func detach(mnt string, lazy bool) error {
	if os.Geteuid() == 0 {
		flags := 0
		if lazy {
			flags = syscall.MNT_DETACH
		}
		if err := syscall.Unmount(mnt, flags); err != nil {
			if errors.Is(err, syscall.EBUSY) {
				return fmt.Errorf("unmounting %s: %w (files are open; --lazy detaches anyway)", mnt, err)
			}
			return fmt.Errorf("unmounting %s: %w", mnt, err)
		}
		return nil
	}
	args := []string{"-u"}
	if lazy {
		args = append(args, "-z")
	}
	out, err := exec.Command("fusermount3", append(args, mnt)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 -u %s: %v: %s", mnt, err, strings.TrimSpace(string(out)))
	}
	return nil
}
