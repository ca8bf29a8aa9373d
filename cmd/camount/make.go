package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
	"github.com/camount/camount/location"
)

// makeFlags are the flags of `camount make` for any kind of image.
type makeFlags struct {
	store       string
	chunkSize   string
	digest      string
	compression string
}

func addMakeFlags(fs *flag.FlagSet) *makeFlags {
	o := &makeFlags{}
	fs.StringVar(&o.store, "store", "", "chunk store `DIR` to write chunks to (default: $CASYNC_STORE, else default.castr beside the index)")
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
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 2 {
					return usagef("want an output image and an input")
				}
				out, in := args[0], args[1]
				// Every location is checked before any work (locations.go).
				out, err := parseLocal("OUT", out, location.Output)
				if err != nil {
					return err
				}
				if _, err := mf.storeLocation(out); err != nil {
					return err
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
	var r io.Reader = f
	if p := newProgress(e, "make", sizeOf(f, st)); p != nil {
		defer p.done()
		r = p.reader(f)
	}
	id, err := writeIndex(ctx, e, r, out, mf, 0)
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

// writeIndex chunks the stream r, stores each new chunk compressed in the
// store, writes the index to out and returns the digest of the whole stream
// (what casync make prints). flags holds the feature flags to record (for a
// tree, the archive's; 0 for a blob: only the digest and exclude bits are
// added). Hashing and compression run on all cores; chunking, the index
// entries and the stream digest run in order, each on its own goroutine.
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
	if flags == 0 {
		flags = chunker.FlagExcludeNodump | chunker.FlagExcludeFile
		if d == chunker.SHA512_256 {
			flags |= chunker.FlagSHA512_256
		}
	}
	loc, err := mf.storeLocation(out)
	if err != nil {
		return zero, err
	}
	if !loc.IsLocal() {
		return zero, fmt.Errorf("chunk store %s: no writer for %s:// stores", loc, loc.Scheme)
	}
	store := fetch.NewLocalStore(loc.Path)
	if err := os.MkdirAll(store.Dir, 0o755); err != nil {
		return zero, fmt.Errorf("chunk store: %w", err)
	}
	src, err := chunkSource(r, p)
	if err != nil {
		return zero, err
	}
	defer src.release()
	x := &chunker.Index{Flags: flags, Min: p.Min, Avg: p.Avg, Max: p.Max}

	type job struct {
		data []byte
		id   chunker.ID
		err  error
		done chan struct{}
	}
	workers := runtime.GOMAXPROCS(0)
	// Chunks go to the workers in batches of consecutive chunks; a worker
	// hashes a batch together (chunker.SumBatch: eight side by side where
	// the CPU allows), then compresses and stores its chunks one by one.
	// The collector's queue holds more chunks than all batches in flight,
	// so the batch it waits on has always been handed out.
	const batch = 32
	jobs := make(chan []*job, 2*workers)
	ordered := make(chan *job, 4*batch*workers)
	var known sync.Map // chunk IDs stored (or found in the store) during this run
	var stored atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte // compressed chunk, reused: Put copies it out
			var hashed []*job
			var datas [][]byte
			var ids []chunker.ID
			for js := range jobs {
				hashed, datas = hashed[:0], datas[:0]
				for _, j := range js {
					if z := zeroID(d, j.data); z != nil {
						j.id = *z
					} else {
						hashed = append(hashed, j)
						datas = append(datas, j.data)
					}
				}
				ids = slices.Grow(ids[:0], len(datas))[:len(datas)]
				d.SumBatch(ids, datas)
				for k, j := range hashed {
					j.id = ids[k]
				}
				clear(datas) // no references to chunk data between batches
				clear(hashed)
				for _, j := range js {
					if _, dup := known.LoadOrStore(j.id, true); !dup && !keepStored(store, j.id) {
						b, err := fetch.AppendCompress(buf[:0], comp, j.data)
						if err == nil {
							buf = b
							err = store.Put(j.id, b)
						}
						if err != nil {
							j.err = fmt.Errorf("storing chunk %s: %w", j.id, err)
							known.Delete(j.id)
						} else {
							stored.Add(1)
						}
					}
					close(j.done)
				}
			}
		}()
	}
	// The stream digest runs on its own goroutine, decoupled from chunking:
	// over zero runs the workers have almost nothing to do while the digest
	// still hashes every byte, so tying the two together left a core idle.
	// A mapped input is hashed straight from the mapping; a read stream
	// through a deep queue of its chunks.
	sum := d.New()
	digested := make(chan struct{})
	var digestQ chan []byte
	if src.whole != nil {
		go func() {
			defer close(digested)
			const step = 1 << 20
			for off := 0; off < len(src.whole); off += step {
				if ctx.Err() != nil {
					return
				}
				end := min(off+step, len(src.whole))
				sum.Write(src.whole[off:end])
				src.consumed(1, uint64(end))
			}
		}()
	} else {
		digestQ = make(chan []byte, 256)
		go func() {
			defer close(digested)
			for b := range digestQ {
				sum.Write(b)
			}
		}()
	}
	// The collector takes chunks in stream order for the index entries.
	collected := make(chan error, 1)
	go func() {
		var off uint64
		var firstErr error
		for j := range ordered {
			<-j.done
			if j.err != nil && firstErr == nil {
				firstErr = j.err
				cancel()
			}
			x.Chunks = append(x.Chunks, chunker.Chunk{ID: j.id, Start: off, Size: uint64(len(j.data))})
			off += uint64(len(j.data))
			src.consumed(0, off)
		}
		collected <- firstErr
	}()
	var readErr error
	pending := make([]*job, 0, batch)
	for {
		if ctx.Err() != nil {
			break
		}
		b, err := src.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
		j := &job{data: b, done: make(chan struct{})}
		ordered <- j
		if pending = append(pending, j); len(pending) == batch {
			jobs <- pending
			pending = make([]*job, 0, batch)
		}
		if digestQ != nil {
			digestQ <- b
		}
	}
	if digestQ != nil {
		close(digestQ)
	}
	if len(pending) > 0 {
		jobs <- pending
	}
	close(jobs)
	close(ordered)
	wg.Wait()
	<-digested
	if err := <-collected; err != nil {
		return zero, err
	}
	if readErr != nil {
		return zero, fmt.Errorf("reading input: %w", readErr)
	}
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	if err := writeFileAtomic(out, x); err != nil {
		return zero, err
	}
	e.log.Debug("made index", "index", out, "chunks", len(x.Chunks), "new", stored.Load(), "store", store.Dir)
	var id chunker.ID
	copy(id[:], sum.Sum(nil))
	return id, nil
}

