package main

// Tree images (.catar archives and .caidx indexes): make/extract helpers
// called by make.go and extract, and the list, mtree and digest verbs.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/camount/camount/catar"
	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
	"github.com/camount/camount/location"
)

// treeFlags are the tree-specific flags (feature selection).
type treeFlags struct {
	with, without    stringList
	excludeNodump    string
	excludeSubmounts string
	excludeFile      string
	fs               *flag.FlagSet
	bf               *blobFlags // the verb's store flags, when it owns them
	uid              *uidShiftFlags
	nonRecursive     bool // list --recursive=no
}

func addTreeFlags(fs *flag.FlagSet) *treeFlags {
	t := &treeFlags{fs: fs, uid: addUIDShiftFlags(fs)}
	fs.Var(&t.with, "with", "store/use only these `FEATURES` (casync names or sets: best, unix, fat, chattr, fat-attrs, privileged, fuse, all; repeatable, comma-separated)")
	fs.Var(&t.without, "without", "do not store/use these `FEATURES`")
	fs.StringVar(&t.excludeNodump, "exclude-nodump", "yes", "leave out files with the nodump attribute (chattr +d): yes or no")
	fs.StringVar(&t.excludeSubmounts, "exclude-submounts", "no", "leave out directories on other file systems: yes or no")
	fs.StringVar(&t.excludeFile, "exclude-file", "yes", "record that .caexclude patterns apply: yes or no (they are applied either way, as casync 2 does)")
	return t
}

// flagValue returns the value of another flag of the same verb, or def.
func (t *treeFlags) flagValue(name, def string) string {
	if t.fs != nil {
		if f := t.fs.Lookup(name); f != nil {
			if v := f.Value.String(); v != "" {
				return v
			}
		}
	}
	return def
}

// sha256 reports whether --digest=sha256 was given.
func (t *treeFlags) sha256() bool { return t.flagValue("digest", "sha512-256") == "sha256" }

// features composes the archive feature flags casync's way.
func (t *treeFlags) features() (uint64, error) {
	w, err := catar.ParseFeatureList(t.with)
	if err != nil {
		return 0, usagef("--with: %v", err)
	}
	wo, err := catar.ParseFeatureList(t.without)
	if err != nil {
		return 0, usagef("--without: %v", err)
	}
	var ex uint64
	for _, o := range []struct {
		name, v string
		bit     uint64
	}{{"exclude-nodump", t.excludeNodump, catar.ExcludeNodump}, {"exclude-submounts", t.excludeSubmounts, catar.ExcludeSubmounts}, {"exclude-file", t.excludeFile, catar.ExcludeFile}} {
		switch strings.ToLower(o.v) {
		case "yes", "true", "1", "on", "y":
			ex |= o.bit
		case "no", "false", "0", "off", "n":
		default:
			return 0, usagef("--%s=%s: want yes or no", o.name, o.v)
		}
	}
	return catar.ComposeFeatures(w, wo, ex, t.sha256())
}

// mask is the set of features a reader should use (--with/--without).
func (t *treeFlags) mask() (uint64, error) {
	w, err := catar.ParseFeatureList(t.with)
	if err != nil {
		return 0, usagef("--with: %v", err)
	}
	wo, err := catar.ParseFeatureList(t.without)
	if err != nil {
		return 0, usagef("--without: %v", err)
	}
	if w == 0 {
		w = catar.WithMask
	}
	return w &^ wo, nil
}

// blobFlags returns the store options of the verb (for reading a .caidx):
// a fresh set with its defaults, overridden by the verb's flags of the
// same names (the verb registered them with addBlobFlags).
func (t *treeFlags) blobFlags() *blobFlags {
	if t.bf != nil {
		return t.bf
	}
	scratch := flag.NewFlagSet("", flag.ContinueOnError)
	o := addBlobFlags(scratch)
	if t.fs != nil {
		scratch.VisitAll(func(f *flag.Flag) {
			rf := t.fs.Lookup(f.Name)
			if rf == nil {
				return
			}
			if sl, ok := rf.Value.(*stringList); ok {
				if dst, ok := f.Value.(*stringList); ok {
					*dst = append(stringList(nil), *sl...)
				}
				return
			}
			if rf.Value.String() != rf.DefValue {
				f.Value.Set(rf.Value.String())
			}
		})
	}
	return o
}

