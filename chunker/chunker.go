package chunker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// WindowSize is the buzhash window (FORMAT.md §5).
const WindowSize = 48

// Params are the chunk size parameters of casync's chunker.
type Params struct {
	Min, Avg, Max uint64
}

// DefaultParams are casync's defaults, 16K/64K/256K.
var DefaultParams = Params{DefaultMin, DefaultAvg, DefaultMax}

// ParseParams parses --chunk-size: "AVG", "MIN:AVG:MAX" or "auto"/"".
// A lone AVG sets min = AVG/4 and max = AVG*4 as casync does.
func ParseParams(s string) (Params, error) {
	if s == "" || s == "auto" {
		return DefaultParams, nil
	}
	parts := strings.Split(s, ":")
	var v []uint64
	for _, p := range parts {
		n, err := parseSize(p)
		if err != nil {
			return Params{}, fmt.Errorf("chunk size %q: %v", s, err)
		}
		v = append(v, n)
	}
	var p Params
	switch len(v) {
	case 1:
		p = Params{max(1, v[0]/4), v[0], min(v[0]*4, MaxChunkSizeLimit)}
	case 3:
		p = Params{v[0], v[1], v[2]}
	default:
		return Params{}, fmt.Errorf("chunk size %q: want AVG or MIN:AVG:MAX", s)
	}
	if err := p.Check(); err != nil {
		return Params{}, fmt.Errorf("chunk size %q: %v", s, err)
	}
	return p, nil
}

