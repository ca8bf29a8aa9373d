package vfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/camount/camount/catar"
)

func TestErrno(t *testing.T) {
	for _, c := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{context.Canceled, syscall.EINTR},
		{fmt.Errorf("chunk x: %w", context.DeadlineExceeded), syscall.EINTR},
		{fmt.Errorf("lookup: %w", fs.ErrNotExist), syscall.ENOENT},
		{fmt.Errorf("archive: %w", catar.ErrFormat), syscall.EIO},
		{fmt.Errorf("store: %w", syscall.ENOSPC), syscall.ENOSPC},
		{errors.New("chunk 1234 from /store is corrupt: digest mismatch"), syscall.EIO},
	} {
		if got := Errno(c.err); got != c.want {
			t.Errorf("Errno(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// memSource is a Source over bytes that fails reads touching bad, blocks
// reads touching stall until they are cancelled, and records concurrency,
// hints and prefetches.
type memSource struct {
	data       []byte
	bad, stall [2]int64 // [start, end)
	stalling   atomic.Bool
	delay      atomic.Int64 // time.Duration: set while the kernel may be reading

	active, maxActive atomic.Int32
	reads             atomic.Int64
	cancelled         chan struct{}
	cancelOnce        sync.Once

	mu       sync.Mutex
	handles  map[uint64]int // reads per handle
	closed   map[uint64]bool
	prefetch int
}

func newMemSource(data []byte) *memSource {
	return &memSource{data: data, cancelled: make(chan struct{}), handles: map[uint64]int{}, closed: map[uint64]bool{}}
}

func overlaps(off, n int64, r [2]int64) bool { return off < r[1] && off+n > r[0] }

func (s *memSource) Size() int64 { return int64(len(s.data)) }

func (s *memSource) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	s.reads.Add(1)
	a := s.active.Add(1)
	defer s.active.Add(-1)
	for {
		m := s.maxActive.Load()
		if a <= m || s.maxActive.CompareAndSwap(m, a) {
			break
		}
	}
	if d := time.Duration(s.delay.Load()); d > 0 {
		time.Sleep(d)
	}
	if s.stalling.Load() && overlaps(off, int64(len(p)), s.stall) {
		<-ctx.Done()
		s.cancelOnce.Do(func() { close(s.cancelled) })
		return 0, fmt.Errorf("waiting for chunk: %w", ctx.Err())
	}
	if overlaps(off, int64(len(p)), s.bad) {
		return 0, errors.New("chunk abcd from teststore is corrupt: digest mismatch")
	}
	if off >= int64(len(s.data)) {
		return 0, io.EOF
	}
	n := copy(p, s.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// hintedSource adds HintedSource and Prefetcher.
type hintedSource struct{ *memSource }

func (s hintedSource) ReadAtHint(ctx context.Context, p []byte, off int64, h uint64) (int, error) {
	s.mu.Lock()
	s.handles[h]++
	s.mu.Unlock()
	return s.ReadAtContext(ctx, p, off)
}

func (s hintedSource) CloseHint(h uint64) {
	s.mu.Lock()
	s.closed[h] = true
	s.mu.Unlock()
}

func (s hintedSource) PrefetchRange(off, n int64) {
	s.mu.Lock()
	s.prefetch++
	s.mu.Unlock()
}

func needFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("/dev/fuse is absent: no FUSE on this machine")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil && os.Geteuid() != 0 {
		t.Skip("fusermount3 is not installed")
	}
}

func mountT(t *testing.T, root gofs.InodeEmbedder) string {
	t.Helper()
	dir := t.TempDir()
	srv, err := Mount(dir, root, MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			exec.Command("fusermount3", "-uz", dir).Run()
		}
	})
	return dir
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/4096)
	}
	return b
}

