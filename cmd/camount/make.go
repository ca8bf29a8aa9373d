package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
	"github.com/camount/camount/location"
	"github.com/camount/camount/publish"
)

// makeFlags are the flags of `camount make` for any kind of image.
type makeFlags struct {
	store       string
	chunkSize   string
	digest      string
	compression string

	progress *publish.Progress // counts stored chunks for the progress line; nil: none
}

func addMakeFlags(fs *flag.FlagSet) *makeFlags {
	o := &makeFlags{}
	fs.StringVar(&o.store, "store", "", "chunk `STORE` to write the chunks it lacks to: a directory, s3+http(s)://HOST/BUCKET[/PREFIX] or sftp://[USER@]HOST/PATH (default: $CASYNC_STORE, else default.castr beside the index)")
	fs.StringVar(&o.chunkSize, "chunk-size", "auto", "chunk sizes: `[MIN:]AVG[:MAX]` or auto (16K:64K:256K)")
	fs.StringVar(&o.digest, "digest", "sha512-256", "chunk digest: sha512-256 or sha256")
	fs.StringVar(&o.compression, "compression", "zstd", "chunk compression: zstd, xz or gzip")
	return o
}

// defaultLocalStore is casync's default store of a local index.
func defaultLocalStore(index string) string {
	return filepath.Join(filepath.Dir(index), "default.castr")
}

func init() {
	register(&command{
		name:    "make",
		args:    "[flags] OUT.caibx FILE|BLOCKDEV | OUT.caidx|OUT.catar DIR",
		summary: "create an image (blob index, tree index or archive) and its chunks, as casync make",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			mf := addMakeFlags(fs)
			tf := addTreeFlags(fs)
			makeCache := fs.String("make-cache", "", "casync's make --cache: keep in `DIR` where the chunks of the tree's files lay, so that a new make of the tree reuses those of unchanged files without reading them (.caidx only; make then prints no digest when it reused chunks)")
			makeCacheAuto := fs.Bool("make-cache-auto", false, "casync's make --cache-auto: --make-cache=DIR/.cacac inside the input tree (the cache is then part of the next make's archive, as with casync; exclude it with a .caexclude)")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 2 {
					return usagef("want an output image and an input")
				}
				out, in := args[0], args[1]
				if *makeCacheAuto && *makeCache == "" {
					*makeCache = filepath.Join(in, ".cacac")
					if err := fs.Set("make-cache", *makeCache); err != nil {
						return err
					}
				}
				// Every location is checked before any work (locations.go).
				out, err := parseLocal("OUT", out, location.Output)
				if err != nil {
					return err
				}
				if _, err := mf.storeLocation(out); err != nil {
					return err
				}
				if *makeCache != "" && kindOf(out) != kindTreeIndex {
					name := "--make-cache"
					if *makeCacheAuto {
						name = "--make-cache-auto"
					}
					return usagef("%s: only a tree index (.caidx) is made with a make cache, as with casync", name)
				}
				switch kindOf(out) {
				case kindBlobIndex:
					return makeBlob(ctx, e, mf, out, in)
				case kindTreeIndex, kindArchive:
					return makeTree(ctx, e, tf, out, in)
				}
				return usagef("%s: output must end in .caibx, .caidx or .catar", out)
			}
		},
	})
}

// makeBlob chunks a file or block device into a .caibx.
func makeBlob(ctx context.Context, e *env, mf *makeFlags, out, in string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a directory: use an OUT.caidx to make a tree image", in)
	}
	r, size := blockInput(e, f, st, sizeOf(f, st))
	pub := &publish.Progress{}
	if p := newProgress(e, "make", size, nil, storedDetail(pub)); p != nil {
		defer p.done()
		r = p.reader(r)
		mf.progress = pub
	}
	// A pipe or FIFO that stalls must not hold off SIGINT/SIGTERM: its
	// read ends at the cancellation (regular files ignore deadlines).
	stop := context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Now()) })
	defer stop()
	id, err := writeIndex(ctx, e, r, out, mf, 0)
	if err != nil && ctx.Err() != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return ctx.Err()
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, id)
	return nil
}

