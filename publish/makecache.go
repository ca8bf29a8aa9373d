package publish

import (
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"syscall"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
)

// The make cache (casync make's --cache, camount make --make-cache): when
// a tree is made again, the chunks that lay wholly inside an unchanged
// file's contents last time are reused without reading the file.
//
// It is sound because the chunker keeps no state across a cut (the
// Splitter starts afresh at every boundary): when the new stream reaches
// a boundary exactly where a cached chunk of the same file began, and the
// file is unchanged, that chunk's bytes - and so its boundary and id - are
// the same as last time, and so is the next one. A file counts as
// unchanged when its device, inode, size, mtime and ctime are (casync's
// cache compares the inode and the later of mtime and ctime). Where the
// new stream is not at such a boundary, the bytes are read and split as
// usual, so the index is the same as without the cache; only the digest of
// the whole stream cannot be computed once a chunk was not read.

// makeCacheVersion is the format of the cache file.
const makeCacheVersion = 1

// MakeCache is what one make of a tree left for the next.
type MakeCache struct {
	Version int
	Params  chunker.Params
	Digest  chunker.Digest
	Files   map[string]*cachedFile // by path, as the encoder names it
}

type fileKey struct {
	Dev, Ino, Size uint64
	Mtime, Ctime   int64 // ns
}

type cachedFile struct {
	Key    fileKey
	Chunks []cachedChunk // consecutive chunks inside the contents
}

type cachedChunk struct {
	Off, Size uint64 // Off: from the start of the file's contents
	ID        chunker.ID
}

// LoadMakeCache reads a cache file. A missing file, or one for other
// chunk parameters or digest, gives an empty cache (and no error): the
// make then reads everything and writes a new one.
func LoadMakeCache(path string, p chunker.Params, d chunker.Digest) (*MakeCache, error) {
	empty := &MakeCache{Version: makeCacheVersion, Params: p, Digest: d, Files: map[string]*cachedFile{}}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return empty, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var c MakeCache
	if err := gob.NewDecoder(f).Decode(&c); err != nil {
		return nil, fmt.Errorf("make cache %s: %w (remove it to start afresh)", path, err)
	}
	if c.Version != makeCacheVersion || c.Params != p || c.Digest != d || c.Files == nil {
		return empty, nil
	}
	return &c, nil
}

// Save writes the cache to path (through a temporary file).
func (c *MakeCache) Save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := gob.NewEncoder(tmp).Encode(c); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// TreeSource connects the archive encoder to Make with a make cache: the
// encoder writes the stream to it (Write) and offers it each file's
// contents (Payload, catar.EncodeOptions.PayloadTo), of which it takes
// those of unchanged files with cached chunks; Make (MakeOptions.Chunks)
// takes the chunks.
type TreeSource struct {
	old     *MakeCache
	min     int64 // no chunk lies wholly inside a file smaller than this
	log     *slog.Logger
	segs    chan segment
	stop    chan struct{}
	records []payloadRecord
	// Reused counts the chunks taken from the cache, Read the bytes of
	// file contents read.
	Reused, Read atomic.Int64
}

type segment struct {
	data   []byte
	fd     int
	path   string
	size   int64
	done   chan error // a payload: answered when the file is no longer needed
	cached *cachedFile
	end    bool
	err    error
}

type payloadRecord struct {
	path  string
	key   fileKey
	start uint64
	size  uint64
}

// NewTreeSource returns a source for chunk sizes p using old (nil: none;
// one for other parameters is not used).
func NewTreeSource(old *MakeCache, p chunker.Params, log *slog.Logger) *TreeSource {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if old != nil && old.Params != p {
		old = nil
	}
	return &TreeSource{old: old, min: int64(p.Min), log: log, segs: make(chan segment, 64), stop: make(chan struct{})}
}

var errSourceStopped = errors.New("make stopped")

func (t *TreeSource) send(s segment) error {
	select {
	case t.segs <- s:
		return nil
	case <-t.stop:
		return errSourceStopped
	}
}

