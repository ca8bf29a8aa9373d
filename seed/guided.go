package seed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/camount/camount/chunker"
	"golang.org/x/sys/unix"
)

// A guided scan is the whole scan of a file seed (Scan) when the target
// index is known (Guide): it reports exactly the chunks the plain scan
// reports (the seed chunked from its start, as casync does), but mostly
// without running the chunker.
//
// Why that holds: the chunker starts afresh at every cut, and where it cuts
// next depends only on the bytes from the last cut to the next one. So if
// the seed has a cut at a, and its bytes [a, a+n) equal a target chunk of n
// bytes (one cut by content, not by the end of the target), the seed's
// next cut is a+n and its chunk there has that chunk's ID. An image update
// mostly leaves data where it was (or moves it by one distance, delta): at
// a cut a the scan guesses the target chunk that starts at a+delta, and the
// ones after it, reads the seed's bytes for them and hashes them (which it
// must anyway, to verify them). A guess whose hash differs is where the
// seed's content differs: the chunker takes over from there, until a cut
// lines up with a target chunk again (at the old distance, or at the
// distance of a chunk the chunker found elsewhere in the target).
//
// Guesses run ahead of their verification (hashing on every core); an
// epoch number drops the guesses made past one that failed. Every chunk
// reported was hashed from the seed's bytes, as in the plain scan.

// Guide gives a file seed the target it is scanned for (Set.Start does),
// so that its whole scan is guided. zero flags the target's zero chunks
// (nil: none).
func (s *FileSeed) Guide(x *chunker.Index, zero []bool) {
	if x == nil || len(x.Chunks) == 0 || x.Min != s.p.Chunk.Min || x.Avg != s.p.Chunk.Avg || x.Max != s.p.Chunk.Max || x.Digest() != s.p.Digest {
		return
	}
	s.guide = &guide{x: x, zero: zero}
}

// Guessed returns the bytes a guided scan reported without cutting them
// (its guesses that held).
func (s *FileSeed) Guessed() int64 { return s.guessed.Load() }

type guide struct {
	x    *chunker.Index
	zero []bool
	once sync.Once
	byID map[chunker.ID]int // first non-zero target chunk of each ID
	// zeros are read-only zeros for the chunks found in holes.
	zeros []byte
	// zerosUncut: the chunker cuts a run of zeros in chunks of Max (a
	// window of zeros never cuts), so runs in holes can be skipped.
	zerosUncut bool
}

func (g *guide) init() {
	g.once.Do(func() {
		g.byID = make(map[chunker.ID]int, len(g.x.Chunks))
		g.zeros = make([]byte, min(g.x.Max, chunker.MaxChunkSizeLimit))
		if sp, err := chunker.NewSplitter(chunker.Params{Min: g.x.Min, Avg: g.x.Avg, Max: g.x.Max}); err == nil && uint64(len(g.zeros)) == g.x.Max {
			g.zerosUncut = sp.Cut(g.zeros) == len(g.zeros)
		}
		for i, c := range g.x.Chunks {
			if g.zero != nil && g.zero[i] {
				continue
			}
			if _, ok := g.byID[c.ID]; !ok {
				g.byID[c.ID] = i
			}
		}
	})
}

// at returns the target chunk starting at offset t that may be guessed
// (not the last one, which the end of the target cut), or -1.
func (g *guide) at(t int64) int {
	cs := g.x.Chunks
	if t < 0 {
		return -1
	}
	i := sort.Search(len(cs), func(i int) bool { return int64(cs[i].Start) >= t })
	if i >= len(cs)-1 || int64(cs[i].Start) != t {
		return -1
	}
	return i
}

// gjob is a batch of chunks (guessed or cut) hashed together.
type gjob struct {
	epoch int
	buf   []byte
	offs  []int64
	sizes []int
	guess []int    // target chunk guessed, -1 for a chunk the chunker cut
	datas [][]byte // each chunk's bytes (in buf, or zeros for a hole); nil: buf in order
	hole  []bool   // chunks known to lie in a hole of the seed (zeros); nil: none
	ids   []chunker.ID
	final bool // the batch reaches the end of the seed
	read  bool // the worker reads the guessed chunks (readGuessed)
	err   error
	done  chan struct{}
}

// restart tells the guesser where the first failed guess of epoch-1 was.
type restart struct {
	pos   int64
	epoch int
}

// hint is a distance seen between the seed and the target: a chunk the
// chunker cut at seed offset end-size lies in the target at end+delta-size.
type hint struct {
	epoch int
	delta int64
}

