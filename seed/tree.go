package seed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/camount/camount/catar"
	"github.com/camount/camount/chunker"
)

// A directory seed serialises the tree as a catar with the target's feature
// flags and chunks it with the target's chunk parameters, exactly as casync
// does. The scan keeps, on disk, what is needed to regenerate any byte range
// of that stream later without encoding the tree again:
//
//   - skel: the stream with every file's contents left out (the metadata:
//     entries, names, goodbye tables), usually a few per cent of the stream;
//   - files: one record per regular file, in stream order: where its contents
//     lie in the stream and its path, so that payload bytes are read from the
//     file itself;
//   - chunks: the chunk table (ID, stream offset, size), sorted by ID;
//   - links (with TreeOptions.Hardlinks): (size, SHA-256 of contents, file)
//     sorted, to find a seed file equal to a target file.
//
// All four are memory-mapped, so memory stays bounded for big trees. A
// regenerated chunk is verified against its ID before it is handed out: a
// seed that changed after its scan costs a fetch, never a wrong byte.

// TreeOptions configures ScanTree. The zero value is not usable: Features,
// Params and Digest must be those of the target index.
type TreeOptions struct {
	// Features are the target archive's feature flags (a .caidx's flags).
	Features uint64
	// Params are the target index's chunk size parameters.
	Params chunker.Params
	// Digest is the target index's chunk digest.
	Digest chunker.Digest
	// CacheDir keeps scans between runs: a scan is reused while the tree's
	// fingerprint (paths, inodes, sizes, modes, owners and mtimes of every
	// node, from lstat alone) is unchanged. "" scans into a temporary
	// directory removed by Close.
	CacheDir string
	// Hardlinks records a digest of every file's contents so that
	// HardlinkCandidates can find seed files equal to target files.
	Hardlinks bool
	// Log receives debug messages; nil discards them.
	Log *slog.Logger
}

// ErrSeedChanged reports seed bytes that no longer match the chunk the scan
// found there: the seed changed after its scan.
var ErrSeedChanged = errors.New("seed changed since its scan")

const treeScanVersion = 1

type treeMeta struct {
	Version     int    `json:"version"`
	Dir         string `json:"dir"`
	Features    uint64 `json:"features"`
	Min         uint64 `json:"min"`
	Avg         uint64 `json:"avg"`
	Max         uint64 `json:"max"`
	Digest      int    `json:"digest"`
	Hardlinks   bool   `json:"hardlinks"`
	Fingerprint string `json:"fingerprint"`
	Size        int64  `json:"size"`
	Chunks      int64  `json:"chunks"`
	Files       int64  `json:"files"`
}

// Tree is a scanned directory seed.
type Tree struct {
	dir    string
	meta   treeMeta
	digest chunker.Digest
	tmp    string   // scan directory to remove on Close, or ""
	tmpLck *os.File // holds tmp's lock (scratch.go) until Close

	skel   *os.File
	files  []byte // mmapped fileRec records
	paths  []byte // mmapped NUL-terminated relative paths
	chunks []byte // mmapped chunkRec records
	links  []byte // mmapped linkRec records
	maps   [][]byte
	log    *slog.Logger
	// mu keeps the maps alive while they are read: Close takes it
	// exclusively.
	mu     sync.RWMutex
	closed bool
	// Reused reports whether the scan came from the cache.
	Reused bool
}

const (
	fileRecSize  = 32 // streamOff, size, payloadBefore (u64), pathOff (u64)
	chunkRecSize = 32 + 8 + 8
	linkRecSize  = 8 + 32 + 8 // size, sha256, file index
)