// makeTree encodes dir into out (.catar, or .caidx with chunks in the store)
// and prints the archive digest, as casync make does.
func makeTree(ctx context.Context, e *env, tf *treeFlags, out string, dir string) error {
	features, err := tf.features()
	if err != nil {
		return err
	}
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory: a tree image (.caidx/.catar) is made from a directory", dir)
	}
	shift, err := tf.uid.get()
	if err != nil {
		return err
	}
	opts := catar.EncodeOptions{Features: features, Log: e.log, UIDShift: shift}
	var id chunker.ID
	switch kindOf(out) {
	case kindArchive:
		if out == "-" { // streamed to standard output (stdio.go)
			h := chunker.DigestOf(features).New()
			if _, err := catar.Encode(ctx, io.MultiWriter(stdoutImage, h), dir, opts); err != nil {
				return err
			}
			copy(id[:], h.Sum(nil))
			break
		}
		tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.tmp")
		if err != nil {
			return err
		}
		defer os.Remove(tmp.Name())
		h := chunker.DigestOf(features).New()
		if _, err := catar.Encode(ctx, io.MultiWriter(tmp, h), dir, opts); err != nil {
			tmp.Close()
			return err
		}
		if err := tmp.Close(); err != nil {
			return err
		}
		if err := os.Chmod(tmp.Name(), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp.Name(), out); err != nil {
			return err
		}
		copy(id[:], h.Sum(nil))
	case kindTreeIndex:
		if cacheDir := tf.flagValue("make-cache", ""); cacheDir != "" { // makecache.go
			var noDigest bool
			if id, noDigest, err = makeTreeCached(ctx, e, tf, cacheDir, out, dir, opts, features); err != nil || noDigest {
				return err
			}
			break
		}
		mf := &makeFlags{
			store:       tf.flagValue("store", ""),
			chunkSize:   tf.flagValue("chunk-size", "auto"),
			digest:      tf.flagValue("digest", "sha512-256"),
			compression: tf.flagValue("compression", "zstd"),
		}
		pr, pw := io.Pipe()
		encErr := make(chan error, 1)
		go func() {
			_, err := catar.Encode(ctx, pw, dir, opts)
			pw.CloseWithError(err)
			encErr <- err
		}()
		id, err = writeIndex(ctx, e, pr, out, mf, features)
		pr.CloseWithError(errors.New("index writer stopped"))
		if eerr := <-encErr; eerr != nil {
			return eerr
		}
		if err != nil {
			return err
		}
	default:
		return usagef("%s: output must end in .caidx or .catar", out)
	}
	fmt.Fprintln(e.stdout, id)
	return nil
}

// openStream returns the archive stream of a .catar or .caidx.
func openStream(ctx context.Context, e *env, tf *treeFlags, in string) (io.Reader, func(), error) {
	switch kindOf(in) {
	case kindArchive:
		f, err := os.Open(in)
		if err != nil {
			return nil, nil, err
		}
		return f, func() { f.Close() }, nil
	case kindTreeIndex:
		// One reader that reads the stream from start to end (extract,
		// list, mtree, digest): readahead may use every fetch worker.
		bf := *tf.blobFlags()
		bf.bulk = true
		b, _, err := openBlob(ctx, e, in, &bf)
		if err != nil {
			return nil, nil, err
		}
		return &seqReader{ctx: ctx, b: b}, func() {}, nil
	}
	return nil, nil, usagef("%s: input must end in .caidx or .catar", in)
}