// writeFileAtomic writes an index next to its final name and renames it.
func writeFileAtomic(path string, x *chunker.Index) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := x.WriteTo(tmp); err != nil {
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

// progress prints a live byte count on stderr when it is a terminal.
type progress struct {
	e     *env
	verb  string
	total int64
	n     atomic.Int64
	stop  chan struct{}
	wg    sync.WaitGroup
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func newProgress(e *env, verb string, total int64) *progress {
	if !isTerminal(e.stderr) {
		return nil
	}
	p := &progress{e: e, verb: verb, total: total, stop: make(chan struct{})}
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
				n := p.n.Load()
				rate := float64(n) / time.Since(start).Seconds() / (1 << 20)
				if p.total > 0 {
					fmt.Fprintf(e.stderr, "\r\033[K%s: %5.1f%% %s of %s, %.0f MiB/s", verb, 100*float64(n)/float64(p.total), human(n), human(p.total), rate)
				} else {
					fmt.Fprintf(e.stderr, "\r\033[K%s: %s, %.0f MiB/s", verb, human(n), rate)
				}
			}
		}
	}()
	return p
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

// source yields the chunks of an input stream in order.
type source struct {
	// next returns the next chunk, a slice the caller may keep, or io.EOF.
	next func() ([]byte, error)
	// whole is the entire input when it is memory-mapped, else nil.
	whole []byte
	// consumed(reader, off) says that reader (0: the chunk collector, 1:
	// the stream digest) no longer needs the stream before off; once both
	// are past a point, the mapped pages before it are dropped, so a large
	// input does not pile up in the process's resident set. Safe for
	// concurrent use.
	consumed func(reader int, off uint64)
	release  func()
}

// chunkSource returns the chunks of r. A regular file is memory-mapped and
// split in place (no read copies); anything else is read through a Chunker.
func chunkSource(r io.Reader, p chunker.Params) (*source, error) {
	sp, err := chunker.NewSplitter(p)
	if err != nil {
		return nil, err
	}
	if f, ok := r.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() && st.Size() > 0 && st.Size() < 1<<46 {
			if m, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED); err == nil {
				syscall.Madvise(m, syscall.MADV_SEQUENTIAL)
				rest := m
				src := &source{whole: m, release: func() { syscall.Munmap(m) }}
				src.next = func() ([]byte, error) {
					if len(rest) == 0 {
						return nil, io.EOF
					}
					n := sp.Cut(rest)
					if n == 0 {
						n = len(rest)
					}
					b := rest[:n:n]
					rest = rest[n:]
					return b, nil
				}
				const step = 64 << 20
				var mu sync.Mutex
				var offs [2]uint64
				var dropped uint64
				src.consumed = func(reader int, off uint64) {
					mu.Lock()
					defer mu.Unlock()
					offs[reader] = off
					if low := min(offs[0], offs[1]); low-dropped >= step {
						end := low &^ (step - 1)
						syscall.Madvise(m[dropped:end], syscall.MADV_DONTNEED)
						dropped = end
					}
				}
				return src, nil
			}
		}
	}
	ck, err := chunker.NewChunker(r, p)
	if err != nil {
		return nil, err
	}
	return &source{
		next: func() ([]byte, error) {
			b, err := ck.Next()
			if err != nil {
				return nil, err
			}
			return append([]byte(nil), b...), nil
		},
		consumed: func(int, uint64) {},
		release:  func() {},
	}, nil
}

var (
	zeroIDs   sync.Map // (digest, size) -> *chunker.ID
	zeroBytes = make([]byte, chunker.DefaultMax)
)

type zeroKey struct {
	d    chunker.Digest
	size int
}

// zeroID returns the ID of an all-zero chunk without hashing it again, or
// nil if b holds a non-zero byte. Disk images are often mostly zeros.
func zeroID(d chunker.Digest, b []byte) *chunker.ID {
	if len(b) > len(zeroBytes) || !bytes.Equal(b, zeroBytes[:len(b)]) {
		return nil
	}
	k := zeroKey{d, len(b)}
	if v, ok := zeroIDs.Load(k); ok {
		return v.(*chunker.ID)
	}
	id := d.Sum(b)
	zeroIDs.Store(k, &id)
	return &id
}
