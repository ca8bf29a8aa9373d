package cache

import (
	"container/list"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/camount/camount/chunker"
)

// DiskOptions configure a Disk cache. Zero values are the defaults.
type DiskOptions struct {
	// Dir is the cache directory, created if missing. Required.
	Dir string
	// MaxBytes bounds the directory: the chunk data kept plus the indexes
	// and seed scans kept beside them (as of the last scan); 0 means 10 GiB.
	// Only chunks are evicted to stay within it.
	MaxBytes int64
	// Rescan is how often the directory is rescanned to see what other
	// processes sharing it added or removed; 0 means 10s. A rescan also
	// happens after this process wrote MaxBytes/16.
	Rescan time.Duration
	// Log receives warnings (corrupt files, I/O errors); nil discards.
	Log *slog.Logger
}

// DefaultDiskBytes is the disk cache bound when none is given.
const DefaultDiskBytes = 10 << 30

// Disk is a persistent cache of verified chunks bounded in bytes, in the
// .castr layout: <dir>/<first 4 hex>/<hex>, one uncompressed chunk per file.
// casync and camount read uncompressed chunk files, so the directory also
// works as a chunk store; keeping chunks uncompressed means reading one back
// costs only its digest, and writing costs no compression.
//
// Everything read back is verified against its chunk ID and size; a file
// that does not verify is removed and counts as a miss. Files are written
// to a temporary name and linked into place, so no reader ever sees a torn
// file. Several processes may share one directory: each tracks sizes in
// memory, seeded by a scan (oldest access time first) and refreshed by
// rescans, and evicts the least recently used chunks until the total is
// within the bound. A hit sets the file's access time, so recency survives
// restarts and is seen by the other processes.
type Disk struct {
	dir     string
	max     int64
	rescan  time.Duration
	log     *slog.Logger
	kick    chan struct{}
	stop    chan struct{}
	stopped sync.WaitGroup
	// evictMu is held (write) while victims are chosen and removed, and
	// (read) while a chunk file is written, so a write never lands before
	// the room made for it.
	evictMu sync.RWMutex

	mu         sync.Mutex
	lru        *list.List                   // of *diskEntry, front = most recent; guarded by mu
	entries    map[chunker.ID]*list.Element // guarded by mu
	bytes      int64                        // guarded by mu
	meta       int64                        // metadata bytes (indexes, seed scans) at the last scan; guarded by mu
	pending    map[chunker.ID]int64         // reserved, file being written: size; guarded by mu
	written    int64                        // bytes written since the last scan; guarded by mu
	lastScan   time.Time                    // guarded by mu
	metaWarned bool                         // guarded by mu

	Hits, Misses, Corrupt, Writes, Evicted atomic.Int64
	writeFailed                            atomic.Int64
}

type diskEntry struct {
	id   chunker.ID
	size int64
	used time.Time
}

// OpenDisk opens (creating) a cache directory and scans it.
func OpenDisk(o DiskOptions) (*Disk, error) {
	if o.Dir == "" {
		return nil, errors.New("disk cache: no directory given")
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("disk cache: %w", err)
	}
	d := &Disk{
		dir:     o.Dir,
		max:     o.MaxBytes,
		rescan:  o.Rescan,
		log:     o.Log,
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		lru:     list.New(),
		entries: map[chunker.ID]*list.Element{},
		pending: map[chunker.ID]int64{},
	}
	if d.max <= 0 {
		d.max = DefaultDiskBytes
	}
	if d.rescan <= 0 {
		d.rescan = 10 * time.Second
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if err := d.scan(); err != nil {
		return nil, err
	}
	d.evict()
	d.stopped.Add(1)
	go d.maintain()
	return d, nil
}

// Close stops the background maintenance. The directory stays as it is.
func (d *Disk) Close() error {
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	d.stopped.Wait()
	return nil
}

// Dir returns the cache directory.
func (d *Disk) Dir() string { return d.dir }

// MaxBytes returns the bound.
func (d *Disk) MaxBytes() int64 { return d.max }

// Bytes returns the chunk data the cache holds, as last seen.
func (d *Disk) Bytes() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.bytes
}