// errReported stops the guesser when the reporter met an error (a read
// that failed): the scan returns the reporter's error.
var errReported = errors.New("the scan's reporter failed")

// Guessed batches start small after each switch to guessing, since a
// wrong guess wastes the batches made past it.
const guessFirst = 256 << 10

// cutBatch is the bytes of chunks the chunker cuts per batch.
const cutBatch = 1 << 20

func (s *FileSeed) scanGuided(ctx context.Context, found Found) error {
	g := s.guide
	g.init()
	size := s.Size()
	if size < 0 {
		return fmt.Errorf("seed %s: cannot tell its size", s.path)
	}
	// Under a Background context: one hasher at nice 19, the others only
	// while a reader waits for the scan (startPool).
	workers := max(1, runtime.GOMAXPROCS(0))
	jobs := make(chan *gjob, workers)
	order := make(chan *gjob, 2*workers)
	restarts := make(chan restart, 1)
	finished := make(chan struct{})  // the reporter confirmed the final batch
	repFailed := make(chan struct{}) // the reporter met an error (repErr)
	var lastHint atomic.Pointer[hint]
	waitHash := startPool(ctx, workers, jobs, func(j *gjob) {
		if j.read {
			// Guessed chunks are read here, on every core, not by the
			// guesser.
			if j.err = s.readGuessed(j); j.err != nil {
				close(j.done)
				return
			}
		}
		if j.datas == nil {
			o := 0
			for _, n := range j.sizes {
				j.datas = append(j.datas, j.buf[o:o+n:o+n])
				o += n
			}
		}
		j.ids = make([]chunker.ID, len(j.datas))
		if j.hole == nil {
			sumChunks(s.p.Digest, j.ids, j.datas)
		} else {
			// Chunks in a hole of the seed are zeros, unread.
			var idx []int
			var rest [][]byte
			for k, b := range j.datas {
				if j.hole[k] {
					j.ids[k] = zeroID(s.p.Digest, len(b))
					continue
				}
				idx = append(idx, k)
				rest = append(rest, b)
			}
			ids := make([]chunker.ID, len(rest))
			sumChunks(s.p.Digest, ids, rest)
			for i, k := range idx {
				j.ids[k] = ids[i]
			}
		}
		close(j.done)
	})
	// The reporter checks guesses and reports chunks in seed order.
	var repErr error
	repDone := make(chan struct{})
	go func() {
		defer close(repDone)
		epoch := 0
		for j := range order {
			<-j.done
			if j.epoch != epoch || repErr != nil {
				continue // made past a failed guess, or after an error
			}
			if j.err != nil {
				repErr = j.err
				close(repFailed) // the guesser stops
				continue
			}
			failed := false
			for k, id := range j.ids {
				n := j.sizes[k]
				if gi := j.guess[k]; gi >= 0 && g.x.Chunks[gi].ID != id {
					epoch++
					restarts <- restart{pos: j.offs[k], epoch: epoch}
					failed = true
					break
				} else if gi < 0 {
					if ti, ok := g.byID[id]; ok {
						c := g.x.Chunks[ti]
						lastHint.Store(&hint{epoch: epoch, delta: int64(c.Start) - j.offs[k]})
					}
				}
				if j.guess[k] >= 0 {
					s.guessed.Add(int64(n))
				}
				found(id, Location{R: s.f, Off: j.offs[k], Size: int64(n), File: s.f, Data: j.datas[k]})
				s.front.Store(j.offs[k] + int64(n))
			}
			if !failed && j.final {
				close(finished)
				epoch = -1 // nothing after it counts
			}
		}
	}()

	// The guesser runs on a new goroutine, not locked to the caller's
	// lowered thread: its reads and cuts run at nice 19 unless a reader
	// waits for the scan (executor).
	var err error
	guessed := make(chan struct{})
	go func() {
		defer close(guessed)
		ex := newExecutor(ctx)
		defer ex.stop()
		err = s.guess(ctx, ex, g, size, jobs, order, restarts, finished, repFailed, &lastHint)
	}()
	<-guessed
	close(jobs)
	close(order)
	waitHash()
	<-repDone
	if err == nil || errors.Is(err, errReported) {
		err = repErr
	}
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// guess makes the batches: guessed chunks while guesses hold, chunks cut by
// the chunker elsewhere. It returns when the reporter confirmed the batch
// that reaches the end of the seed, or on an error.
func (s *FileSeed) guess(ctx context.Context, ex *executor, g *guide, size int64, jobs, order chan<- *gjob, restarts <-chan restart, finished, repFailed <-chan struct{}, lastHint *atomic.Pointer[hint]) error {
	var (
		pos    int64 // seed offset of the next chunk: a cut
		delta  int64 // target offset - seed offset of the data being guessed
		epoch  int
		ti     = g.at(0) // target chunk guessed at pos, or -1: the chunker cuts
		limit  = int64(guessFirst)
		ck     *chunker.Chunker
		cutEnd int64 // where the chunker's reader stands (seed offset)
		final  bool  // the batch reaching the end of the seed was sent (this epoch)
		holes  = holeMap{fd: int(s.f.Fd()), size: size}
	)
	send := func(j *gjob) error {
		select {
		case order <- j:
		case <-ctx.Done():
			return ctx.Err()
		case <-repFailed:
			return errReported
		}
		select {
		case jobs <- j:
		case <-ctx.Done():
			close(j.done) // never hashed: the reporter must not wait for it
			return ctx.Err()
		}
		return nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		select {
		case r := <-restarts:
			pos, epoch, ti, ck = r.pos, r.epoch, -1, nil
			limit, final = guessFirst, false
		default:
		}
		if pos >= size && ck == nil {
			// Every batch up to the end of the seed is made: wait for the
			// reporter to confirm them, or for a guess that failed.
			if !final {
				final = true // an empty seed, or a batch ending at the end
				if err := send(&gjob{epoch: epoch, final: true, done: make(chan struct{})}); err != nil {
					return err
				}
			}
			select {
			case r := <-restarts:
				pos, epoch, ti, ck = r.pos, r.epoch, -1, nil
				limit, final = guessFirst, false
				continue
			case <-finished:
				return nil
			case <-repFailed:
				return errReported
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		j := &gjob{epoch: epoch, done: make(chan struct{})}
		if ti >= 0 {
			// Guess target chunks ti, ti+1, ... at pos.
			start := pos
			last := len(g.x.Chunks) - 1
			for ti < last && pos-start < limit {
				n := int64(g.x.Chunks[ti].Size)
				if pos+n > size {
					break
				}
				j.offs = append(j.offs, pos)
				j.sizes = append(j.sizes, int(n))
				j.guess = append(j.guess, ti)
				pos += n
				ti++
			}
			if len(j.sizes) == 0 {
				ti = -1 // nothing to guess here: cut
				continue
			}
			if ti >= last || pos+int64(g.x.Chunks[ti].Size) > size {
				ti = -1 // the chunker takes the rest from pos
			}
			ex.do(func() { s.planGuessed(j, g, &holes) })
			j.read = true
			j.final = pos >= size
			final = j.final
			limit = min(2*limit, scanBatch)
			if err := send(j); err != nil {
				return err
			}
			continue
		}
		// A run of zeros lying in a hole of the seed: the chunker would cut
		// it in chunks of Max (zeros never cut), so they are reported
		// unread, and the chunker starts again after them.
		if g.zerosUncut && ck == nil && holes.hole(pos, int64(g.x.Max)) {
			n := int(g.x.Max)
			j.hole = []bool{}
			for len(j.sizes) < 4096 && holes.hole(pos, int64(n)) {
				j.offs = append(j.offs, pos)
				j.sizes = append(j.sizes, n)
				j.guess = append(j.guess, -1)
				j.hole = append(j.hole, true)
				j.datas = append(j.datas, g.zeros[:n:n])
				pos += int64(n)
			}
			j.final = pos >= size
			final = j.final
			if t := g.at(pos + delta); t >= 0 && pos < size {
				ti = t
				limit = guessFirst
			}
			if err := send(j); err != nil {
				return err
			}
			continue
		}
		// Cut with the chunker from pos, until a cut lines up with the
		// target again or the batch is full.
		if ck == nil {
			var err error
			ck, err = chunker.NewChunker(&ctxReader{ctx: ctx, r: io.NewSectionReader(s.f, pos, size-pos)}, s.p.Chunk)
			if err != nil {
				return fmt.Errorf("seed %s: %w", s.path, err)
			}
			cutEnd = pos
		}
		// Small batches, so that a chunk found elsewhere in the target
		// (moved data) is reported, and guessing resumes, soon.
		var cutErr error
		ex.do(func() {
			for len(j.buf) < cutBatch {
				b, err := ck.Next()
				if err == io.EOF {
					j.final = true
					ck = nil
					break
				}
				if err != nil {
					if ctx.Err() != nil {
						cutErr = ctx.Err()
						return
					}
					cutErr = fmt.Errorf("seed %s: reading at about offset %d: %w", s.path, cutEnd, err)
					return
				}
				j.buf = append(j.buf, b...)
				j.offs = append(j.offs, cutEnd)
				j.sizes = append(j.sizes, len(b))
				j.guess = append(j.guess, -1)
				cutEnd += int64(len(b))
				// Guess again where the target has a chunk at this cut, at
				// the old distance or at one the chunker's chunks showed.
				if t := g.at(cutEnd + delta); t >= 0 && cutEnd < size {
					ti = t
				} else if h := lastHint.Load(); h != nil && h.epoch == epoch && h.delta != delta && cutEnd < size {
					if t := g.at(cutEnd + h.delta); t >= 0 {
						ti, delta = t, h.delta
					}
				}
				if ti >= 0 {
					ck = nil
					limit = guessFirst
					break
				}
				if g.zerosUncut && cutEnd < size && holes.hole(cutEnd, int64(g.x.Max)) {
					ck = nil // skip the hole (above)
					break
				}
			}
		})
		if cutErr != nil {
			return cutErr
		}
		pos = cutEnd
		final = j.final
		if len(j.sizes) > 0 || j.final {
			if err := send(j); err != nil {
				return err
			}
		}
	}
}

// planGuessed marks the guessed chunks of j that need no read: those the
// target has as zeros that lie in a hole of the seed are zeros (disk
// images are mostly holes).
func (s *FileSeed) planGuessed(j *gjob, g *guide, holes *holeMap) {
	j.datas = make([][]byte, len(j.sizes))
	for k, n := range j.sizes {
		if g.zero != nil && g.zero[j.guess[k]] && n <= len(g.zeros) && holes.hole(j.offs[k], int64(n)) {
			if j.hole == nil {
				j.hole = make([]bool, len(j.sizes))
			}
			j.hole[k] = true
			j.datas[k] = g.zeros[:n:n]
		}
	}
}

// readGuessed reads the seed's bytes of the guessed chunks of j that
// planGuessed did not find in holes.
func (s *FileSeed) readGuessed(j *gjob) error {
	var total int
	for k, n := range j.sizes {
		if j.hole == nil || !j.hole[k] {
			total += n
		}
	}
	j.buf = make([]byte, total)
	o := 0
	for k := 0; k < len(j.sizes); {
		if j.hole != nil && j.hole[k] {
			k++
			continue
		}
		// A run of chunks to read at once.
		e, n := k, 0
		for ; e < len(j.sizes) && (j.hole == nil || !j.hole[e]); e++ {
			j.datas[e] = j.buf[o+n : o+n+j.sizes[e] : o+n+j.sizes[e]]
			n += j.sizes[e]
		}
		if got, err := s.f.ReadAt(j.buf[o:o+n], j.offs[k]); got < n {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF // the seed shrank
			}
			return fmt.Errorf("seed %s: reading at offset %d: %w", s.path, j.offs[k], err)
		}
		o += n
		k = e
	}
	return nil
}

// holeMap tells whether ranges of a file lie in holes (SEEK_DATA,
// SEEK_HOLE), remembering the last hole and data extent seen.
type holeMap struct {
	fd               int
	size             int64
	off              bool // lseek refused (a block device): no holes known
	holeFrom, holeTo int64
	dataFrom, dataTo int64
}

// hole reports whether [off, off+n) lies wholly in a hole.
func (h *holeMap) hole(off, n int64) bool {
	for !h.off {
		switch {
		case off >= h.holeFrom && off+n <= h.holeTo:
			return true
		case off >= h.holeFrom && off < h.holeTo:
			return false // the hole ends inside
		case off >= h.dataFrom && off < h.dataTo:
			return false
		}
		d, err := unix.Seek(h.fd, off, unix.SEEK_DATA)
		switch {
		case err == unix.ENXIO:
			h.holeFrom, h.holeTo = off, h.size // no data after off
		case err != nil:
			h.off = true
		case d > off:
			h.holeFrom, h.holeTo = off, d
		default:
			e, err := unix.Seek(h.fd, off, unix.SEEK_HOLE)
			if err != nil || e <= off {
				h.off = true
				break
			}
			h.dataFrom, h.dataTo = off, e
		}
	}
	return false
}