func parseSize(s string) (uint64, error) {
	mult := uint64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, s[:len(s)-1]
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	if n > math.MaxUint64/mult {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return n * mult, nil
}

// Check validates the parameters as casync's chunker does.
func (p Params) Check() error {
	if err := CheckSizes(p.Min, p.Avg, p.Max); err != nil {
		return err
	}
	if !p.fixed() && p.Max < WindowSize {
		return fmt.Errorf("maximum chunk size %d is below the %d-byte window", p.Max, WindowSize)
	}
	return nil
}

func (p Params) fixed() bool { return p.Min == p.Avg && p.Avg == p.Max }

// discriminator computes casync's cut discriminator for avg, clamped to [min,max].
func (p Params) discriminator() uint32 {
	d := uint64(float64(p.Avg) / (-1.42888852e-7*float64(p.Avg) + 1.33237515))
	d = min(max(d, p.Min), p.Max)
	return uint32(d)
}

// Splitter finds casync chunk boundaries in a byte slice. It keeps no state
// between chunks (casync resets the hash at every cut), so it is a value that
// can be shared by goroutines.
type Splitter struct {
	p     Params
	start uint64 // first length at which a cut may happen
	d     uint64 // discriminator
	magic uint64 // ^0/d + 1, for the division-free divisibility test
	fixed bool
	// skipZeros: a zero window does not cut with this discriminator, so
	// runs of zeros can be skipped without hashing.
	skipZeros bool
}

// NewSplitter validates p and returns a Splitter.
func NewSplitter(p Params) (*Splitter, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	s := &Splitter{p: p, start: max(p.Min, WindowSize), fixed: p.fixed()}
	if !s.fixed {
		s.d = uint64(p.discriminator())
		s.magic = ^uint64(0)/s.d + 1
		s.skipZeros = (uint64(zeroWindowHash)+1)*s.magic > s.magic-1
	}
	return s, nil
}

// Params returns the splitter's parameters.
func (s *Splitter) Params() Params { return s.p }

// Cut returns the length of the chunk that starts at buf[0], or 0 when buf
// ends before a boundary is found. At the end of the stream the caller takes
// all remaining bytes as the final chunk.
func (s *Splitter) Cut(buf []byte) int {
	if s.fixed {
		if uint64(len(buf)) >= s.p.Avg {
			return int(s.p.Avg)
		}
		return 0
	}
	n := len(buf)
	if uint64(n) < s.start {
		return 0
	}
	limit := int(min(uint64(n), s.p.Max)) // last length to test
	L := int(s.start)
	h := windowHash(buf[L-WindowSize : L])
	magic := s.magic
	// Cut when h mod d == d-1, i.e. d divides h+1: (h+1)*magic <= magic-1.
	for {
		if (uint64(h)+1)*magic <= magic-1 {
			return L
		}
		if h == zeroWindowHash && s.skipZeros && allZero(buf[L-WindowSize:L]) {
			// Inside a run of zeros the window hash stays zeroWindowHash,
			// which does not cut: jump to the run's end (disk images are
			// often mostly zeros).
			if k := L + firstNonZero(buf[L:limit]); k > L {
				L = k
				continue
			}
		}
		if L >= limit {
			break
		}
		// Roll until a cut, a window that may be zeros, or the limit. The
		// byte leaving the window and the one entering are combined off
		// the hash's dependency chain, and the slices of equal length let
		// the compiler drop the bounds checks.
		in := buf[L:limit]
		out := buf[L-WindowSize : limit-WindowSize]
		out = out[:len(in)]
		i := 0
		for i < len(in) {
			h = bits.RotateLeft32(h, 1) ^ (buzhashOut[out[i]] ^ buzhashTable[in[i]])
			i++
			if (uint64(h)+1)*magic <= magic-1 || h == zeroWindowHash {
				break
			}
		}
		L += i
	}
	if uint64(L) >= s.p.Max {
		return int(s.p.Max)
	}
	return 0
}

// buzhashOut[b] is the term of byte b leaving the window: its table value
// rotated by the window size.
var buzhashOut = func() (t [256]uint32) {
	for i, v := range buzhashTable {
		t[i] = bits.RotateLeft32(v, WindowSize%32)
	}
	return t
}()

// zeroWindowHash is the hash of a window of 48 zero bytes.
const zeroWindowHash = 0x9e489e48

func allZero(b []byte) bool {
	return firstNonZero(b) == len(b)
}

// firstNonZero returns the index of the first non-zero byte of b, or len(b).
func firstNonZero(b []byte) int {
	i := 0
	for ; i+32 <= len(b); i += 32 {
		if binary.LittleEndian.Uint64(b[i:])|binary.LittleEndian.Uint64(b[i+8:])|
			binary.LittleEndian.Uint64(b[i+16:])|binary.LittleEndian.Uint64(b[i+24:]) != 0 {
			break
		}
	}
	for ; i < len(b); i++ {
		if b[i] != 0 {
			return i
		}
	}
	return len(b)
}

func windowHash(w []byte) uint32 {
	var h uint32
	for i, b := range w {
		h ^= bits.RotateLeft32(buzhashTable[b], WindowSize-1-i)
	}
	return h
}

// Chunker splits a stream into chunks.
type Chunker struct {
	r   io.Reader
	s   *Splitter
	buf []byte
	pos int // start of the unconsumed data in buf
	end int // end of valid data in buf
	eof bool
	err error
}

// NewChunker returns a chunker reading r with parameters p.
func NewChunker(r io.Reader, p Params) (*Chunker, error) {
	s, err := NewSplitter(p)
	if err != nil {
		return nil, err
	}
	size := max(4<<20, 2*int(p.Max))
	return &Chunker{r: r, s: s, buf: make([]byte, size)}, nil
}

// Next returns the next chunk. The slice is valid until the next call.
// At the end of the stream it returns io.EOF.
func (c *Chunker) Next() ([]byte, error) {
	for {
		if c.err != nil {
			return nil, c.err
		}
		if c.pos < c.end {
			if n := c.s.Cut(c.buf[c.pos:c.end]); n > 0 {
				b := c.buf[c.pos : c.pos+n]
				c.pos += n
				return b, nil
			}
			if c.eof {
				b := c.buf[c.pos:c.end]
				c.pos = c.end
				return b, nil
			}
		} else if c.eof {
			return nil, io.EOF
		}
		c.fill()
	}
}

// fill moves unconsumed data to the front and reads more.
func (c *Chunker) fill() {
	if c.pos > 0 {
		c.end = copy(c.buf, c.buf[c.pos:c.end])
		c.pos = 0
	}
	for c.end < len(c.buf) && !c.eof {
		n, err := c.r.Read(c.buf[c.end:])
		c.end += n
		if err != nil {
			c.eof = true
			if !errors.Is(err, io.EOF) {
				c.err = err
			}
		}
		if n > 0 && c.end-c.pos >= int(c.s.p.Max) {
			break
		}
	}
}
