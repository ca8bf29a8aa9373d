package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/camount/camount/blockdev"
	"github.com/camount/camount/fetch"
	"github.com/camount/camount/location"
)

const defaultNBDListen = "tcp://127.0.0.1:10809"

func init() {
	register(&command{
		name:    "nbd",
		args:    "[--listen=unix:///PATH | tcp://127.0.0.1:10809] [--name=NAME]... [--max-connections=N] [--store=DIR|URL] INDEX.caibx...",
		summary: "serve .caibx images read-only over NBD (qemu, nbdinfo, nbdcopy, nbdfuse, nbd-client)",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			bf := addBlobFlags(fs)
			addSeedFlags(fs, bf, false)
			pf := addPrefetchFlags(fs)
			listen := fs.String("listen", defaultNBDListen, "where to listen: `unix:///PATH` or tcp://HOST:PORT (port 0 picks a free one); addresses other than loopback only when given explicitly")
			var names stringList
			fs.Var(&names, "name", "export `NAME` of the corresponding INDEX (repeatable; default: the index base name without .caibx)")
			maxConns := fs.Int("max-connections", 0, "refuse clients beyond `N` simultaneous connections (0: no limit)")
			tf := addNBDTLSFlags(fs)
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) == 0 {
					return usagef("want at least one .caibx index")
				}
				if len(names) > len(args) {
					return usagef("%d --name flags for %d indexes", len(names), len(args))
				}
				if *maxConns < 0 {
					return usagef("--max-connections must be 0 or more")
				}
				if err := pf.check(); err != nil {
					return err
				}
				for i, index := range args {
					var err error
					if args[i], err = bf.checkReadLocations(index); err != nil {
						return err
					}
				}
				o := blockdev.Options{Logger: e.log, MaxConnections: *maxConns}
				if err := tf.apply(&o); err != nil {
					return err
				}
				return runNBD(ctx, e, bf, pf, *listen, names, o, args)
			}
		},
	})
}

func runNBD(ctx context.Context, e *env, bf *blobFlags, pf *prefetchFlags, listen string, names []string, o blockdev.Options, indexes []string) error {
	network, addr, err := parseListen(listen)
	if err != nil {
		return usagef("--listen: %v", err)
	}
	var exports []blockdev.Export
	seen := map[string]string{}
	for i, index := range indexes {
		if kindOf(index) != kindBlobIndex {
			return usagef("%s: nbd serves block images: want a .caibx index", index)
		}
		name := indexName(index, ".caibx")
		if i < len(names) {
			name = names[i]
		}
		if prev, dup := seen[name]; dup {
			return usagef("export name %q is used for both %s and %s (give --name for each)", name, prev, index)
		}
		seen[name] = index
		blob, x, err := openBlob(ctx, e, index, bf)
		if err != nil {
			return err
		}
		defer blob.Scheduler().Close()
		if len(indexes) > 1 && (pf.recordProfile != "" || pf.prefetchProfile != "" || pf.statsJSON != "") {
			return usagef("--record-profile, --prefetch-profile and --stats-json take one image")
		}
		stopServices, err := startBlobServices(ctx, e, blob, bf, pf)
		if err != nil {
			return err
		}
		defer stopServices()
		exports = append(exports, blockdev.Export{
			Name:        name,
			Description: fmt.Sprintf("casync image %s (%d bytes, %d chunks)", location.Base(index), blob.Size(), len(x.Chunks)),
			Source:      &nbdBlob{b: blob, avg: int64(x.Avg)},
		})
	}
	// Keep the heap near the chunk caches (one per export), as mount does
	// (the binary's text adds ~17 MiB of RSS to Go's memory).
	if os.Getenv("GOMEMLIMIT") == "" && bf.cacheSize > 0 {
		debug.SetMemoryLimit(int64(bf.cacheSize)*int64(len(exports)) + 40<<20)
	}
	srv, err := blockdev.NewServer(exports, o)
	if err != nil {
		return err
	}
	l, err := listenNBD(network, addr)
	if err != nil {
		return err
	}
	if w := nbdListenWarning(l.Addr(), o); w != "" {
		e.log.Warn(w, "addr", l.Addr())
	}
	for _, x := range exports {
		uri := nbdURI(network, l.Addr(), x.Name)
		if o.TLSEnabled() {
			uri = strings.Replace(uri, "nbd", "nbds", 1) // nbds://, nbds+unix://
		}
		fmt.Fprintln(e.stdout, uri)
	}
	where := l.Addr().String()
	fmt.Fprintf(e.stderr, "camount nbd: ready, serving %d export(s) on %s:%s (read-only); interrupt to stop\n", len(exports), network, where)
	notifyReady(e)
	err = srv.Serve(ctx, l)
	if ctx.Err() != nil {
		e.log.Debug("nbd: shut down")
		return nil
	}
	return err
}