func TestBlobMount(t *testing.T) {
	needFUSE(t)
	data := pattern(4 << 20)
	src := newMemSource(data)
	src.bad = [2]int64{2 << 20, 2<<20 + 1000}
	src.stall = [2]int64{3 << 20, 3<<20 + 1}
	mt := time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)
	dir := mountT(t, NewBlob(hintedSource{src}, BlobOptions{Name: "disk.img", MTime: mt, UID: 12, GID: 34}))
	file := filepath.Join(dir, "disk.img")

	var st syscall.Stat_t
	if err := syscall.Stat(file, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != int64(len(data)) || st.Mode != syscall.S_IFREG|0o444 || st.Ino != 2 || st.Uid != 12 || st.Gid != 34 ||
		st.Mtim.Sec != mt.Unix() || st.Mtim.Nsec != 123456789 || st.Blocks != int64(len(data))/512 {
		t.Errorf("stat: %+v", st)
	}
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(dir, &sfs); err != nil || sfs.Flags&0x1 == 0 { // ST_RDONLY
		t.Errorf("statfs: flags %#x, %v", sfs.Flags, err)
	}
	if _, err := os.OpenFile(file, os.O_WRONLY, 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("open for writing: %v", err)
	}

	// Concurrent reads through ONE handle run in parallel (no lock, no
	// seek position), each with the right bytes.
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	src.delay.Store(int64(50 * time.Millisecond))
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			off := int64(g) * 128 << 10
			buf := make([]byte, 64<<10)
			if n, err := f.ReadAt(buf, off); err != nil || !bytes.Equal(buf[:n], data[off:off+int64(n)]) || n != len(buf) {
				t.Errorf("read at %d: %d, %v", off, n, err)
			}
		}(g)
	}
	wg.Wait()
	src.delay.Store(0)
	if m := src.maxActive.Load(); m < 4 {
		t.Errorf("at most %d reads ran at once through one handle; want parallel reads", m)
	}
	// A failing range gives EIO for reads that touch it, only.
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 2<<20); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of the bad range: %v, want EIO", err)
	}
	if n, err := f.ReadAt(buf, 2<<20+4096); err != nil || !bytes.Equal(buf[:n], data[2<<20+4096:2<<20+4096+n]) {
		t.Errorf("read after the bad range: %d, %v", n, err)
	}
	// Short read at the end.
	if n, err := f.ReadAt(buf, int64(len(data))-100); n != 100 || (err != nil && err != io.EOF) {
		t.Errorf("read at the end: %d, %v", n, err)
	}
	f.Close()

	// Two opens are two handles, each closed when released.
	for i := 0; i < 2; i++ {
		if _, err := os.ReadFile(file); err == nil {
			t.Fatal("reading the whole file (with the bad range) succeeded")
		}
	}
	time.Sleep(100 * time.Millisecond) // RELEASE is asynchronous
	src.mu.Lock()
	if len(src.handles) < 3 {
		t.Errorf("reads per handle: %v", src.handles)
	}
	for h := range src.handles {
		if !src.closed[h] {
			t.Errorf("handle %d read but never closed (%v)", h, src.closed)
		}
	}
	src.mu.Unlock()

	// An interrupted read (the reader is killed while the source waits)
	// cancels the source's context.
	src.stalling.Store(true)
	cmd := exec.Command("dd", "if="+file, "iflag=direct", "bs=4096", "skip=768", "count=1", "of=/dev/null")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for src.active.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	select {
	case <-src.cancelled:
	case <-time.After(5 * time.Second):
		t.Error("the source's context was not cancelled when the reader was killed")
	}
}

