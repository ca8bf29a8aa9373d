package seed

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/camount/camount/cache"
	"github.com/camount/camount/chunker"
)

// ScanCache remembers the chunks found in file seeds, so that a seed that
// did not change is not scanned again (and an extracted image, recorded
// with Record, never needs a scan to seed its next update). An entry is
// keyed by the seed's absolute path, size, modification time, device and
// inode number, and the chunk parameters and digest; any change makes a
// new key. Only regular files are cached (a block device's times do not
// change when it is written). A stale or lying entry costs fetches, never
// wrong bytes: seeded chunks are verified when used.
type ScanCache struct {
	Dir string // entries live in Dir/seeds/
}

const cacheMagic = "camount seed scan v1\n"

// filePrefix starts the names of file seed scans in the cache directory
// (directory seeds keep theirs beside them).
const filePrefix = "file-"

func (c *ScanCache) key(path string, f *os.File, p Params) (string, bool) {
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return "", false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return "", false
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", false
	}
	k := fmt.Sprintf("%s\x00%d\x00%d\x00%d\x00%d\x00%d/%d/%d\x00%s", abs, st.Size(), st.ModTime().UnixNano(),
		sys.Dev, sys.Ino, p.Chunk.Min, p.Chunk.Avg, p.Chunk.Max, p.Digest)
	h := sha256.Sum256([]byte(k))
	return filepath.Join(c.Dir, cache.SeedDir, filePrefix+hex.EncodeToString(h[:16])), true
}

// load reports the chunks of a cached scan of s; false if there is none.
func (c *ScanCache) load(s *FileSeed, found Found) bool {
	name, ok := c.key(s.path, s.f, s.p)
	if !ok {
		return false
	}
	f, err := os.Open(name)
	if err != nil {
		return false
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<16)
	magic := make([]byte, len(cacheMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != cacheMagic {
		return false
	}
	// Records are checked whole before any is reported: a truncated entry
	// is ignored rather than half used.
	st, err := f.Stat()
	if err != nil || (st.Size()-int64(len(cacheMagic)))%recSize != 0 {
		return false
	}
	var rec [recSize]byte
	for {
		if _, err := io.ReadFull(r, rec[:]); err != nil {
			return err == io.EOF
		}
		var id chunker.ID
		copy(id[:], rec[:32])
		off := int64(binary.LittleEndian.Uint64(rec[32:]))
		size := int64(binary.LittleEndian.Uint32(rec[40:]))
		found(id, Location{R: s.f, Off: off, Size: size, File: s.f})
	}
}

const recSize = 32 + 8 + 4

type cacheWriter struct {
	name string
	f    *os.File
	w    *bufio.Writer
	err  error
}

// writer starts a cache entry for a scan of s; nil if s cannot be cached.
func (c *ScanCache) writer(s *FileSeed) *cacheWriter {
	name, ok := c.key(s.path, s.f, s.p)
	if !ok {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(name), cache.TempPrefix+"*")
	if err != nil {
		return nil
	}
	w := &cacheWriter{name: name, f: f, w: bufio.NewWriterSize(f, 1<<16)}
	w.w.WriteString(cacheMagic)
	return w
}

func (w *cacheWriter) add(id chunker.ID, off, size int64) {
	var rec [recSize]byte
	copy(rec[:], id[:])
	binary.LittleEndian.PutUint64(rec[32:], uint64(off))
	binary.LittleEndian.PutUint32(rec[40:], uint32(size))
	if _, err := w.w.Write(rec[:]); err != nil && w.err == nil {
		w.err = err
	}
}

// finish keeps the entry if the scan was whole and written.
func (w *cacheWriter) finish(ok bool) {
	err := w.w.Flush()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if ok && err == nil && w.err == nil && os.Rename(w.f.Name(), w.name) == nil {
		trimScans(filepath.Dir(w.name))
		return
	}
	os.Remove(w.f.Name())
}

// maxCacheEntries bounds the scans kept (file and tree scans): every change
// of a seed (or extract of an image) makes a new entry, so the least
// recently used are dropped.
const maxCacheEntries = 64

// trimScans keeps the maxCacheEntries most recently used scans of the
// scan directory dir (a cache's seeds/), after a new one was written.
func trimScans(dir string) {
	cache.TrimMeta(filepath.Dir(dir), filepath.Base(dir), maxCacheEntries)
}

// Record stores the chunks of the regular file at path, known to be the
// blob of index x (it was just extracted and verified), as its scan, so
// that seeding from it later needs no scan.
func (c *ScanCache) Record(path string, x *chunker.Index) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	s := &FileSeed{path: path, f: f, p: ParamsOf(x)}
	w := c.writer(s)
	if w == nil {
		return nil
	}
	for _, ch := range x.Chunks {
		w.add(ch.ID, int64(ch.Start), int64(ch.Size))
	}
	w.finish(true)
	return w.err
}

// Quick implements seed.Quick: the seed's scan is in the cache.
func (s *FileSeed) Quick() bool {
	if s.cache == nil {
		return false
	}
	name, ok := s.cache.key(s.path, s.f, s.p)
	if !ok {
		return false
	}
	st, err := os.Stat(name)
	return err == nil && st.Size() >= int64(len(cacheMagic)) && (st.Size()-int64(len(cacheMagic)))%recSize == 0
}

// SetCache makes the seed use (and fill) a scan cache.
func (s *FileSeed) SetCache(c *ScanCache) { s.cache = c }
