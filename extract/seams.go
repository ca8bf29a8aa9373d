package extract

import (
	"bytes"
	"fmt"
	"os"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/seed"
	"golang.org/x/sys/unix"
)

// Seams. A seeded chunk is cloned block by block (FICLONERANGE works on
// whole file-system blocks), so the block holding the end of one chunk and
// the start of the next is copied, even where both chunks come from one
// stretch of the same seed: one block a chunk, some 6% of the seeded bytes
// at casync's default sizes. Once every chunk is written, each such block
// whose two chunks were seeded from the same file at the same distance
// (so the seed's block holds exactly the bytes written there) is cloned
// too, and read back to check it, as every clone.

// seam records where the bytes written at one place of a chunk came from.
type seam struct {
	f     *os.File // the seed file, nil: not seeded, or not cloneable
	delta int64    // seed offset - output offset
}

// seamNote records that the chunk at place j (output offset off) was
// written from loc.
func (s *seeder) seamNote(j int, loc seed.Location, off int64) {
	if s == nil || s.seams == nil || loc.File == nil || (loc.Off-off)%fsBlock != 0 {
		return
	}
	s.seams[j] = seam{loc.File, loc.Off - off}
}

// cloneSeams clones the blocks straddling two chunks seeded from one
// stretch of a seed, and returns the bytes cloned. A refused clone only
// means copied bytes (the block is already written); an error means a
// block could not be put back after a clone that brought other bytes.
func (s *seeder) cloneSeams(x *chunker.Index) (int64, error) {
	if s == nil || s.seams == nil || s.noClone.Load() {
		return 0, nil
	}
	var n int64
	want := make([]byte, fsBlock)
	back := make([]byte, fsBlock)
	for i := 0; i+1 < len(x.Chunks); i++ {
		a, b := s.seams[i], s.seams[i+1]
		if a.f == nil || a.f != b.f || a.delta != b.delta {
			continue
		}
		cut := int64(x.Chunks[i+1].Start)
		blk := cut / fsBlock * fsBlock
		if blk == cut || blk < int64(x.Chunks[i].Start) || blk+fsBlock > int64(x.Chunks[i+1].Start+x.Chunks[i+1].Size) {
			continue // aligned already, or the block reaches past the two chunks
		}
		if k, _ := s.out.f.ReadAt(want, blk); k != fsBlock {
			continue
		}
		r := unix.FileCloneRange{Src_fd: int64(a.f.Fd()), Src_offset: uint64(blk + a.delta),
			Src_length: fsBlock, Dest_offset: uint64(blk)}
		if err := unix.IoctlFileCloneRange(int(s.out.f.Fd()), &r); err != nil {
			return n, nil // refused: the rest would be refused too
		}
		// The seed may have changed since its bytes were verified.
		if k, _ := s.out.f.ReadAt(back, blk); k != fsBlock || !bytes.Equal(back, want) {
			if _, err := s.out.f.WriteAt(want, blk); err != nil {
				return n, fmt.Errorf("%s: rewriting the block at %d after a clone brought other bytes: %w", s.out.f.Name(), blk, err)
			}
			continue
		}
		n += fsBlock
	}
	return n, nil
}