// openArchive opens a .catar or .caidx for random access.
func openArchive(ctx context.Context, e *env, tf *treeFlags, in string) (*catar.Archive, func(), error) {
	switch kindOf(in) {
	case kindArchive:
		f, err := os.Open(in)
		if err != nil {
			return nil, nil, err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		a, err := catar.Open(f, st.Size())
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("%s: %w", in, err)
		}
		return a, func() { f.Close() }, nil
	case kindTreeIndex:
		b, _, err := openBlob(ctx, e, in, tf.blobFlags())
		if err != nil {
			return nil, nil, err
		}
		a, err := catar.Open(ctxReaderAt{ctx, b}, b.Size())
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", in, err)
		}
		return a, func() {}, nil
	}
	return nil, nil, usagef("%s: input must be a directory, .catar or .caidx", in)
}

type ctxReaderAt struct {
	ctx context.Context
	b   *fetch.Blob
}

func (c ctxReaderAt) ReadAt(p []byte, off int64) (int, error) {
	return c.b.ReadAtContext(c.ctx, p, off)
}

// PrefetchRange implements catar.Prefetcher.
func (c ctxReaderAt) PrefetchRange(off, n int64) { c.b.PrefetchRange(off, n) }

// seqReader reads a blob front to back in large blocks, prefetching the
// next block while the current one is consumed.
type seqReader struct {
	ctx context.Context
	b   *fetch.Blob
	off int64
	buf []byte
	pos int
}

const seqBlock = 4 << 20

func (s *seqReader) Read(p []byte) (int, error) {
	if s.pos >= len(s.buf) {
		if s.off >= s.b.Size() {
			return 0, io.EOF
		}
		n := int64(seqBlock)
		if rem := s.b.Size() - s.off; rem < n {
			n = rem
		}
		if cap(s.buf) < int(n) {
			s.buf = make([]byte, seqBlock)
		}
		s.buf = s.buf[:n]
		s.b.Prefetch(s.off+n, 2*seqBlock, fetch.Readahead)
		m, err := s.b.ReadAtContext(s.ctx, s.buf, s.off)
		if m < int(n) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		s.off += n
		s.pos = 0
	}
	n := copy(p, s.buf[s.pos:])
	s.pos += n
	return n, nil
}

// source opens the input of list/mtree/digest: a directory (encoded on the
// fly with the selected features), a .catar or a .caidx.
func treeStream(ctx context.Context, e *env, tf *treeFlags, in string) (io.Reader, func(), error) {
	if location.IsURL(in) { // an index URL (remote.go)
		return openStream(ctx, e, tf, in)
	}
	st, err := os.Stat(in)
	if err != nil {
		return nil, nil, err
	}
	if !st.IsDir() {
		return openStream(ctx, e, tf, in)
	}
	features, err := tf.features()
	if err != nil {
		return nil, nil, err
	}
	shift, err := tf.uid.get()
	if err != nil {
		return nil, nil, err
	}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := catar.Encode(ctx, pw, in, catar.EncodeOptions{Features: features, Log: e.log, UIDShift: shift})
		pw.CloseWithError(err)
	}()
	return pr, func() { cancel(); pr.Close(); <-done }, nil
}

// addTreeReadFlags sets up the flags of the verbs that read a tree (list,
// mtree, digest): the store flags, --digest and the feature flags.
func addTreeReadFlags(fs *flag.FlagSet, digestHelp string) *treeFlags {
	bf := addBlobFlags(fs)
	fs.String("digest", "sha512-256", digestHelp)
	tf := addTreeFlags(fs)
	tf.bf = bf
	return tf
}

func init() {
	register(&command{
		name:    "list",
		args:    "[flags] DIR|ARCHIVE.catar|INDEX.caidx [PATH]",
		summary: "list the entries of a tree, as casync list",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			tf := addTreeReadFlags(fs, "digest: sha512-256 or sha256")
			rec := fs.String("recursive", "yes", "list the whole subtree: yes or no (no: the entry and its children only, as casync)")
			return func(ctx context.Context, e *env, args []string) error {
				r, err := yesNo("recursive", *rec)
				if err != nil {
					return err
				}
				tf.nonRecursive = !r
				return runList(ctx, e, tf, args, false)
			}
		},
	})
	register(&command{
		name:    "mtree",
		args:    "[flags] DIR|ARCHIVE.catar|INDEX.caidx [PATH]",
		summary: "print a tree in BSD mtree(5) format, as casync mtree",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			tf := addTreeReadFlags(fs, "payload digest: sha512-256 or sha256")
			return func(ctx context.Context, e *env, args []string) error {
				return runList(ctx, e, tf, args, true)
			}
		},
	})
	register(&command{
		name:    "digest",
		args:    "[flags] DIR|ARCHIVE.catar|INDEX.caidx [PATH] | INDEX.caibx|FILE|BLOCKDEV",
		summary: "print the digest of a tree's archive stream (or of a file or subtree in it), as casync digest",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			tf := addTreeReadFlags(fs, "digest: sha512-256 or sha256")
			return func(ctx context.Context, e *env, args []string) error {
				return runDigest(ctx, e, tf, args)
			}
		},
	})
}