// parseListen splits a --listen value into a network and an address.
func parseListen(s string) (network, addr string, err error) {
	if sc := location.Scheme(s); sc != "" && sc != "unix" && sc != "tcp" {
		return "", "", fmt.Errorf("%q: unknown scheme %s:// (want unix:///PATH or tcp://HOST:PORT)", location.Redact(s), sc)
	}
	switch {
	case strings.HasPrefix(s, "unix://"):
		network, addr = "unix", strings.TrimPrefix(s, "unix://")
	case strings.HasPrefix(s, "unix:"):
		network, addr = "unix", strings.TrimPrefix(s, "unix:")
	case strings.HasPrefix(s, "tcp://"):
		network, addr = "tcp", strings.TrimPrefix(s, "tcp://")
	case strings.HasPrefix(s, "/") || strings.HasPrefix(s, "./"):
		network, addr = "unix", s
	case strings.Contains(s, ":"):
		network, addr = "tcp", s
	default:
		return "", "", fmt.Errorf("%q: want unix:///PATH or tcp://HOST:PORT", s)
	}
	if addr == "" {
		return "", "", fmt.Errorf("%q: empty address", s)
	}
	if network == "tcp" {
		addr = strings.TrimSuffix(addr, "/")
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			// no port given: the NBD port
			host, port = strings.Trim(addr, "[]"), "10809"
		}
		if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			return "", "", fmt.Errorf("%q: bad port %q", s, port)
		}
		if host == "" {
			return "", "", fmt.Errorf("%q: give a host (127.0.0.1 for loopback; 0.0.0.0 to listen everywhere)", s)
		}
		addr = net.JoinHostPort(host, port)
	}
	return network, addr, nil
}

// listenNBD listens, replacing a stale unix socket left by a dead server
// (but not one somebody still answers on).
func listenNBD(network, addr string) (net.Listener, error) {
	l, err := net.Listen(network, addr)
	if err == nil || network != "unix" {
		if err != nil {
			return nil, fmt.Errorf("nbd: listen on %s: %w", addr, err)
		}
		return l, nil
	}
	if st, serr := os.Lstat(addr); serr == nil && st.Mode()&os.ModeSocket == 0 {
		return nil, fmt.Errorf("nbd: listen on %s: it exists and is not a socket but a %s; remove it or choose another path", addr, fileKind(st.Mode()))
	}
	if st, serr := os.Lstat(addr); serr == nil && st.Mode()&os.ModeSocket != 0 {
		if c, derr := net.DialTimeout("unix", addr, time.Second); derr == nil {
			c.Close()
			return nil, fmt.Errorf("nbd: %s: another server is listening there", addr)
		}
		if rerr := os.Remove(addr); rerr == nil {
			if l, err = net.Listen(network, addr); err == nil {
				return l, nil
			}
		}
	}
	return nil, fmt.Errorf("nbd: listen on %s: %w", addr, err)
}

// nbdURI is the NBD URI (the libnbd/qemu syntax) of an export.
func nbdURI(network string, a net.Addr, name string) string {
	if network == "unix" {
		// %20, not "+", for spaces: NBD URI parsers do not decode "+"
		sock := strings.NewReplacer("+", "%20", "%2F", "/").Replace(url.QueryEscape(a.String()))
		return "nbd+unix:///" + url.PathEscape(name) + "?socket=" + sock
	}
	host := a.String()
	if ta, ok := a.(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		// listening everywhere: name this machine rather than [::]
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		host = net.JoinHostPort(h, strconv.Itoa(ta.Port))
	}
	return "nbd://" + host + "/" + url.PathEscape(name)
}

