package seed

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync/atomic"

	"github.com/camount/camount/chunker"
)

// FileSeed is a regular file or block device chunked with the target's
// parameters, as casync does with --seed. Its bytes are read twice: once
// by the scan (chunking and hashing), once when a chunk is used.
type FileSeed struct {
	path string
	f    *os.File
	p    Params
	// cache, if set, remembers scans (see ScanCache).
	cache *ScanCache
	// front is how far the whole scan has reported chunks (Scanned).
	front atomic.Int64
	// guide, if set (Guide), makes the whole scan a guided one (guided.go).
	guide   *guide
	guessed atomic.Int64 // bytes reported by guesses that held (Guessed)
}

// Scanned returns the seed offset up to which the whole scan (Scan) has
// reported every chunk; nearby scans below it are not needed.
func (s *FileSeed) Scanned() int64 { return s.front.Load() }

// OpenFile opens a file seed.
func OpenFile(path string, p Params) (*FileSeed, error) {
	if err := p.Chunk.Check(); err != nil {
		return nil, fmt.Errorf("seed %s: %w", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("seed %s: %w", path, err)
	}
	return &FileSeed{path: path, f: f, p: p}, nil
}

func (s *FileSeed) String() string { return s.path }

// File returns the open seed file.
func (s *FileSeed) File() *os.File { return s.f }

// Size returns the seed's size (-1 if it cannot be had).
func (s *FileSeed) Size() int64 {
	n, err := s.f.Seek(0, io.SeekEnd)
	if err != nil {
		return -1
	}
	return n
}

// Close closes the seed file.
func (s *FileSeed) Close() error { return s.f.Close() }

// scanBatch is the bytes of chunks hashed together by one worker.
const scanBatch = 4 << 20

type scanJob struct {
	buf    []byte
	offs   []int64 // seed offset of each chunk
	sizes  []int
	ids    []chunker.ID
	done   chan struct{}
	readAt int64
}

// Scan chunks the seed and reports each chunk. Chunking runs on one core,
// hashing on the others; memory stays at a few batches of 4 MiB.
func (s *FileSeed) Scan(ctx context.Context, found Found) error {
	if s.cache != nil {
		if ok := s.cache.load(s, found); ok {
			s.front.Store(1 << 62)
			return nil
		}
	}
	var rec *cacheWriter
	if s.cache != nil {
		rec = s.cache.writer(s)
	}
	report := func(id chunker.ID, l Location) {
		if rec != nil {
			rec.add(id, l.Off, l.Size)
		}
		found(id, l)
	}
	var err error
	if s.guide != nil {
		err = s.scanGuided(ctx, report)
	} else {
		err = s.scan(ctx, 0, 1<<62, report)
	}
	if rec != nil {
		rec.finish(err == nil)
	}
	return err
}

// ScanRange implements RangeScanner: it chunks the seed's bytes [off,
// off+n) on their own (a chunk cut only by the end of the range is not
// reported).
func (s *FileSeed) ScanRange(ctx context.Context, off, n int64, found Found) error {
	return s.scan(ctx, off, n, found)
}

// scan chunks [start, start+length) of the seed; the last chunk is
// reported only if it ends at the end of the file.
//
// Under a Background context the scan chunks and hashes on one nice-19
// thread, except while a reader waits for it (the Set's boost): then it
// chunks on a normal thread and hashes on every other core too, since the
// reader is held up by the scan itself.
func (s *FileSeed) scan(ctx context.Context, start, length int64, found Found) error {
	whole := start == 0 && length == 1<<62
	ck, err := chunker.NewChunker(&ctxReader{ctx: ctx, r: io.NewSectionReader(s.f, start, length)}, s.p.Chunk)
	if err != nil {
		return fmt.Errorf("seed %s: %w", s.path, err)
	}
	workers := max(1, runtime.GOMAXPROCS(0)-1)
	jobs := make(chan *scanJob, workers)
	order := make(chan *scanJob, 2*workers+2)
	// Batch buffers are reused: a batch is sent before a chunk would take
	// it past scanBatch, so one never grows past its first capacity.
	bufCap := scanBatch + int(s.p.Chunk.Max)
	free := make(chan []byte, 2*workers+4)
	newBuf := func() []byte {
		select {
		case b := <-free:
			return b[:0]
		default:
			return make([]byte, 0, bufCap)
		}
	}
	waitHash := startPool(ctx, workers, jobs, func(j *scanJob) {
		datas := make([][]byte, 0, len(j.sizes))
		o := 0
		for _, n := range j.sizes {
			datas = append(datas, j.buf[o:o+n])
			o += n
		}
		j.ids = make([]chunker.ID, len(datas))
		s.p.Digest.SumBatch(j.ids, datas)
		close(j.done)
	})
	// The reporter hands results out in seed order.
	repDone := make(chan struct{})
	go func() {
		defer close(repDone)
		for j := range order {
			<-j.done
			o := 0
			for i, id := range j.ids {
				n := j.sizes[i]
				// Data: the bytes just hashed to id (see Location.Data).
				found(id, Location{R: s.f, Off: j.offs[i], Size: int64(n), File: s.f, Data: j.buf[o : o+n : o+n]})
				o += n
			}
			if whole && len(j.offs) > 0 {
				k := len(j.offs) - 1
				s.front.Store(j.offs[k] + int64(j.sizes[k]))
			}
			select {
			case free <- j.buf:
			default:
			}
		}
	}()
	off := start
	j := &scanJob{done: make(chan struct{}), buf: newBuf()}
	send := func() {
		if len(j.sizes) == 0 {
			return
		}
		order <- j
		jobs <- j
		j = &scanJob{done: make(chan struct{}), buf: newBuf()}
	}
	var rerr error
	eof := false
	// step chunks about one batch.
	step := func() {
		for {
			b, err := ck.Next()
			if err == io.EOF {
				// The last chunk was cut by the end of the range, not by the
				// content, unless the range ends at the end of the file.
				if k := len(j.sizes) - 1; k >= 0 && off-start == length {
					j.buf = j.buf[:len(j.buf)-j.sizes[k]]
					j.offs, j.sizes = j.offs[:k], j.sizes[:k]
				}
				eof = true
				return
			}
			if err != nil {
				rerr = err
				return
			}
			// Send a full batch before adding to it, so that the last chunk is
			// still held at the end of the range.
			full := len(j.buf) >= scanBatch
			if full {
				send()
			}
			j.buf = append(j.buf, b...)
			j.offs = append(j.offs, off)
			j.sizes = append(j.sizes, len(b))
			off += int64(len(b))
			if full {
				return
			}
		}
	}
	// The chunking runs on a new goroutine, which is not locked to the
	// caller's lowered thread, so that it can chunk at normal priority
	// when boosted (the executor).
	chunked := make(chan struct{})
	go func() {
		defer close(chunked)
		ex := newExecutor(ctx)
		defer ex.stop()
		for !eof && rerr == nil {
			ex.do(step)
		}
		send()
		close(jobs)
		close(order)
	}()
	<-chunked
	waitHash()
	<-repDone
	if rerr != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("seed %s: reading at about offset %d: %w", s.path, off, rerr)
	}
	return ctx.Err()
}

// ctxReader stops reading when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func isIndexPath(p string) bool {
	return strings.HasSuffix(p, ".caibx") || strings.HasSuffix(p, ".caidx")
}

// FromFile makes a file seed of an open file, named name in errors; the
// seed owns f (Close closes it).
func FromFile(f *os.File, name string, p Params) *FileSeed {
	return &FileSeed{path: name, f: f, p: p}
}
