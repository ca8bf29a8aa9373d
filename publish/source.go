package publish

import (
	"bytes"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/camount/camount/chunker"
)

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
	// preset, if set, is asked after each next: ok means that chunk is
	// known by id and size without its data (next returned nil).
	preset func() (id chunker.ID, size uint64, ok bool)
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