// sizeOf returns the size of a regular file or block device, or -1.
func sizeOf(f *os.File, st os.FileInfo) int64 {
	if st.Mode().IsRegular() {
		return st.Size()
	}
	if n, err := f.Seek(0, io.SeekEnd); err == nil {
		f.Seek(0, io.SeekStart)
		return n
	}
	return -1
}

// writeIndex chunks the stream r, stores each chunk the store lacks in the
// store (publish.Make), writes the index to out and returns the digest of
// the whole stream (what casync make prints). flags holds the feature
// flags to record (for a tree, the archive's; 0 for a blob).
func writeIndex(ctx context.Context, e *env, r io.Reader, out string, mf *makeFlags, flags uint64) (chunker.ID, error) {
	var zero chunker.ID
	p, err := chunker.ParseParams(mf.chunkSize)
	if err != nil {
		return zero, err
	}
	d, err := chunker.ParseDigest(mf.digest)
	if err != nil {
		return zero, err
	}
	comp, err := fetch.ParseCompression(mf.compression)
	if err != nil {
		return zero, err
	}
	loc, err := mf.storeLocation(out)
	if err != nil {
		return zero, err
	}
	store, err := openWriteStore(e, nil, loc)
	if err != nil {
		return zero, err
	}
	res, err := publish.Make(ctx, r, publish.MakeOptions{Params: p, Digest: d, Compression: comp, Flags: flags,
		Store: store, Progress: mf.progress, Log: e.log})
	if err != nil {
		return zero, err
	}
	if err := writeFileAtomic(out, func(w io.Writer) error { _, err := res.Index.WriteTo(w); return err }); err != nil {
		return zero, err
	}
	return res.Digest, nil
}

// writeFileAtomic writes a file (an index) next to its final name with
// write, then renames it into place: a reader never sees half of it.
func writeFileAtomic(path string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// progress prints a live byte count on stderr when it is a terminal: the
// bytes done (added with add, or read from count), of total when known,
// the rate, and detail's text.
type progress struct {
	e      *env
	verb   string
	total  int64
	n      atomic.Int64
	count  func() int64  // the bytes done, when not counted with add
	detail func() string // appended to the line, when set
	stop   chan struct{}
	wg     sync.WaitGroup
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func newProgress(e *env, verb string, total int64, count func() int64, detail func() string) *progress {
	if !isTerminal(e.stderr) {
		return nil
	}
	p := &progress{e: e, verb: verb, total: total, count: count, detail: detail, stop: make(chan struct{})}
	if p.count == nil {
		p.count = p.n.Load
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-p.stop:
				fmt.Fprintf(e.stderr, "\r\033[K")
				return
			case <-t.C:
				n := p.count()
				rate := float64(n) / time.Since(start).Seconds() / (1 << 20)
				more := ""
				if p.detail != nil {
					more = p.detail()
				}
				if p.total > 0 {
					fmt.Fprintf(e.stderr, "\r\033[K%s: %5.1f%% %s of %s, %.0f MiB/s%s", verb, 100*float64(n)/float64(p.total), human(n), human(p.total), rate, more)
				} else {
					fmt.Fprintf(e.stderr, "\r\033[K%s: %s, %.0f MiB/s%s", verb, human(n), rate, more)
				}
			}
		}
	}()
	return p
}

// storedDetail tells how many new chunks a make or push has stored.
func storedDetail(pub *publish.Progress) func() string {
	return func() string {
		return fmt.Sprintf(", %d new chunks (%s)", pub.Stored.Load(), human(pub.Uploaded.Load()))
	}
}

func (p *progress) add(n int64) {
	if p != nil {
		p.n.Add(n)
	}
}

func (p *progress) done() {
	if p != nil {
		close(p.stop)
		p.wg.Wait()
	}
}

type countingReader struct {
	r io.Reader
	p *progress
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.add(int64(n))
	return n, err
}

func (p *progress) reader(r io.Reader) io.Reader { return countingReader{r, p} }

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