// Len returns the number of chunks the cache holds, as last seen.
func (d *Disk) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.entries)
}

func (d *Disk) path(id chunker.ID) string {
	h := id.String()
	return filepath.Join(d.dir, h[:4], h)
}

// Get returns the chunk if the cache holds an intact copy of it.
func (d *Disk) Get(c chunker.Chunk, dg chunker.Digest) ([]byte, bool) {
	p := d.path(c.ID)
	data, err := readExact(p, int64(c.Size))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			d.log.Warn("disk cache: unreadable chunk file, removing it", "file", p, "err", err)
			d.Corrupt.Add(1)
			d.remove(c.ID, p)
		} else {
			d.forget(c.ID)
		}
		d.Misses.Add(1)
		return nil, false
	}
	if dg.Sum(data) != c.ID {
		d.log.Warn("disk cache: chunk file does not match its ID, removing it", "file", p)
		d.Corrupt.Add(1)
		d.remove(c.ID, p)
		d.Misses.Add(1)
		return nil, false
	}
	now := time.Now()
	os.Chtimes(p, now, time.Time{}) // record the use for restarts and other processes
	d.mu.Lock()
	if e, ok := d.entries[c.ID]; ok {
		e.Value.(*diskEntry).used = now
		d.lru.MoveToFront(e)
	} else {
		d.add(c.ID, int64(len(data)), now)
	}
	d.mu.Unlock()
	d.Hits.Add(1)
	return data, true
}

// readExact reads a regular file that must hold exactly size bytes.
func readExact(p string, size int64) ([]byte, error) {
	// O_NONBLOCK: a FIFO planted in the cache must not block the open;
	// the mode check below refuses it.
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file: %w", p, fs.ErrNotExist)
	}
	if st.Size() != size {
		return nil, fmt.Errorf("%s: %d bytes, the chunk has %d", p, st.Size(), size)
	}
	b := make([]byte, size)
	n, err := f.ReadAt(b, 0)
	if int64(n) == size {
		return b, nil
	}
	return nil, err
}

// Put stores a verified chunk. Errors are logged and the chunk dropped: a
// cache that cannot write is only a slower cache. Room is made before the
// file is written, so the directory never holds more than the bound
// (as far as this process knows).
func (d *Disk) Put(id chunker.ID, data []byte) {
	size := int64(len(data))
	if size > d.max {
		return
	}
	d.mu.Lock()
	if _, have := d.entries[id]; have {
		d.mu.Unlock()
		return
	}
	d.add(id, size, time.Now()) // reserve: the newest entry is never a victim
	d.pending[id] = size
	d.written += size
	over := d.bytes+d.meta > d.max
	rescan := d.written > d.max/16
	d.mu.Unlock()
	if over {
		d.evict()
	}
	p := d.path(id)
	d.evictMu.RLock()
	err := writeAtomic(p, data)
	d.evictMu.RUnlock()
	d.mu.Lock()
	delete(d.pending, id)
	if e, ok := d.entries[id]; ok {
		e.Value.(*diskEntry).used = time.Now() // a scan listing from before sees it as new
	}
	d.mu.Unlock()
	if err != nil {
		if d.writeFailed.Add(1) == 1 { // once: a full or read-only disk would flood the log
			d.log.Warn("disk cache: cannot store chunks (reads continue without it)", "file", p, "err", err)
		} else {
			d.log.Debug("disk cache: cannot store chunk", "file", p, "err", err)
		}
		d.forget(id) // no longer pending
		return
	}
	d.Writes.Add(1)
	if rescan {
		select {
		case d.kick <- struct{}{}:
		default:
		}
	}
}

// writeAtomic writes data to a temporary file beside p and links it into
// place without replacing an existing file.
func writeAtomic(p string, data []byte) error {
	dir := filepath.Dir(p)
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := p + "." + hex.EncodeToString(rnd[:]) + ".tmp"
	err := os.WriteFile(tmp, data, 0o444)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(dir, 0o755); err == nil {
			err = os.WriteFile(tmp, data, 0o444)
		}
	}
	defer os.Remove(tmp)
	if err != nil {
		return err
	}
	if err := os.Link(tmp, p); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