// ScanTree scans dir (or reuses its cached scan) as a seed for targets with
// o's features, chunk parameters and digest.
func ScanTree(ctx context.Context, dir string, o TreeOptions) (*Tree, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("seed %s: %w", dir, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("seed %s: not a directory", dir)
	}
	if err := o.Params.Check(); err != nil {
		return nil, fmt.Errorf("seed %s: %w", dir, err)
	}
	m := treeMeta{Version: treeScanVersion, Dir: abs, Features: o.Features, Min: o.Params.Min, Avg: o.Params.Avg,
		Max: o.Params.Max, Digest: int(o.Digest), Hardlinks: o.Hardlinks}
	fp, err := treeFingerprint(ctx, abs)
	if err != nil {
		return nil, fmt.Errorf("seed %s: %w", dir, err)
	}
	m.Fingerprint = fp
	final := treeCachePath(abs, o)
	if final != "" {
		if t, err := openTree(final, m, log); err == nil {
			t.Reused = true
			log.Debug("seed scan reused", "dir", abs, "cache", final)
			return t, nil
		}
		if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
			return nil, fmt.Errorf("seed cache %s: %w", o.CacheDir, err)
		}
	}
	parent := o.CacheDir
	cleanScratch(parent, log) // left by killed scans
	scanDir, lock, err := makeScratch(parent)
	if err != nil {
		return nil, fmt.Errorf("seed scan: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(scanDir)
			lock.Close()
		}
	}()
	if err := scanTree(ctx, abs, scanDir, &m, o); err != nil {
		return nil, fmt.Errorf("seed %s: %w", dir, err)
	}
	where := scanDir
	if final != "" {
		os.RemoveAll(final)
		if err := os.Rename(scanDir, final); err != nil {
			return nil, fmt.Errorf("seed cache: %w", err)
		}
		where = final
		lock.Close() // no longer a scratch directory
	}
	t, err := openTree(where, m, log)
	if err != nil {
		return nil, err
	}
	if final == "" {
		t.tmp, t.tmpLck = scanDir, lock
	} else {
		// A new scan: keep the cache's scans within bound now, not only
		// when a file scan is written next (a user seeding from many
		// trees and never from a file would otherwise grow it unbounded).
		trimScans(o.CacheDir)
	}
	ok = true
	log.Debug("seed scanned", "dir", abs, "bytes", m.Size, "chunks", m.Chunks, "files", m.Files)
	return t, nil
}

// treeCachePath is where the scan of the directory abs for o is cached
// ("" without a cache directory).
func treeCachePath(abs string, o TreeOptions) string {
	if o.CacheDir == "" {
		return ""
	}
	key := sha256.Sum256(fmt.Appendf(nil, "%s\x00%x\x00%d/%d/%d\x00%d\x00%v", abs, o.Features, o.Params.Min, o.Params.Avg, o.Params.Max, o.Digest, o.Hardlinks))
	return filepath.Join(o.CacheDir, "tree-"+hex.EncodeToString(key[:12]))
}

