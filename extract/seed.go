package extract

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
	"github.com/camount/camount/seed"
	"golang.org/x/sys/unix"
)

// Reflink says whether seeded ranges are cloned (FICLONERANGE) into a
// regular-file output instead of copied.
type Reflink int

const (
	ReflinkAuto Reflink = iota // clone where the file systems allow, else copy (casync's default)
	ReflinkYes                 // clone, and fail if the first clone is refused
	ReflinkNo                  // always copy
)

// ParseReflink parses --reflink values.
func ParseReflink(s string) (Reflink, error) {
	switch s {
	case "auto", "":
		return ReflinkAuto, nil
	case "yes", "true":
		return ReflinkYes, nil
	case "no", "false":
		return ReflinkNo, nil
	}
	return 0, fmt.Errorf("--reflink=%s: want auto, yes or no", s)
}

// ErrReflink is wrapped by the error of --reflink=yes when a clone is refused.
var ErrReflink = errors.New("cannot clone (reflink) seeded ranges into the output")

// fsBlock is the alignment FICLONERANGE needs (btrfs and xfs with 4 KiB blocks).
const fsBlock = 4096

// seeder takes chunks from seeds for assemble.
type seeder struct {
	set     *seed.Set
	d       chunker.Digest
	out     *output
	mode    Reflink
	noClone atomic.Bool // a clone was refused (auto): copy from now on
	warned  atomic.Bool
	log     *slog.Logger
	seams   []seam // by chunk place, for cloneSeams; nil: no cloning
}

// dispatch sends the first copy of each chunk to jobs: at once when a
// seed is known to hold it or no seed is still scanning, else as soon as
// a scan finds it or every scan has ended. So seeded chunks are written
// while scans go on, and nothing a seed may hold is fetched.
func dispatch(ctx context.Context, set *seed.Set, x *chunker.Index, firsts []int, jobs chan<- int) {
	defer close(jobs)
	pending := firsts
	for {
		done := set == nil
		if !done {
			select {
			case <-set.Done():
				done = true
			default:
			}
		}
		rest := pending[:0:0]
		for _, i := range pending {
			known := done
			if !known {
				_, known = set.Lookup(x.Chunks[i].ID)
			}
			if !known {
				rest = append(rest, i)
				continue
			}
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
		pending = rest
		if len(pending) == 0 {
			return
		}
		select {
		case <-set.Done():
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return
		}
	}
}

// chunk returns the verified bytes of chunk c from a seed, and its
// location, or ok false (no seed holds it, reading failed, or the bytes
// are not the chunk: the location is then forgotten, and the chunk costs
// a fetch).
func (s *seeder) chunk(c chunker.Chunk) (data []byte, loc seed.Location, ok bool) {
	if s == nil {
		return nil, loc, false
	}
	loc, ok = s.set.Lookup(c.ID)
	if !ok {
		return nil, loc, false
	}
	raw, err := seed.Read(loc)
	if err == nil {
		// The single verification point, as for fetched chunks.
		data, err = fetch.DecodeChunk(c, s.d, raw)
	}
	if err != nil {
		s.set.Forget(c.ID)
		if s.warned.CompareAndSwap(false, true) {
			s.log.Warn("a seeded chunk could not be used; it is fetched instead (further ones are not logged)", "chunk", c.ID, "err", err)
		}
		return nil, loc, false
	}
	return data, loc, true
}

// write puts verified seeded bytes at off in the output, cloning the
// block-aligned middle from the seed where it can. It returns the bytes
// cloned.
func (s *seeder) write(data []byte, loc seed.Location, off int64, wrote *atomic.Bool) (int64, error) {
	if s.mode == ReflinkNo || s.out.device || loc.File == nil || s.noClone.Load() || loc.Off%fsBlock != off%fsBlock {
		return 0, writeAt(s.out.f, data, off, wrote)
	}
	n := int64(len(data))
	head := (fsBlock - off%fsBlock) % fsBlock
	end := (off + n) / fsBlock * fsBlock
	if off+head >= end {
		return 0, writeAt(s.out.f, data, off, wrote)
	}
	wrote.Store(true)
	r := unix.FileCloneRange{Src_fd: int64(loc.File.Fd()), Src_offset: uint64(loc.Off + head),
		Src_length: uint64(end - off - head), Dest_offset: uint64(off + head)}
	if err := unix.IoctlFileCloneRange(int(s.out.f.Fd()), &r); err != nil {
		if s.mode == ReflinkYes {
			return 0, fmt.Errorf("%w (%s to %s): %v", ErrReflink, loc.File.Name(), s.out.f.Name(), err)
		}
		s.noClone.Store(true)
		return 0, writeAt(s.out.f, data, off, wrote)
	}
	// The seed may have changed between the read that was verified and
	// the clone: read back what was cloned and rewrite it if it differs
	// (casync validates its clones the same way).
	mid := data[head : end-off]
	back := make([]byte, len(mid))
	if k, err := s.out.f.ReadAt(back, off+head); k != len(back) || !bytes.Equal(back, mid) {
		_ = err
		return 0, writeAt(s.out.f, data, off, wrote)
	}
	if head > 0 {
		if err := writeAt(s.out.f, data[:head], off, wrote); err != nil {
			return 0, err
		}
	}
	if end < off+n {
		if err := writeAt(s.out.f, data[end-off:], end, wrote); err != nil {
			return 0, err
		}
	}
	return end - off - head, nil
}

// outputSeed opens the existing output as a seed.
func outputSeed(out *output, p seed.Params, cache *seed.ScanCache) (seed.Seed, error) {
	if out.old == nil {
		return nil, nil
	}
	// A file of its own: the set closes it, and out closes old.
	f, err := os.Open(out.old.Name())
	if err != nil {
		return nil, err
	}
	s := seed.FromFile(f, out.target, p)
	if cache != nil {
		s.SetCache(cache)
	}
	return s, nil
}
