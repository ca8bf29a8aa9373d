package chunker

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
)

// Record types and markers of the index format (FORMAT.md §3).
const (
	typeIndex       = 0x96824d9c7b129ff9
	typeTable       = 0xe75b9e112f17417d
	tableTailMarker = 0x4b4f050e5549ecd1
	headerSize      = 64  // INDEX record (48) + TABLE header (16)
	itemSize        = 40  // one table item, and the tail
	emptyIndexSize  = 104 // header + tail
)

// Chunk size limits accepted by casync.
const (
	MinChunkSizeLimit = 1
	MaxChunkSizeLimit = 128 << 20
)

// Default chunk sizes (casync's --chunk-size=auto).
const (
	DefaultMin = 16 << 10
	DefaultAvg = 64 << 10
	DefaultMax = 256 << 10
)

// Chunk is one entry of an index: the bytes [Start, Start+Size) of the stream.
type Chunk struct {
	ID    ID
	Start uint64
	Size  uint64
}

// End returns the exclusive end offset of the chunk in the stream.
func (c Chunk) End() uint64 { return c.Start + c.Size }

// Index is a parsed .caibx or .caidx file.
type Index struct {
	Flags         uint64
	Min, Avg, Max uint64
	Chunks        []Chunk
}

// ErrFormat is wrapped by every error about a malformed index.
var ErrFormat = errors.New("malformed index")

func formatErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, a...))
}

// Size returns the length of the indexed stream.
func (x *Index) Size() uint64 {
	if len(x.Chunks) == 0 {
		return 0
	}
	return x.Chunks[len(x.Chunks)-1].End()
}

// Digest returns the chunk digest selected by the index's flags.
func (x *Index) Digest() Digest { return DigestOf(x.Flags) }

// Find returns the index of the chunk holding stream offset off, or -1 when
// off is outside the stream.
func (x *Index) Find(off int64) int {
	if off < 0 || uint64(off) >= x.Size() {
		return -1
	}
	return sort.Search(len(x.Chunks), func(i int) bool { return x.Chunks[i].End() > uint64(off) })
}

// ReadIndex parses and validates an index as casync does (FORMAT.md §3.2),
// and strictly: trailing bytes, bad sizes and unknown flags are errors.
func ReadIndex(r io.Reader) (*Index, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	var hdr [headerSize]byte
	if n, err := io.ReadFull(br, hdr[:]); err != nil {
		if n == 0 && err == io.EOF {
			return nil, formatErr("empty file")
		}
		return nil, formatErr("truncated header (%d of %d bytes)", n, headerSize)
	}
	le := binary.LittleEndian
	if le.Uint64(hdr[0:]) != 48 || le.Uint64(hdr[8:]) != typeIndex {
		return nil, formatErr("not a casync index (bad magic: size %d type %#x)", le.Uint64(hdr[0:]), le.Uint64(hdr[8:]))
	}
	x := &Index{
		Flags: le.Uint64(hdr[16:]),
		Min:   le.Uint64(hdr[24:]),
		Avg:   le.Uint64(hdr[32:]),
		Max:   le.Uint64(hdr[40:]),
	}
	if err := CheckFlags(x.Flags); err != nil {
		return nil, formatErr("%v", err)
	}
	if err := CheckSizes(x.Min, x.Avg, x.Max); err != nil {
		return nil, formatErr("%v", err)
	}
	if le.Uint64(hdr[48:]) != ^uint64(0) || le.Uint64(hdr[56:]) != typeTable {
		return nil, formatErr("bad table header (size %#x type %#x)", le.Uint64(hdr[48:]), le.Uint64(hdr[56:]))
	}
	var item [itemSize]byte
	var prev uint64
	for {
		n, err := io.ReadFull(br, item[:])
		if err != nil {
			if n == 0 && err == io.EOF {
				return nil, formatErr("table has no tail (%d items read; file truncated?)", len(x.Chunks))
			}
			return nil, formatErr("truncated table item %d (%d of %d bytes)", len(x.Chunks), n, itemSize)
		}
		if isTail(item[:], len(x.Chunks)) {
			break
		}
		end := le.Uint64(item[0:])
		if end <= prev {
			return nil, formatErr("chunk %d: end offset %d does not increase (previous %d)", len(x.Chunks), end, prev)
		}
		if end-prev > x.Max {
			return nil, formatErr("chunk %d: size %d exceeds the maximum chunk size %d", len(x.Chunks), end-prev, x.Max)
		}
		var c Chunk
		copy(c.ID[:], item[8:])
		c.Start, c.Size = prev, end-prev
		x.Chunks = append(x.Chunks, c)
		prev = end
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return nil, formatErr("trailing bytes after the table tail")
	}
	return x, nil
}

func isTail(b []byte, items int) bool {
	le := binary.LittleEndian
	return le.Uint64(b[32:]) == tableTailMarker &&
		le.Uint64(b[0:]) == 0 && le.Uint64(b[8:]) == 0 &&
		le.Uint64(b[16:]) == 48 &&
		le.Uint64(b[24:]) == uint64(16+itemSize*items+itemSize)
}

// CheckSizes validates chunk size parameters as casync's index reader does.
func CheckSizes(min, avg, max uint64) error {
	for _, v := range []uint64{min, avg, max} {
		if v < MinChunkSizeLimit || v > MaxChunkSizeLimit {
			return fmt.Errorf("chunk size %d outside [1, %d]", v, MaxChunkSizeLimit)
		}
	}
	if !(min <= avg && avg <= max) {
		return fmt.Errorf("chunk sizes not ordered: min %d, avg %d, max %d", min, avg, max)
	}
	return nil
}

// WriteTo writes the index in casync's byte layout.
func (x *Index) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, 1<<16)
	le := binary.LittleEndian
	var hdr [headerSize]byte
	le.PutUint64(hdr[0:], 48)
	le.PutUint64(hdr[8:], typeIndex)
	le.PutUint64(hdr[16:], x.Flags)
	le.PutUint64(hdr[24:], x.Min)
	le.PutUint64(hdr[32:], x.Avg)
	le.PutUint64(hdr[40:], x.Max)
	le.PutUint64(hdr[48:], ^uint64(0))
	le.PutUint64(hdr[56:], typeTable)
	bw.Write(hdr[:])
	var item [itemSize]byte
	for _, c := range x.Chunks {
		le.PutUint64(item[0:], c.End())
		copy(item[8:], c.ID[:])
		bw.Write(item[:])
	}
	var tail [itemSize]byte
	le.PutUint64(tail[16:], 48)
	le.PutUint64(tail[24:], uint64(16+itemSize*len(x.Chunks)+itemSize))
	le.PutUint64(tail[32:], tableTailMarker)
	bw.Write(tail[:])
	if err := bw.Flush(); err != nil {
		return 0, err
	}
	return int64(emptyIndexSize + itemSize*len(x.Chunks)), nil
}