func runDigest(ctx context.Context, e *env, tf *treeFlags, args []string) error {
	if len(args) < 1 || len(args) > 2 {
		return usagef("want a directory, .catar or .caidx, and optionally a path inside it")
	}
	// Every location is checked before any work (locations.go).
	in, err := tf.blobFlags().checkReadLocations(args[0])
	if err != nil {
		return err
	}
	if len(args) == 1 {
		if handled, err := digestBlob(ctx, e, tf, in); handled {
			return err
		}
	} else if kindOf(in) == kindBlobIndex {
		return usagef("%s: a path inside applies to trees only", in)
	}
	d := chunker.SHA512_256
	if tf.sha256() {
		d = chunker.SHA256
	}
	h := d.New()
	if len(args) == 2 {
		// As casync: a file's payload digest, or a directory subtree's
		// bytes from its ENTRY to the end of its GOODBYE.
		a, closer, err := openArchive(ctx, e, tf, in)
		if err != nil {
			return err
		}
		defer closer()
		en, err := a.LookupPath(args[1])
		if err != nil {
			return err
		}
		var r io.Reader
		switch {
		case en.IsRegular():
			r = a.Payload(en)
		case en.IsDir():
			r = io.NewSectionReader(a.ReaderAt(), en.Offset, en.End-en.Offset)
		default:
			return fmt.Errorf("%s: %s is neither a regular file nor a directory", in, args[1])
		}
		if _, err := io.CopyBuffer(h, r, make([]byte, 1<<20)); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, hex.EncodeToString(h.Sum(nil)))
		return nil
	}
	r, closer, err := treeStream(ctx, e, tf, in)
	if err != nil {
		return err
	}
	defer closer()
	if _, err := io.CopyBuffer(h, r, make([]byte, 1<<20)); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, hex.EncodeToString(h.Sum(nil)))
	return nil
}

func runList(ctx context.Context, e *env, tf *treeFlags, args []string, mtree bool) error {
	if len(args) < 1 || len(args) > 2 {
		return usagef("want a directory, .catar or .caidx, and optionally a path inside it")
	}
	// Every location is checked before any work (locations.go).
	in, err := tf.blobFlags().checkReadLocations(args[0])
	if err != nil {
		return err
	}
	sub := ""
	if len(args) == 2 {
		sub = strings.Trim(args[1], "/")
	}
	mask, err := tf.mask()
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(e.stdout, 256<<10)
	defer w.Flush()
	isDir := false
	if !location.IsURL(in) { // an index URL (remote.go) is never a directory
		st, err := os.Stat(in)
		if err != nil {
			return err
		}
		isDir = st.IsDir()
	}
	// A full list of an archive or index uses random access: it reads only
	// the metadata, never the payloads.
	if !mtree && !isDir {
		a, closer, err := openArchive(ctx, e, tf, in)
		if err != nil {
			return err
		}
		defer closer()
		start := a.Root()
		if sub != "" {
			if start, err = a.LookupPath(sub); err != nil {
				return err
			}
		}
		if tf.nonRecursive {
			return listTop(a, start, w, sub)
		}
		return a.Walk(start, func(en *catar.Entry) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			fmt.Fprintf(w, "%s %s\n", lsMode(en.Mode), listPath(en.Path, sub))
			return nil
		})
	}
	if sub != "" && isDir {
		return usagef("a path inside is only supported for archives and indexes")
	}
	r, closer, err := treeStream(ctx, e, tf, in)
	if err != nil {
		return err
	}
	defer closer()
	d := catar.NewDecoder(r)
	dg := chunker.SHA512_256
	if tf.sha256() {
		dg = chunker.SHA256
	}
	if mtree {
		return mtreeStream(ctx, w, d, dg, mask, sub, in)
	}
	for {
		en, err := d.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", in, err)
		}
		if sub != "" && en.Path != sub && !strings.HasPrefix(en.Path, sub+"/") {
			continue
		}
		if tf.nonRecursive && en.Path != "" && strings.Contains(en.Path, "/") {
			continue // a directory's top and children only
		}
		fmt.Fprintf(w, "%s %s\n", lsMode(en.Mode), listPath(en.Path, sub))
	}
}