// Has reports whether the cache lists a chunk (as of its last scan or
// write), without reading it; Get still verifies what it returns. It lets
// a background fill resume without re-reading what is cached (fetch.OnDisk).
func (d *Disk) Has(id chunker.ID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.entries[id]
	return ok
}

// add records a chunk file. d.mu held.
func (d *Disk) add(id chunker.ID, size int64, used time.Time) {
	if _, ok := d.entries[id]; ok {
		return
	}
	d.entries[id] = d.lru.PushFront(&diskEntry{id: id, size: size, used: used})
	d.bytes += size
}

// forget drops a chunk from the accounting (its file is gone), unless it
// is being written (its room is reserved).
func (d *Disk) forget(id chunker.ID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, writing := d.pending[id]; writing {
		return
	}
	if e, ok := d.entries[id]; ok {
		d.bytes -= e.Value.(*diskEntry).size
		d.lru.Remove(e)
		delete(d.entries, id)
	}
}

func (d *Disk) remove(id chunker.ID, p string) {
	os.Remove(p)
	d.forget(id)
}

func (d *Disk) maintain() {
	defer d.stopped.Done()
	t := time.NewTicker(d.rescan)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			d.mu.Lock()
			due := time.Since(d.lastScan) >= d.rescan
			d.mu.Unlock()
			if due {
				d.scan()
				d.evict()
			}
		case <-d.kick:
			d.scan() // see what other processes sharing the directory added
			d.evict()
		}
	}
}

// evict removes least recently used chunks until the total is within the
// bound (down to 90% of it, so eviction runs in batches).
func (d *Disk) evict() {
	d.evictMu.Lock()
	defer d.evictMu.Unlock()
	d.mu.Lock()
	if d.bytes+d.meta <= d.max {
		d.mu.Unlock()
		return
	}
	target := d.max - d.max/10 - d.meta
	var victims []*diskEntry
	for e := d.lru.Back(); e != nil && d.bytes > target; {
		de := e.Value.(*diskEntry)
		prev := e.Prev()
		// A chunk still being written is no victim: its file does not exist
		// yet, so removing it now would leave the file, once linked into
		// place, on disk but out of the accounting.
		if _, writing := d.pending[de.id]; !writing {
			d.lru.Remove(e)
			delete(d.entries, de.id)
			d.bytes -= de.size
			victims = append(victims, de)
		}
		e = prev
	}
	d.mu.Unlock()
	for _, de := range victims {
		if err := os.Remove(d.path(de.id)); err == nil {
			d.Evicted.Add(1)
		}
	}
}