// treeFingerprint hashes lstat facts of every node under dir, in sorted
// order (path, device, inode, mode, owner, size, mtime), as file seeds are
// keyed: a change that keeps all of them (contents rewritten with the
// mtime put back, an xattr set) goes unseen and costs fetches, never
// wrong bytes.
func treeFingerprint(ctx context.Context, dir string) (string, error) {
	h := sha256.New()
	var walk func(rel string) error
	var b []byte
	walk = func(rel string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := dir
		if rel != "" {
			p = dir + "/" + rel
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			if errors.Is(err, syscall.ENOENT) {
				return nil
			}
			return &os.PathError{Op: "lstat", Path: p, Err: err}
		}
		b = append(b[:0], rel...)
		b = append(b, 0)
		for _, v := range []uint64{st.Dev, st.Ino, uint64(st.Mode), uint64(st.Uid), uint64(st.Gid), uint64(st.Size),
			uint64(st.Mtim.Sec), uint64(st.Mtim.Nsec), st.Rdev} {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
		h.Write(b)
		if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return fmt.Errorf("reading directory %s: %w", p, err)
		}
		sort.Strings(names)
		for _, n := range names {
			c := n
			if rel != "" {
				c = rel + "/" + n
			}
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(""); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// scanWriter receives the seed's catar stream: it chunks it, writes the
// bytes outside payloads to skel and hashes payloads for hardlinks.
type scanWriter struct {
	split  *chunker.Splitter
	digest chunker.Digest
	pos    int64 // stream offset of the next byte
	buf    []byte
	bufOff int64  // stream offset of buf[0]
	chunks []byte // guarded by mu
	jobs   chan *hashJob
	batch  *hashJob

	skel  io.Writer
	files io.Writer
	paths io.Writer

	mu       sync.Mutex
	pending  []payloadRange // announced, not yet fully received
	pathOff  int64
	payBytes int64
	nfiles   int64

	hashLinks bool
	lh        []byte // link records
	cur       *payloadRange
	hasher    interface {
		io.Writer
		Sum([]byte) []byte
		Reset()
	}
	err error
}

type payloadRange struct {
	off, size int64
	index     int64
}

func (w *scanWriter) announce(rel string, off, size int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var rec [fileRecSize]byte
	binary.LittleEndian.PutUint64(rec[0:], uint64(off))
	binary.LittleEndian.PutUint64(rec[8:], uint64(size))
	binary.LittleEndian.PutUint64(rec[16:], uint64(w.payBytes))
	binary.LittleEndian.PutUint64(rec[24:], uint64(w.pathOff))
	if _, err := w.files.Write(rec[:]); err != nil && w.err == nil {
		w.err = err
	}
	if _, err := io.WriteString(w.paths, rel+"\x00"); err != nil && w.err == nil {
		w.err = err
	}
	w.pathOff += int64(len(rel) + 1)
	w.payBytes += size
	w.pending = append(w.pending, payloadRange{off, size, w.nfiles})
	w.nfiles++
}

func (w *scanWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := len(p)
	// Split p into payload and metadata parts.
	q := p
	pos := w.pos
	for len(q) > 0 {
		w.mu.Lock()
		var r *payloadRange
		if len(w.pending) > 0 {
			r = &w.pending[0]
		}
		w.mu.Unlock()
		if r != nil && pos >= r.off {
			k := int(min(int64(len(q)), r.off+r.size-pos))
			if w.hashLinks {
				if w.cur == nil || w.cur.index != r.index {
					w.hasher.Reset()
					c := *r
					w.cur = &c
				}
				w.hasher.Write(q[:k])
			}
			pos += int64(k)
			q = q[k:]
			if pos == r.off+r.size {
				if w.hashLinks {
					var rec [linkRecSize]byte
					binary.BigEndian.PutUint64(rec[0:], uint64(r.size))
					w.hasher.Sum(rec[8:8])
					binary.LittleEndian.PutUint64(rec[40:], uint64(r.index))
					w.lh = append(w.lh, rec[:]...)
					w.cur = nil
				}
				w.mu.Lock()
				w.pending = w.pending[1:]
				w.mu.Unlock()
			}
			continue
		}
		k := len(q)
		if r != nil {
			k = int(min(int64(k), r.off-pos))
		}
		if _, err := w.skel.Write(q[:k]); err != nil {
			w.err = err
			return 0, err
		}
		pos += int64(k)
		q = q[k:]
	}
	w.pos = pos
	w.buf = append(w.buf, p...)
	w.cut(false)
	return n, nil
}

// cut finds the chunks complete in buf (all of it at the end) and queues
// them, a batch at a time, for the hashing workers.
func (w *scanWriter) cut(final bool) {
	for len(w.buf) > 0 {
		k := w.split.Cut(w.buf)
		if k == 0 {
			if !final {
				break
			}
			k = len(w.buf)
		}
		j := w.batch
		if j == nil {
			j = &hashJob{data: make([]byte, 0, hashBatch+int(w.split.Params().Max))}
			w.batch = j
		}
		j.offs = append(j.offs, w.bufOff)
		j.sizes = append(j.sizes, k)
		j.data = append(j.data, w.buf[:k]...)
		if len(j.data) >= hashBatch {
			w.jobs <- j
			w.batch = nil
		}
		w.bufOff += int64(k)
		w.buf = w.buf[k:]
	}
	if final && w.batch != nil {
		w.jobs <- w.batch
		w.batch = nil
	}
	if len(w.buf) == 0 {
		w.buf = w.buf[:0:0]
	} else if cap(w.buf) > 4<<20 && len(w.buf) < 1<<20 {
		w.buf = append(make([]byte, 0, 1<<20), w.buf...)
	}
}

// hashBatch is the bytes of chunks hashed together by one worker.
const hashBatch = 4 << 20

type hashJob struct {
	data  []byte
	offs  []int64
	sizes []int
}

// startHashers starts the workers that hash queued chunks and record them.
// A scan under a Background context hashes on one low-priority core.
func (w *scanWriter) startHashers(ctx context.Context) (wait func()) {
	n := max(1, runtime.GOMAXPROCS(0))
	if IsBackground(ctx) {
		n = 1
	}
	w.jobs = make(chan *hashJob, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			LowerPriority(ctx)
			var ids []chunker.ID
			var datas [][]byte
			var recs []byte
			for j := range w.jobs {
				datas = datas[:0]
				off := 0
				for _, k := range j.sizes {
					datas = append(datas, j.data[off:off+k])
					off += k
				}
				ids = slices.Grow(ids[:0], len(datas))[:len(datas)]
				w.digest.SumBatch(ids, datas)
				recs = recs[:0]
				for i, id := range ids {
					var rec [chunkRecSize]byte
					copy(rec[:], id[:])
					binary.LittleEndian.PutUint64(rec[32:], uint64(j.offs[i]))
					binary.LittleEndian.PutUint64(rec[40:], uint64(j.sizes[i]))
					recs = append(recs, rec[:]...)
				}
				w.mu.Lock()
				w.chunks = append(w.chunks, recs...)
				w.mu.Unlock()
			}
		}()
	}
	return func() {
		close(w.jobs)
		wg.Wait()
	}
}

func scanTree(ctx context.Context, dir, out string, m *treeMeta, o TreeOptions) error {
	split, err := chunker.NewSplitter(o.Params)
	if err != nil {
		return err
	}
	create := func(name string) (*os.File, error) {
		return os.OpenFile(filepath.Join(out, name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	}
	skel, err := create("skel")
	if err != nil {
		return err
	}
	defer skel.Close()
	files, err := create("files")
	if err != nil {
		return err
	}
	defer files.Close()
	paths, err := create("paths")
	if err != nil {
		return err
	}
	defer paths.Close()
	bs, bf, bp := newBufWriter(skel), newBufWriter(files), newBufWriter(paths)
	w := &scanWriter{split: split, digest: o.Digest, skel: bs, files: bf, paths: bp, hashLinks: o.Hardlinks, hasher: sha256.New()}
	prefix := dir + "/"
	waitHash := w.startHashers(ctx)
	hashed := false
	defer func() {
		if !hashed {
			waitHash()
		}
	}()
	n, err := catar.Encode(ctx, w, dir, catar.EncodeOptions{Features: o.Features, Log: o.Log,
		Payload: func(path string, off, size int64) { w.announce(strings.TrimPrefix(path, prefix), off, size) }})
	if err != nil {
		return err
	}
	if w.err != nil {
		return w.err
	}
	w.cut(true)
	waitHash()
	hashed = true
	for _, b := range []*bufWriter{bs, bf, bp} {
		if err := b.Flush(); err != nil {
			return err
		}
	}
	chunks := sortRecs(w.chunks, chunkRecSize, 32)
	if err := os.WriteFile(filepath.Join(out, "chunks"), chunks, 0o644); err != nil {
		return err
	}
	links := sortRecs(w.lh, linkRecSize, 40)
	if err := os.WriteFile(filepath.Join(out, "links"), links, 0o644); err != nil {
		return err
	}
	m.Size = n
	m.Chunks = int64(len(chunks) / chunkRecSize)
	m.Files = w.nfiles
	j, _ := json.Marshal(m)
	return os.WriteFile(filepath.Join(out, "meta.json"), j, 0o644)
}

// sortRecs sorts fixed-size records by their first key bytes (stable, so
// the first of equal keys is the earliest in the stream).
func sortRecs(b []byte, size, key int) []byte {
	n := len(b) / size
	idx := make([]int32, n)
	for i := range idx {
		idx[i] = int32(i)
	}
	sort.SliceStable(idx, func(i, j int) bool {
		a, c := int(idx[i])*size, int(idx[j])*size
		return bytes.Compare(b[a:a+key], b[c:c+key]) < 0
	})
	out := make([]byte, 0, len(b))
	for _, i := range idx {
		out = append(out, b[int(i)*size:int(i)*size+size]...)
	}
	return out
}

type bufWriter struct {
	w   io.Writer
	buf []byte
}

func newBufWriter(w io.Writer) *bufWriter { return &bufWriter{w: w, buf: make([]byte, 0, 256<<10)} }

func (b *bufWriter) Write(p []byte) (int, error) {
	if len(b.buf)+len(p) > cap(b.buf) {
		if err := b.Flush(); err != nil {
			return 0, err
		}
		if len(p) > cap(b.buf) {
			return b.w.Write(p)
		}
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *bufWriter) Flush() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.w.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}

// openTree maps a finished scan whose meta matches want (the fingerprint
// included).
func openTree(dir string, want treeMeta, log *slog.Logger) (*Tree, error) {
	j, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return nil, err
	}
	var m treeMeta
	if err := json.Unmarshal(j, &m); err != nil {
		return nil, err
	}
	got := m
	got.Size, got.Chunks, got.Files = 0, 0, 0
	want.Size, want.Chunks, want.Files = 0, 0, 0
	if got != want {
		return nil, errors.New("seed scan is stale")
	}
	t := &Tree{dir: want.Dir, meta: m, digest: chunker.Digest(m.Digest), log: log}
	ok := false
	defer func() {
		if !ok {
			t.Close()
		}
	}()
	for _, x := range []struct {
		name string
		dst  *[]byte
		rec  int
	}{{"files", &t.files, fileRecSize}, {"paths", &t.paths, 1}, {"chunks", &t.chunks, chunkRecSize}, {"links", &t.links, linkRecSize}} {
		b, err := mapFile(filepath.Join(dir, x.name))
		if err != nil {
			return nil, err
		}
		if len(b)%x.rec != 0 {
			return nil, fmt.Errorf("seed scan %s: %s is malformed", dir, x.name)
		}
		if b != nil {
			t.maps = append(t.maps, b)
		}
		*x.dst = b
	}
	if int64(len(t.chunks)/chunkRecSize) != m.Chunks || int64(len(t.files)/fileRecSize) != m.Files {
		return nil, fmt.Errorf("seed scan %s is incomplete", dir)
	}
	t.skel, err = os.Open(filepath.Join(dir, "skel"))
	if err != nil {
		return nil, err
	}
	ok = true
	return t, nil
}

func mapFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() == 0 {
		return nil, nil
	}
	return syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
}

// Close unmaps the scan (and removes it when it was not cached).
func (t *Tree) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	for _, b := range t.maps {
		syscall.Munmap(b)
	}
	t.maps = nil
	if t.skel != nil {
		t.skel.Close()
	}
	if t.tmp != "" {
		os.RemoveAll(t.tmp)
		t.tmpLck.Close()
	}
	return nil
}

// Dir returns the seed directory (absolute).
func (t *Tree) Dir() string { return t.dir }

// Size returns the length of the seed's catar stream.
func (t *Tree) Size() int64 { return t.meta.Size }

// Len returns the number of chunks of the seed's stream.
func (t *Tree) Len() int { return len(t.chunks) / chunkRecSize }

// find returns the stream offset and size of chunk id.
func (t *Tree) find(id chunker.ID) (off, size int64, ok bool) {
	n := len(t.chunks) / chunkRecSize
	i := sort.Search(n, func(i int) bool { return bytes.Compare(t.chunks[i*chunkRecSize:i*chunkRecSize+32], id[:]) >= 0 })
	if i >= n || !bytes.Equal(t.chunks[i*chunkRecSize:i*chunkRecSize+32], id[:]) {
		return 0, 0, false
	}
	r := t.chunks[i*chunkRecSize:]
	return int64(binary.LittleEndian.Uint64(r[32:])), int64(binary.LittleEndian.Uint64(r[40:])), true
}

// Has reports whether the scan found chunk id in the seed.
func (t *Tree) Has(id chunker.ID) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return false
	}
	_, _, ok := t.find(id)
	return ok
}