// mtreeJob is one mtree line, and for a regular file its digest.
type mtreeJob struct {
	line   []byte
	reg    bool
	data   []byte // a small file's whole payload
	digest chunker.ID
	failed bool // payload could not be read: print no digest
}

// mtreeBatch is a run of entries in archive order: a hasher digests its
// files (small ones read whole and hashed side by side with chunker's
// SumBatch; a large one, alone in its batch, streamed through blocks)
// while the reader goes on, and the printer prints the batch once done.
// Handing over batches rather than entries keeps the goroutine switches
// few (on a loaded machine each one waits for a CPU).
type mtreeBatch struct {
	jobs   []*mtreeJob
	blocks chan []byte // the large file's payload blocks
	done   chan struct{}
}

const (
	mtreeBatchFiles   = 32
	mtreeBatchEntries = 256
	mtreeBatchBytes   = 4 << 20
)

const mtreeBlock = 1 << 20

// mtreeBufs are pools of payload blocks by size class (4 KiB << i, up to
// mtreeBlock): reading into recycled memory instead of a fresh buffer
// per file saves the allocation, its zeroing and the page faults the read
// would take (together a third of mtree's CPU time on /usr/share).
var mtreeBufs [9]sync.Pool

func mtreeClass(n int64) int {
	c := 0
	for int64(4096)<<c < n && c < len(mtreeBufs)-1 {
		c++
	}
	return c
}

// mtreeBuf returns a recycled block of n ≤ mtreeBlock bytes.
func mtreeBuf(n int64) []byte {
	c := mtreeClass(n)
	if p, ok := mtreeBufs[c].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 4096<<c)
}

// mtreePut recycles a block from mtreeBuf.
func mtreePut(b []byte) {
	c := mtreeClass(int64(cap(b)))
	if cap(b) != 4096<<c {
		return
	}
	b = b[:cap(b)]
	mtreeBufs[c].Put(&b)
}