// notifyReady tells systemd (Type=notify) that the exports are served.
func notifyReady(e *env) {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return
	}
	if strings.HasPrefix(sock, "@") {
		sock = "\x00" + sock[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		e.log.Warn("nbd: cannot notify readiness", "socket", os.Getenv("NOTIFY_SOCKET"), "err", err)
		return
	}
	defer c.Close()
	if _, err := c.Write([]byte("READY=1\nSTATUS=serving NBD exports\n")); err != nil {
		e.log.Warn("nbd: cannot notify readiness", "err", err)
	}
}

// nbdBlob adapts a *fetch.Blob to blockdev's Source and its optional
// interfaces: zero chunks become base:allocation holes, NBD_CMD_CACHE
// queues the chunks at Readahead priority, the average chunk size is the
// preferred block size, each connection reads through its own fetch.Stream
// (sequential reads start readahead), and reads of cached chunks are sent
// straight from the chunk cache without a copy.
type nbdBlob struct {
	b   *fetch.Blob
	avg int64
}

var (
	_ blockdev.Source      = (*nbdBlob)(nil)
	_ blockdev.Extenter    = (*nbdBlob)(nil)
	_ blockdev.Prefetcher  = (*nbdBlob)(nil)
	_ blockdev.BlockSizer  = (*nbdBlob)(nil)
	_ blockdev.Slicer      = (*nbdBlob)(nil)
	_ blockdev.ConnSourcer = (*nbdBlob)(nil)
	_ blockdev.Slicer      = (*nbdStream)(nil)
)

func (s *nbdBlob) Size() int64 { return s.b.Size() }

func (s *nbdBlob) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return s.b.ReadAtContext(ctx, p, off)
}

func (s *nbdBlob) Extents(off, n int64) ([]blockdev.Extent, error) {
	fe := s.b.Extents(off, n)
	out := make([]blockdev.Extent, len(fe))
	for i, x := range fe {
		out[i] = blockdev.Extent{Offset: x.Off, Length: x.Len, Zero: x.Zero}
	}
	return out, nil
}

func (s *nbdBlob) Prefetch(off, n int64) { s.b.Prefetch(off, n, fetch.Readahead) }

func (s *nbdBlob) PreferredBlockSize() int64 { return s.avg }

// Slices returns the cached (verified, immutable) chunk bytes covering
// [off, off+n); it declines when a chunk is not cached, so that fetches go
// through ReadAtContext, which fetches all of a read's chunks in parallel.
func (s *nbdBlob) Slices(ctx context.Context, dst [][]byte, off int64, n int) ([][]byte, bool, error) {
	x := s.b.Index()
	end := off + int64(n)
	first := x.Find(off)
	if first < 0 {
		return dst, false, nil
	}
	last := first
	for ; last < len(x.Chunks) && int64(x.Chunks[last].Start) < end; last++ {
		if !s.b.IsZero(last) && !s.b.Scheduler().Cached(x.Chunks[last].ID) {
			return dst, false, nil
		}
	}
	for i := first; i < last; i++ {
		data, err := s.b.Chunk(ctx, i, fetch.Foreground)
		if err != nil {
			return dst, false, err
		}
		c := x.Chunks[i]
		lo := max(off, int64(c.Start)) - int64(c.Start)
		hi := min(end, int64(c.Start+c.Size)) - int64(c.Start)
		dst = append(dst, data[lo:hi])
	}
	return dst, true, nil
}

// ConnSource gives each NBD connection its own readahead stream.
func (s *nbdBlob) ConnSource() blockdev.Source {
	return &nbdStream{nbdBlob: s, st: s.b.NewStream()}
}

type nbdStream struct {
	*nbdBlob
	st *fetch.Stream
}

func (s *nbdStream) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return s.st.ReadAtContext(ctx, p, off)
}

// Slices serves cached chunks without a copy, except while the stream has
// a readahead window open: then reads go through the stream, so that it
// sees the sequential run continue and keeps its window ahead of it.
func (s *nbdStream) Slices(ctx context.Context, dst [][]byte, off int64, n int) ([][]byte, bool, error) {
	if s.st.Window() > 0 {
		return dst, false, nil
	}
	return s.nbdBlob.Slices(ctx, dst, off, n)
}

func (s *nbdStream) Close() error { return s.st.Close() }