// Chunk regenerates chunk id from the seed and verifies it. It returns
// (nil, false, nil) when the scan did not find the chunk, and an error
// wrapping ErrSeedChanged when the seed's bytes no longer match.
func (t *Tree) Chunk(ctx context.Context, id chunker.ID) ([]byte, bool, error) {
	t.mu.RLock()
	off, size, ok := t.find(id)
	closed := t.closed
	t.mu.RUnlock()
	if closed {
		return nil, false, nil
	}
	if !ok {
		return nil, false, nil
	}
	b := make([]byte, size)
	if _, err := t.ReadAt(b, off); err != nil {
		return nil, true, fmt.Errorf("seed %s: chunk %s: %w (%v)", t.dir, id, ErrSeedChanged, err)
	}
	if t.digest.Sum(b) != id {
		return nil, true, fmt.Errorf("seed %s: chunk %s: %w", t.dir, id, ErrSeedChanged)
	}
	return b, true, nil
}

func (t *Tree) fileRec(i int) (off, size, before int64, path string) {
	r := t.files[i*fileRecSize:]
	off = int64(binary.LittleEndian.Uint64(r))
	size = int64(binary.LittleEndian.Uint64(r[8:]))
	before = int64(binary.LittleEndian.Uint64(r[16:]))
	po := int(binary.LittleEndian.Uint64(r[24:]))
	if po < len(t.paths) {
		e := bytes.IndexByte(t.paths[po:], 0)
		if e >= 0 {
			path = string(t.paths[po : po+e])
		}
	}
	return
}