func mtreeStream(ctx context.Context, w io.Writer, d *catar.Decoder, dg chunker.Digest, mask uint64, sub, in string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := runtime.GOMAXPROCS(0)
	work := make(chan *mtreeBatch, 4) // bounds the memory held: ~(4+workers)×4 MiB
	ordered := make(chan *mtreeBatch, 64)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ids []chunker.ID
			var datas [][]byte
			var regs []*mtreeJob
			for bt := range work {
				if bt.blocks != nil {
					h := dg.New()
					for b := range bt.blocks {
						h.Write(b)
						mtreePut(b)
					}
					j := bt.jobs[0]
					copy(j.digest[:], h.Sum(nil))
					close(bt.done)
					continue
				}
				ids, datas, regs = ids[:0], datas[:0], regs[:0]
				for _, j := range bt.jobs {
					if j.reg {
						regs = append(regs, j)
						datas = append(datas, j.data)
						ids = append(ids, chunker.ID{})
					}
				}
				dg.SumBatch(ids, datas)
				for i, j := range regs {
					j.digest = ids[i]
					mtreePut(j.data)
					j.data = nil
				}
				close(bt.done)
			}
		}()
	}
	name := "sha512256digest"
	if dg == chunker.SHA256 {
		name = "sha256digest"
	}
	printed := make(chan struct{})
	go func() {
		defer close(printed)
		var hx [2 * len(chunker.ID{})]byte
		for bt := range ordered {
			select {
			case <-bt.done:
			case <-ctx.Done():
				continue
			}
			for _, j := range bt.jobs {
				w.Write(j.line)
				if !j.reg || j.failed {
					continue
				}
				io.WriteString(w, " ")
				io.WriteString(w, name)
				io.WriteString(w, "=")
				hex.Encode(hx[:], j.digest[:])
				w.Write(hx[:])
				io.WriteString(w, "\n")
			}
		}
	}()
	cur := &mtreeBatch{done: make(chan struct{})}
	files, bytesIn := 0, 0
	flush := func() {
		if len(cur.jobs) > 0 {
			work <- cur
			ordered <- cur
			cur = &mtreeBatch{done: make(chan struct{})}
			files, bytesIn = 0, 0
		}
	}
	var line bytes.Buffer
	err := func() error {
		defer func() {
			flush()
			close(work)
			close(ordered)
		}()
		for {
			en, err := d.Next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s: %w", in, err)
			}
			if sub != "" && en.Path != sub && !strings.HasPrefix(en.Path, sub+"/") {
				continue
			}
			line.Reset()
			writeMtree(&line, en, d.Features()&mask|d.Features()&^catar.WithMask, listPath(en.Path, sub))
			j := &mtreeJob{line: bytes.Clone(line.Bytes()), reg: en.IsRegular()}
			if j.reg && en.Size > mtreeBlock {
				// Alone in a batch of its own, streamed.
				flush()
				bt := &mtreeBatch{jobs: []*mtreeJob{j}, blocks: make(chan []byte, 8), done: make(chan struct{})}
				work <- bt
				ordered <- bt
				left := en.Size
				for left > 0 {
					b := mtreeBuf(min(left, mtreeBlock))
					if _, err := io.ReadFull(d, b); err != nil {
						j.failed = true
						close(bt.blocks)
						return fmt.Errorf("%s: %w", in, err)
					}
					bt.blocks <- b
					left -= int64(len(b))
				}
				close(bt.blocks)
				continue
			}
			if j.reg {
				j.data = mtreeBuf(en.Size)
				if _, err := io.ReadFull(d, j.data); err != nil {
					mtreePut(j.data)
					j.data, j.failed, j.reg = nil, true, false
					cur.jobs = append(cur.jobs, j)
					return fmt.Errorf("%s: %w", in, err)
				}
				files++
				bytesIn += len(j.data)
			}
			cur.jobs = append(cur.jobs, j)
			if files >= mtreeBatchFiles || bytesIn >= mtreeBatchBytes || len(cur.jobs) >= mtreeBatchEntries {
				flush()
			}
		}
	}()
	if err != nil {
		cancel()
	}
	wg.Wait()
	<-printed
	return err
}

// listPath is the path casync prints: from the archive root (also when a
// subtree is listed), "." for the root.
func listPath(p, sub string) string {
	if p == "" {
		return "."
	}
	return mtreeEscape(p)
}