// TestTreeMount mounts a catar made by catar.Encode and checks lookups,
// listings, reads, metadata and the prefetch hints.
func TestTreeMount(t *testing.T) {
	needFUSE(t)
	tree := t.TempDir()
	os.MkdirAll(filepath.Join(tree, "a", "b"), 0o755)
	os.WriteFile(filepath.Join(tree, "a", "b", "file"), pattern(300000), 0o640)
	os.WriteFile(filepath.Join(tree, "top"), []byte("top\n"), 0o644)
	os.Symlink("a/b/file", filepath.Join(tree, "link"))
	for i := 0; i < 100; i++ {
		os.WriteFile(filepath.Join(tree, "a", fmt.Sprintf("f%03d", i)), []byte(fmt.Sprint(i)), 0o644)
	}
	buf := encodeDir(t, tree)
	src := newMemSource(buf)
	arc := openArchive(t, src)
	dir := mountT(t, NewTree(arc, hintedSource{src}, TreeOptions{}))

	// A deep lookup before any listing.
	b, err := os.ReadFile(filepath.Join(dir, "a", "b", "file"))
	if err != nil || !bytes.Equal(b, pattern(300000)) {
		t.Fatalf("read a/b/file: %d bytes, %v", len(b), err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "link")); err != nil || target != "a/b/file" {
		t.Errorf("readlink: %q, %v", target, err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "a"))
	if err != nil || len(ents) != 101 {
		t.Fatalf("readdir a: %d entries, %v", len(ents), err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "a", "f042")); err != nil || string(b) != "42" {
		t.Errorf("read a/f042 after listing: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a", "nope")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat of a missing name after listing: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "top", "x")); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("lookup below a file: %v", err)
	}
	var st, sst syscall.Stat_t
	syscall.Lstat(filepath.Join(dir, "a", "b", "file"), &st)
	syscall.Lstat(filepath.Join(tree, "a", "b", "file"), &sst)
	e, _ := arc.LookupPath("a/b/file")
	if st.Mode != sst.Mode || st.Size != sst.Size || st.Mtim != sst.Mtim || st.Ino != uint64(e.Offset)+1 || st.Nlink != 1 {
		t.Errorf("stat: %+v, source %+v", st, sst)
	}
	if err := os.Mkdir(filepath.Join(dir, "new"), 0o755); !errors.Is(err, syscall.EROFS) {
		t.Errorf("mkdir: %v, want EROFS", err)
	}
	src.mu.Lock()
	if src.prefetch == 0 {
		t.Error("listing a directory sent no prefetch hints")
	}
	src.mu.Unlock()

	// A stat of a deep path on a fresh mount reads only the records on its
	// way: no directory is listed and a few goodbye items per level are read.
	fresh := newMemSource(buf)
	arc2, err := catar.Open(ReaderAt(context.Background(), fresh), fresh.Size())
	if err != nil {
		t.Fatal(err)
	}
	dir3 := mountT(t, NewTree(arc2, hintedSource{fresh}, TreeOptions{}))
	fresh.reads.Store(0)
	if _, err := os.Stat(filepath.Join(dir3, "a", "b", "file")); err != nil {
		t.Fatal(err)
	}
	if n := fresh.reads.Load(); n > 3*(3+8+2) || n == 0 {
		t.Errorf("stat of a/b/file read the source %d times", n)
	}
	fresh.mu.Lock()
	if fresh.prefetch != 0 {
		t.Errorf("stat of a/b/file listed directories (%d prefetch hints)", fresh.prefetch)
	}
	fresh.mu.Unlock()

	// Over a source without hints, OPEN is answered with ENOSYS (the
	// kernel then opens files without asking); reads still work.
	plain := newMemSource(buf)
	dir2 := mountT(t, NewTree(arc, plain, TreeOptions{}))
	for i := 0; i < 2; i++ {
		b, err := os.ReadFile(filepath.Join(dir2, "a", "b", "file"))
		if err != nil || !bytes.Equal(b, pattern(300000)) {
			t.Fatalf("read a/b/file without open handles: %d bytes, %v", len(b), err)
		}
	}
	if _, err := os.OpenFile(filepath.Join(dir2, "top"), os.O_WRONLY, 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("open for writing without open handles: %v", err)
	}
}

// TestTreeMountCorrupt mounts archives with flipped bytes and walks and
// reads everything: errors (EIO) are fine, panics and hangs are not.
func TestTreeMountCorrupt(t *testing.T) {
	needFUSE(t)
	tree := t.TempDir()
	for i := 0; i < 30; i++ {
		d := filepath.Join(tree, fmt.Sprintf("d%d", i%4))
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, fmt.Sprintf("f%02d", i)), pattern(100+i*37), 0o644)
	}
	os.Symlink("d0/f00", filepath.Join(tree, "link"))
	buf := encodeDir(t, tree)
	good := buf
	mounted := 0
	for seed := 0; seed < 12; seed++ {
		data := append([]byte(nil), good...)
		for k := 0; k < 3; k++ {
			p := (seed*7919 + k*104729) % (len(data) - 64)
			data[p+1] ^= byte(0x5a + seed + k)
		}
		src := newMemSource(data)
		arc, err := catar.Open(ReaderAt(context.Background(), src), src.Size())
		if err != nil {
			continue // refused at open: fine
		}
		mounted++
		dir := mountT(t, NewTree(arc, hintedSource{src}, TreeOptions{}))
		done := make(chan struct{})
		go func() {
			defer close(done)
			filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
				if err == nil && info.Mode().IsRegular() {
					os.ReadFile(p)
				}
				if err == nil && info.Mode()&os.ModeSymlink != 0 {
					os.Readlink(p)
				}
				return nil
			})
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("seed %d: walking a corrupt archive hangs", seed)
		}
	}
	if mounted == 0 {
		t.Error("no corrupted archive opened; the test checks nothing")
	}
}

// encodeDir returns the catar archive of the directory dir.
func encodeDir(t *testing.T, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := catar.Encode(context.Background(), &buf, dir, catar.EncodeOptions{}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// openArchive opens the archive src holds.
func openArchive(t *testing.T, src Source) *catar.Archive {
	t.Helper()
	arc, err := catar.Open(ReaderAt(context.Background(), src), src.Size())
	if err != nil {
		t.Fatal(err)
	}
	return arc
}