// ReadAt regenerates bytes of the seed's catar stream as of the scan:
// metadata from the scan, file contents from the files themselves. A file
// that shrank is an error; one whose contents changed yields its new bytes
// (chunk verification catches that).
func (t *Tree) ReadAt(p []byte, off int64) (int, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return 0, fmt.Errorf("seed %s: closed", t.dir)
	}
	if off < 0 || off+int64(len(p)) > t.meta.Size {
		return 0, fmt.Errorf("seed %s: read [%d,+%d) outside the stream of %d bytes", t.dir, off, len(p), t.meta.Size)
	}
	nf := len(t.files) / fileRecSize
	done := 0
	// Raw descriptors: an os.File would cost a poller registration and a
	// finalizer per file, and a chunk of small files opens dozens.
	fd := -1
	var fpath string
	defer func() {
		if fd >= 0 {
			syscall.Close(fd)
		}
	}()
	for done < len(p) {
		pos := off + int64(done)
		// Last file whose payload starts at or before pos.
		i := sort.Search(nf, func(i int) bool {
			return int64(binary.LittleEndian.Uint64(t.files[i*fileRecSize:])) > pos
		}) - 1
		var skelOff, skelEnd int64 = pos, t.meta.Size
		if i >= 0 {
			foff, fsize, before, path := t.fileRec(i)
			if pos < foff+fsize {
				k := int(min(int64(len(p)-done), foff+fsize-pos))
				if fd < 0 || fpath != path {
					if fd >= 0 {
						syscall.Close(fd)
					}
					fd, fpath = -1, path
					full := filepath.Join(t.dir, path)
					var err error
					for {
						fd, err = syscall.Open(full, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
						if err != syscall.EINTR {
							break
						}
					}
					if err != nil {
						fd = -1
						return done, &os.PathError{Op: "open", Path: full, Err: err}
					}
				}
				m, err := preadFull(fd, p[done:done+k], pos-foff)
				if m < k {
					if err == nil || err == io.EOF {
						err = fmt.Errorf("%s shrank", path)
					}
					return done, err
				}
				done += k
				continue
			}
			skelOff = pos - before - fsize
		}
		if i+1 < nf {
			next, _, _, _ := t.fileRec(i + 1)
			skelEnd = next
		}
		k := int(min(int64(len(p)-done), skelEnd-pos))
		m, err := t.skel.ReadAt(p[done:done+k], skelOff)
		if m < k {
			if err == nil || err == io.EOF {
				err = errors.New("scan truncated")
			}
			return done, err
		}
		done += k
	}
	return done, nil
}