// mtreeEscape escapes bytes ≤ ' ', ≥ 127, '\\' and '#' as \ooo.
func mtreeEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 127 || c == '\\' || c == '#' {
			fmt.Fprintf(&b, "\\%03o", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func lsMode(m uint32) string {
	var b [10]byte
	switch m & catar.ModeType {
	case catar.ModeSock:
		b[0] = 's'
	case catar.ModeDir:
		b[0] = 'd'
	case catar.ModeReg:
		b[0] = '-'
	case catar.ModeBlock:
		b[0] = 'b'
	case catar.ModeChar:
		b[0] = 'c'
	case catar.ModeLink:
		b[0] = 'l'
	case catar.ModeFIFO:
		b[0] = 'p'
	default:
		b[0] = '?'
	}
	rwx := func(i int, r, w, x, special uint32, set, unset byte) {
		b[i] = '-'
		if m&r != 0 {
			b[i] = 'r'
		}
		b[i+1] = '-'
		if m&w != 0 {
			b[i+1] = 'w'
		}
		switch {
		case m&special != 0 && m&x != 0:
			b[i+2] = set
		case m&special != 0:
			b[i+2] = unset
		case m&x != 0:
			b[i+2] = 'x'
		default:
			b[i+2] = '-'
		}
	}
	rwx(1, 0400, 0200, 0100, 04000, 's', 'S')
	rwx(4, 040, 020, 010, 02000, 's', 'S')
	var sticky uint32
	if m&catar.ModeType == catar.ModeDir {
		sticky = 01000
	}
	rwx(7, 04, 02, 01, sticky, 't', 'T')
	return string(b[:])
}

// writeMtree prints one mtree line (without the payload digest and newline
// of regular files), as casync does.
func writeMtree(w io.Writer, en *catar.Entry, f uint64, path string) {
	fmt.Fprint(w, path)
	switch en.Type() {
	case catar.ModeLink:
		fmt.Fprint(w, " type=link")
	case catar.ModeDir:
		fmt.Fprint(w, " type=dir")
	case catar.ModeReg:
		fmt.Fprint(w, " type=file")
	case catar.ModeSock:
		fmt.Fprint(w, " type=socket")
	case catar.ModeChar:
		fmt.Fprint(w, " type=char")
	case catar.ModeBlock:
		fmt.Fprint(w, " type=block")
	case catar.ModeFIFO:
		fmt.Fprint(w, " type=fifo")
	}
	fmt.Fprintf(w, " mode=%04o", en.Mode&07777)
	if en.IsRegular() {
		fmt.Fprintf(w, " size=%d", en.Size)
	}
	if en.Type() == catar.ModeLink {
		fmt.Fprintf(w, " link=%s", mtreeEscape(en.Target))
	}
	if en.Type() == catar.ModeBlock || en.Type() == catar.ModeChar {
		fmt.Fprintf(w, " device=linux,%d,%d", en.DevMajor, en.DevMinor)
	}
	if f&(catar.With16BitUIDs|catar.With32BitUIDs) != 0 {
		fmt.Fprintf(w, " uid=%d gid=%d", en.UID, en.GID)
	}
	if f&catar.WithUserNames != 0 {
		user, group := en.User, en.Group
		if user == "" && f&(catar.With16BitUIDs|catar.With32BitUIDs) != 0 && en.UID == 0 {
			user = "root"
		}
		if group == "" && f&(catar.With16BitUIDs|catar.With32BitUIDs) != 0 && en.GID == 0 {
			group = "root"
		}
		if user != "" {
			fmt.Fprintf(w, " uname=%s", mtreeEscape(user))
		}
		if group != "" {
			fmt.Fprintf(w, " gname=%s", mtreeEscape(group))
		}
	}
	table := []struct {
		flag uint64
		name string
	}{
		{catar.WithFlagHidden, "hidden"}, {catar.WithFlagSystem, "system"}, {catar.WithFlagArchive, "archive"},
		{catar.WithFlagAppend, "sappend"}, {catar.WithFlagNodump, "nodump"}, {catar.WithFlagImmutable, "simmutable"},
	}
	var any uint64
	for _, t := range table {
		any |= t.flag
	}
	if f&any != 0 {
		fmt.Fprint(w, " flags=")
		comma := ""
		regOrDir := en.Type() == catar.ModeReg || en.Type() == catar.ModeDir
		for _, t := range table {
			if f&t.flag == 0 {
				continue
			}
			// casync reports all flags set for entries that cannot carry any.
			set := !regOrDir || en.Flags&f&t.flag != 0
			no := "no"
			if set {
				no = ""
			}
			fmt.Fprintf(w, "%s%s%s", comma, no, t.name)
			comma = ","
		}
	}
	if f&(catar.WithNsecTime|catar.WithUsecTime|catar.WithSecTime|catar.With2SecTime) != 0 {
		fmt.Fprintf(w, " time=%d.%09d", en.MTime/1000000000, en.MTime%1000000000)
	}
	if !en.IsRegular() {
		fmt.Fprintln(w)
	}
}