// Write takes the encoder's bytes other than file contents.
func (t *TreeSource) Write(p []byte) (int, error) {
	if err := t.send(segment{data: append([]byte(nil), p...)}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Payload is offered a file's contents (catar.EncodeOptions.PayloadTo):
// it notes where they are for the next make, and takes them when the
// cache has chunks of the file as it is now.
func (t *TreeSource) Payload(fd int, path string, off, size int64, flush func() error) (bool, error) {
	if size < t.min {
		t.Read.Add(size)
		return false, nil // too small to hold a whole chunk
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return false, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	key := fileKey{Dev: st.Dev, Ino: st.Ino, Size: uint64(size), Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}
	t.records = append(t.records, payloadRecord{path: path, key: key, start: uint64(off), size: uint64(size)})
	if t.old == nil || int64(st.Size) != size {
		t.Read.Add(size)
		return false, nil
	}
	c := t.old.Files[path]
	if c == nil || c.Key != key || len(c.Chunks) == 0 {
		t.Read.Add(size)
		return false, nil
	}
	if err := flush(); err != nil {
		return false, err
	}
	done := make(chan error, 1)
	if err := t.send(segment{fd: fd, path: path, size: size, cached: c, done: done}); err != nil {
		return false, err
	}
	select {
	case err := <-done:
		return true, err
	case <-t.stop:
		return false, errSourceStopped
	}
}

// CloseWithError ends the stream (err: the encoder failed).
func (t *TreeSource) CloseWithError(err error) {
	t.send(segment{end: true, err: err})
}

type ready struct {
	data   []byte
	id     chunker.ID
	size   uint64
	preset bool
	err    error
}

// source runs the splitting for Make.
func (t *TreeSource) source(ctx context.Context, p chunker.Params, d chunker.Digest, store fetch.WriteStore, listed map[chunker.ID]bool) (*source, error) {
	sp, err := chunker.NewSplitter(p)
	if err != nil {
		return nil, err
	}
	has := func(id chunker.ID) bool {
		if listed != nil {
			return listed[id]
		}
		ok, err := store.HasChunk(ctx, id)
		return err == nil && ok
	}
	out := make(chan ready, 64)
	go t.run(sp, has, out)
	var cur ready
	src := &source{
		consumed: func(int, uint64) {},
		release: func() {
			select {
			case <-t.stop:
			default:
				close(t.stop)
			}
		},
		next: func() ([]byte, error) {
			r, ok := <-out
			if !ok {
				return nil, io.EOF
			}
			if r.err != nil {
				return nil, r.err
			}
			cur = r
			return r.data, nil
		},
		preset: func() (chunker.ID, uint64, bool) { return cur.id, cur.size, cur.preset },
	}
	return src, nil
}

func (t *TreeSource) run(sp *chunker.Splitter, has func(chunker.ID) bool, out chan<- ready) {
	defer close(out)
	var data []byte // data[start:] is the current chunk so far
	start := 0
	var pos uint64 // stream offset of data[start]
	put := func(r ready) bool {
		select {
		case out <- r:
			return true
		case <-t.stop:
			return false
		}
	}
	drain := func() bool {
		for {
			n := sp.Cut(data[start:])
			if n == 0 {
				break
			}
			if !put(ready{data: append([]byte(nil), data[start:start+n]...)}) {
				return false
			}
			start += n
			pos += uint64(n)
		}
		if start > 0 {
			data = data[:copy(data, data[start:])]
			start = 0
		}
		return true
	}
	feed := func(b []byte) bool {
		data = append(data, b...)
		return drain()
	}
	buf := make([]byte, 1<<20)
	for {
		var s segment
		select {
		case s = <-t.segs:
		case <-t.stop:
			return
		}
		switch {
		case s.end:
			if s.err != nil {
				put(ready{err: s.err})
				return
			}
			if len(data) > start {
				put(ready{data: append([]byte(nil), data[start:]...)})
			}
			return
		case s.done != nil:
			err := t.payload(s, has, buf, &pos, func() int { return len(data) - start }, feed, put)
			s.done <- err
			if err != nil {
				put(ready{err: err})
				return
			}
		default:
			if !feed(s.data) {
				return
			}
		}
	}
}

// payload puts one file's contents into the stream: the cached chunks
// where the stream is at their start, the file's bytes elsewhere.
func (t *TreeSource) payload(s segment, has func(chunker.ID) bool, buf []byte, pos *uint64, pending func() int, feed func([]byte) bool, put func(ready) bool) error {
	read := func(from, to int64) error {
		for from < to {
			b := buf[:min(int64(len(buf)), to-from)]
			n, err := syscall.Pread(s.fd, b, from)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				return fmt.Errorf("reading %s: %w", s.path, err)
			}
			if n == 0 {
				return fmt.Errorf("%s shrank while being archived", s.path)
			}
			t.Read.Add(int64(n))
			if !feed(b[:n]) {
				return errSourceStopped
			}
			from += int64(n)
		}
		return nil
	}
	var at int64
	for _, ch := range s.cached.Chunks {
		off, end := int64(ch.Off), int64(ch.Off+ch.Size)
		if off < at || end > s.size || ch.Size == 0 {
			break // not a cache this make wrote: read the rest
		}
		if err := read(at, off); err != nil {
			return err
		}
		at = off
		if pending() == 0 && has(ch.ID) {
			if !put(ready{id: ch.ID, size: ch.Size, preset: true}) {
				return errSourceStopped
			}
			*pos += ch.Size
			at = end
			t.Reused.Add(1)
		}
	}
	return read(at, s.size)
}

// Cache returns the cache for the next make: for each file, the chunks of
// x that lay wholly inside its contents.
func (t *TreeSource) Cache(x *chunker.Index, p chunker.Params, d chunker.Digest) *MakeCache {
	c := &MakeCache{Version: makeCacheVersion, Params: p, Digest: d, Files: map[string]*cachedFile{}}
	for _, r := range t.records {
		i := sort.Search(len(x.Chunks), func(i int) bool { return x.Chunks[i].Start >= r.start })
		var chunks []cachedChunk
		for ; i < len(x.Chunks) && x.Chunks[i].Start+x.Chunks[i].Size <= r.start+r.size; i++ {
			ch := x.Chunks[i]
			chunks = append(chunks, cachedChunk{Off: ch.Start - r.start, Size: ch.Size, ID: ch.ID})
		}
		if len(chunks) > 0 {
			c.Files[r.path] = &cachedFile{Key: r.key, Chunks: chunks}
		}
	}
	return c
}