// scan rebuilds the accounting from the directory: every chunk file, ordered
// by access time, and removes temporary files older than an hour (left by a
// crashed writer).
func (d *Disk) scan() error {
	start := time.Now()
	files, err := ScanDir(d.dir)
	if err != nil {
		return fmt.Errorf("disk cache %s: %w", d.dir, err)
	}
	for _, t := range files.StaleTemps {
		os.Remove(t)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// Keep this process's recency where it knows better than the atime.
	known := map[chunker.ID]*diskEntry{}
	for id, e := range d.entries {
		known[id] = e.Value.(*diskEntry)
	}
	d.lru.Init()
	d.entries = map[chunker.ID]*list.Element{}
	d.bytes = 0
	for i := range files.Chunks {
		f := &files.Chunks[i]
		if e, ok := known[f.ID]; ok {
			if e.used.After(f.Used) {
				f.Used = e.used
			}
			delete(known, f.ID)
		}
	}
	// Chunks this process reserved or wrote while the directory was being
	// listed are not in the listing but are (or will be) on disk.
	for _, e := range known {
		if _, writing := d.pending[e.id]; writing || !e.used.Before(start) {
			files.Chunks = append(files.Chunks, ChunkFile{ID: e.id, Size: e.size, Used: e.used})
		}
	}
	sort.Slice(files.Chunks, func(i, j int) bool { return files.Chunks[i].Used.Before(files.Chunks[j].Used) })
	for _, f := range files.Chunks {
		d.add(f.ID, f.Size, f.Used) // oldest first, so the newest ends at the front
	}
	d.meta = files.MetaBytes()
	if d.meta > d.max/2 && !d.metaWarned {
		d.metaWarned = true
		d.log.Warn("disk cache: kept indexes and seed scans take over half of the bound, leaving little room for chunks",
			"dir", d.dir, "metadata", d.meta, "bound", d.max)
	}
	d.written = 0
	d.lastScan = time.Now()
	return nil
}

// ChunkFile is a chunk file found in a cache directory.
type ChunkFile struct {
	ID   chunker.ID
	Path string
	Size int64
	Used time.Time // last access
}

// DirContents is what ScanDir finds.
type DirContents struct {
	Chunks     []ChunkFile
	Temps      int         // temporary files (writes in progress or abandoned)
	StaleTemps []string    // temporary files older than an hour
	Other      int         // files that are neither (e.g. compressed .cacnk chunks)
	Meta       []MetaEntry // indexes and seed scans kept by other packages (IndexDir, SeedDir)
}

// ScanDir lists the chunk files of a cache directory and the metadata kept
// beside them.
func ScanDir(dir string) (*DirContents, error) {
	out := &DirContents{}
	top, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	old := time.Now().Add(-time.Hour)
	for _, sub := range top {
		if sub.IsDir() && (sub.Name() == IndexDir || sub.Name() == SeedDir) {
			scanMeta(dir, sub.Name(), old, out)
			continue
		}
		if !sub.IsDir() || len(sub.Name()) != 4 {
			continue
		}
		subdir := filepath.Join(dir, sub.Name())
		ents, err := os.ReadDir(subdir)
		if err != nil {
			continue // removed meanwhile, or unreadable
		}
		for _, e := range ents {
			name := e.Name()
			p := filepath.Join(subdir, name)
			if strings.HasSuffix(name, ".tmp") {
				out.Temps++
				if info, err := e.Info(); err == nil && info.ModTime().Before(old) {
					out.StaleTemps = append(out.StaleTemps, p)
				}
				continue
			}
			id, err := chunker.ParseID(name)
			if err != nil || !strings.HasPrefix(name, sub.Name()) {
				out.Other++
				continue
			}
			info, err := e.Info()
			if err != nil || !info.Mode().IsRegular() {
				continue
			}
			out.Chunks = append(out.Chunks, ChunkFile{ID: id, Path: p, Size: info.Size(), Used: usedTime(info)})
		}
	}
	return out, nil
}

// Prune shrinks a cache directory to at most maxBytes, counting chunk files
// and the metadata beside them: the least recently used chunks go first,
// then, if the metadata alone is over the bound, the least recently used
// metadata entries (an index kept for offline starts, a seed scan). It also
// removes temporary files older than an hour. It returns the files (chunk
// files and metadata entries) and bytes removed.
func Prune(dir string, maxBytes int64) (files int, bytes int64, err error) {
	c, err := ScanDir(dir)
	if err != nil {
		return 0, 0, err
	}
	for _, t := range c.StaleTemps {
		os.Remove(t)
	}
	total := c.MetaBytes()
	for _, f := range c.Chunks {
		total += f.Size
	}
	sort.Slice(c.Chunks, func(i, j int) bool { return c.Chunks[i].Used.Before(c.Chunks[j].Used) })
	for _, f := range c.Chunks {
		if total <= maxBytes {
			break
		}
		if err := os.Remove(f.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return files, bytes, err
		}
		total -= f.Size
		files++
		bytes += f.Size
	}
	sort.Slice(c.Meta, func(i, j int) bool { return c.Meta[i].Used.Before(c.Meta[j].Used) })
	for _, m := range c.Meta {
		if total <= maxBytes {
			break
		}
		if err := m.Remove(); err != nil {
			return files, bytes, err
		}
		total -= m.Size
		files++
		bytes += m.Size
	}
	return files, bytes, nil
}