// preadFull reads len(p) bytes at off, or up to the end of the file (then
// io.EOF).
func preadFull(fd int, p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := syscall.Pread(fd, p[n:], off+int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, io.EOF
		}
		n += m
	}
	return n, nil
}

// HardlinkCandidates returns the seed files (relative paths) whose contents
// are size bytes with SHA-256 sum, as found by the scan. Callers check the
// file's metadata (and that it is unchanged) before linking to it.
func (t *Tree) HardlinkCandidates(size int64, sum [32]byte) []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return nil
	}
	n := len(t.links) / linkRecSize
	var key [40]byte
	binary.BigEndian.PutUint64(key[:], uint64(size))
	copy(key[8:], sum[:])
	i := sort.Search(n, func(i int) bool { return bytes.Compare(t.links[i*linkRecSize:i*linkRecSize+40], key[:]) >= 0 })
	var out []string
	for ; i < n && bytes.Equal(t.links[i*linkRecSize:i*linkRecSize+40], key[:]); i++ {
		fi := int(binary.LittleEndian.Uint64(t.links[i*linkRecSize+40:]))
		if fi < len(t.files)/fileRecSize {
			_, _, _, p := t.fileRec(fi)
			out = append(out, p)
		}
		if len(out) >= 4 {
			break
		}
	}
	return out
}
