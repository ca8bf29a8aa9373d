package catar

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestNameHash(t *testing.T) {
	for name, want := range map[string]uint64{
		"a": 0x51ba5a19e058c7ad, "bb": 0x6b3372039dae4ca6, "ccc": 0x5451dfcd5a8da065,
		"sub": 0xebfe935698c3deec, "link": 0xf922bf6d7bb3dfaf, "file.txt": 0x7a8acb196abcbaa2,
	} {
		if got := NameHash(name); got != want {
			t.Errorf("NameHash(%q) = %#x, want %#x", name, got, want)
		}
	}
	// SipHash-2-4 reference vector: key 00..0f, message 00..0e.
	var msg []byte
	for i := 0; i < 15; i++ {
		msg = append(msg, byte(i))
	}
	if got := siphash24(0x0706050403020100, 0x0f0e0d0c0b0a0908, string(msg)); got != 0xa129ca6149be45e5 {
		t.Errorf("siphash reference vector: %#x", got)
	}
}

func TestEytzinger(t *testing.T) {
	want := map[int]string{
		1: "[0]", 2: "[1 0]", 3: "[1 0 2]", 4: "[2 1 3 0]", 5: "[3 1 4 0 2]", 6: "[3 1 5 0 2 4]",
		7: "[3 1 5 0 2 4 6]", 8: "[4 2 6 1 3 5 7 0]", 9: "[5 3 7 1 4 6 8 0 2]",
		10: "[6 3 8 1 5 7 9 0 2 4]", 11: "[7 3 9 1 5 8 10 0 2 4 6]",
	}
	for n, w := range want {
		if got := fmt.Sprint(eytzinger(n)); got != w {
			t.Errorf("n=%d: %s, want %s", n, got, w)
		}
	}
}

func TestFeatures(t *testing.T) {
	for _, c := range []struct {
		with, without string
		want          uint64
	}{
		{"", "", 0xb0000001ffeffe26},
		{"best", "", 0xb0000001ffeffe26},
		{"unix", "", 0xb000000000001f09},
		{"fat", "", 0xb00000000000e0c0},
		{"fuse", "", 0xb000000013efff22},
		{"all", "", 0xb0000001ffeffe26},
		{"", "all", 0xb000000000000000},
	} {
		w, err := ParseFeatureList([]string{c.with})
		if err != nil {
			t.Fatal(err)
		}
		wo, _ := ParseFeatureList([]string{c.without})
		got, err := TreeFeatures(w, wo, false)
		if err != nil || got != c.want {
			t.Errorf("--with=%s --without=%s: %#x, %v; want %#x", c.with, c.without, got, err, c.want)
		}
		if !IsNormalized(got) {
			t.Errorf("%#x not normalized", got)
		}
	}
	if IsNormalized(WithACL|WithPermissions) || IsNormalized(^uint64(0)) || IsNormalized(1<<40) {
		t.Error("IsNormalized accepts unnormalized flags")
	}
	if _, err := ParseFeature("bogus"); err == nil {
		t.Error("unknown feature accepted")
	}
	if v, _ := ParseFeatureList([]string{"xattrs,acl", "fcaps"}); v != WithXattrs|WithACL|WithFCaps {
		t.Errorf("list parse: %#x", v)
	}
}

func readTestdata(t testing.TB, name string) []byte {
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// makeV7 builds FORMAT.md §7's tree d.
func makeV7(t *testing.T) string {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the files uid/gid 0 as in the test vector")
	}
	d := filepath.Join(t.TempDir(), "d")
	must(t, os.Mkdir(d, 0o755))
	must(t, os.WriteFile(filepath.Join(d, "file.txt"), []byte("hello\n"), 0o644))
	must(t, os.Symlink("file.txt", filepath.Join(d, "link")))
	must(t, os.Chmod(filepath.Join(d, "file.txt"), 0o644))
	must(t, os.Chmod(d, 0o755))
	tm := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, p := range []string{"file.txt", "link", ""} {
		path := filepath.Join(d, p)
		must(t, os.Lchown(path, 0, 0))
		ts := []syscall.Timespec{syscall.NsecToTimespec(tm.UnixNano()), syscall.NsecToTimespec(tm.UnixNano())}
		must(t, utimensat(path, ts))
	}
	return d
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestVectorsV7V9(t *testing.T) {
	d := makeV7(t)
	for _, c := range []struct {
		file, with, sha string
	}{
		{"d.catar", "", "9bc005f5e1b2b6b2e2ae9b7aa623632362f7a45de6b3f926f2cceda1228704db"},
		{"d-unix.catar", "unix", "91aab9e28f3481080b4e3550b9826facf1ed508261625f642a7f97423841bf2b"},
	} {
		w, _ := ParseFeatureList([]string{c.with})
		f, _ := TreeFeatures(w, 0, false)
		var buf bytes.Buffer
		n, err := Encode(context.Background(), &buf, d, EncodeOptions{Features: f})
		must(t, err)
		sum := sha256.Sum256(buf.Bytes())
		if n != 373 || hex.EncodeToString(sum[:]) != c.sha {
			t.Errorf("%s: %d bytes, sha256 %x; want 373, %s", c.file, n, sum, c.sha)
		}
		if !bytes.Equal(buf.Bytes(), readTestdata(t, c.file)) {
			t.Errorf("%s: differs from the casync-made file", c.file)
		}
	}
}

func TestDecodeV7(t *testing.T) {
	data := readTestdata(t, "d.catar")
	d := NewDecoder(bytes.NewReader(data))
	var got []string
	for {
		e, err := d.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		s := fmt.Sprintf("%q@%d %o %d", e.Path, e.Offset, e.Mode, e.MTime)
		switch {
		case e.IsRegular():
			b, err := io.ReadAll(d)
			must(t, err)
			s += fmt.Sprintf(" payload@%d %q", e.PayloadOffset, b)
		case e.Target != "":
			s += " -> " + e.Target
		}
		got = append(got, s)
	}
	want := []string{
		`""@0 40755 1577934245000000000`,
		`"file.txt"@89 100644 1577934245000000000 payload@169 "hello\n"`,
		`"link"@196 120777 1577934245000000000 -> file.txt`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("decoded:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if d.Features() != 0xb0000001ffeffe26 {
		t.Errorf("features %#x", d.Features())
	}
}

func TestRandomAccessV7(t *testing.T) {
	data := readTestdata(t, "d.catar")
	a, err := Open(bytes.NewReader(data), int64(len(data)))
	must(t, err)
	f, err := a.LookupPath("file.txt")
	must(t, err)
	b, _ := io.ReadAll(a.Payload(f))
	if string(b) != "hello\n" || f.Offset != 89 || f.NameOffset != 64 || f.End != 175 {
		t.Errorf("file.txt: %q %+v", b, f)
	}
	l, err := a.Lookup(a.Root(), "link")
	must(t, err)
	if l.Target != "file.txt" || l.Type() != ModeLink || l.Offset != 196 {
		t.Errorf("link: %+v", l)
	}
	if _, err := a.Lookup(a.Root(), "nope"); !errors.Is(err, ErrNotExist) {
		t.Errorf("missing name: %v", err)
	}
	kids, err := a.ReadDir(a.Root())
	must(t, err)
	if len(kids) != 2 || kids[0].Name != "file.txt" || kids[1].Name != "link" {
		t.Errorf("ReadDir: %v", kids)
	}
}

// TestCasyncTestdata decodes the casync-made archives sequentially and by
// random access and checks both views agree.
func TestCasyncTestdata(t *testing.T) {
	for _, name := range []string{"d.catar", "d-unix.catar", "small.catar", "small-unix.catar", "small-none.catar"} {
		data := readTestdata(t, name)
		seq := decodeAll(t, data)
		ra := walkAll(t, data)
		if seq != ra {
			t.Errorf("%s: decoder and random access disagree:\n%s\n---\n%s", name, seq, ra)
		}
	}
	small := walkAll(t, readTestdata(t, "small.catar"))
	for _, want := range []string{`"é" 100644`, `xattrs=[user.k=v]`, `{ID:1000 Name:`, `"chr" 20644`, `dev=1:3`, `"sub/deeper/f"`, `-> é`, `DefaultUser:[{ID:1000`} {
		if !strings.Contains(small, want) {
			t.Errorf("small.catar: %q missing in\n%s", want, small)
		}
	}
}

func describe(e *Entry) string {
	s := fmt.Sprintf("%q %o off=%d end=%d uid=%d gid=%d %s/%s mtime=%d flags=%#x", e.Path, e.Mode, e.Offset, e.End, e.UID, e.GID, e.User, e.Group, e.MTime, e.Flags)
	if e.IsRegular() {
		s += fmt.Sprintf(" size=%d@%d", e.Size, e.PayloadOffset)
	}
	if e.Target != "" {
		s += " -> " + e.Target
	}
	if e.Type() == ModeChar || e.Type() == ModeBlock {
		s += fmt.Sprintf(" dev=%d:%d", e.DevMajor, e.DevMinor)
	}
	if len(e.Xattrs) > 0 {
		var xs []string
		for _, x := range e.Xattrs {
			xs = append(xs, x.Name+"="+string(x.Value))
		}
		s += " xattrs=[" + strings.Join(xs, ",") + "]"
	}
	if e.ACL != nil {
		a := *e.ACL
		a.Default = nil
		s += fmt.Sprintf(" acl=%+v", a)
		if e.ACL.Default != nil {
			s += fmt.Sprintf(" default=%+v", *e.ACL.Default)
		}
	}
	return s
}

func decodeAll(t testing.TB, data []byte) string {
	d := NewDecoder(bytes.NewReader(data))
	var es []*Entry
	for {
		e, err := d.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e) // directories learn their End at their GOODBYE
	}
	var out []string
	for _, e := range es {
		out = append(out, describe(e))
	}
	return strings.Join(out, "\n")
}

func walkAll(t testing.TB, data []byte) string {
	a, err := Open(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	must(t, a.Walk(a.Root(), func(e *Entry) error {
		out = append(out, describe(e))
		return nil
	}))
	return strings.Join(out, "\n")
}

// archive builder for malformed inputs.
type builder struct{ b []byte }

func (w *builder) rec(typ uint64, body []byte) int64 {
	off := int64(len(w.b))
	w.b = appendHeader(w.b, uint64(headerSize+len(body)), typ)
	w.b = append(w.b, body...)
	return off
}

func entryBody(features, mode uint64) []byte {
	var b []byte
	for _, v := range []uint64{features, mode, 0, 0, 0, 0} {
		b = le.AppendUint64(b, v)
	}
	return b
}

// build makes a root directory holding empty files with the given names in
// the given order, with a correct goodbye table unless mangle changes it.
func build(names []string, mangle func(items []goodbyeItem)) []byte {
	const f = 0xb000000000000000 // no WITH features: mode 0666/0777, no times
	w := &builder{}
	w.rec(TypeEntry, entryBody(f, ModeDir|0777))
	var items []goodbyeItem
	for _, n := range names {
		start := w.rec(TypeFilename, append([]byte(n), 0))
		w.rec(TypeEntry, entryBody(f, ModeReg|0666))
		w.rec(TypePayload, nil)
		items = append(items, goodbyeItem{hash: NameHash(n), start: start, size: int64(len(w.b)) - start})
	}
	if mangle != nil {
		mangle(items)
	}
	w.b = appendGoodbye(w.b, items, 0, int64(len(w.b)))
	return w.b
}

func TestRejects(t *testing.T) {
	good := build([]string{"a", "b", "c"}, nil)
	if err := Validate(bytes.NewReader(good)); err != nil {
		t.Fatalf("valid archive rejected: %v", err)
	}
	walkAll(t, good)
	v7 := readTestdata(t, "d.catar")
	patch := func(b []byte, off int, v ...byte) []byte {
		c := append([]byte(nil), b...)
		copy(c[off:], v)
		return c
	}
	cases := map[string][]byte{
		"empty name":         build([]string{""}, nil),
		"dot":                build([]string{"."}, nil),
		"dotdot":             build([]string{".."}, nil),
		"slash":              build([]string{"a/b"}, nil),
		"NUL in name":        build([]string{"a\x00b"}, nil),
		"out of order":       build([]string{"b", "a"}, nil),
		"duplicate":          build([]string{"a", "a"}, nil),
		"wrong hash":         build([]string{"a", "b"}, func(it []goodbyeItem) { it[0].hash ^= 1 }),
		"item size":          build([]string{"a", "b"}, func(it []goodbyeItem) { it[1].size += 1 }),
		"item loops to root": build([]string{"a", "b"}, func(it []goodbyeItem) { it[0].start = 0 }),
		"item past the end":  build([]string{"a", "b"}, func(it []goodbyeItem) { it[1].size = 1 << 40 }),
		"truncated":          v7[:len(v7)-1],
		"trailing byte":      append(append([]byte(nil), v7...), 0),
		"unknown flag bits":  patch(v7, 0x10+4, 0x10),
		"unnormalized flags": patch(v7, 0x10+1, 0xff),
		"bad mode":           patch(v7, 0x18+2, 0x01),
		"bad record type":    patch(v7, 0x99+8, 0x00),
		"huge record":        patch(v7, 0x104+6, 0x10),
		"goodbye marker":     patch(v7, 0x16d, 0x00),
		"goodbye entry ptr":  patch(v7, 0x15d, 0x1c),
		"mtime granularity":  patch(readTestdata(t, "d-unix.catar"), 0x38+0x59, 0x01),
		"symlink target NUL": patch(v7, 0x114+2, 0x00),
		"not a dir root":     patch(v7, 0x18+1, 0x81),
		"payload size":       patch(v7, 0x99, 0x17),
		"filename w/o ENTRY": patch(v7, 0x059+8, 0x0b, 0x1f, 0x16, 0xb3, 0xbc, 0x6e, 0xbb, 0x6d),
		"tiny":               v7[:30],
	}
	for name, data := range cases {
		errSeq := Validate(bytes.NewReader(data))
		if errSeq == nil {
			t.Errorf("%s: decoder accepted it", name)
		}
		errRA := func() error {
			a, err := Open(bytes.NewReader(data), int64(len(data)))
			if err != nil {
				return err
			}
			return a.Walk(a.Root(), func(*Entry) error { return nil })
		}()
		if errRA == nil && name != "trailing byte" {
			t.Errorf("%s: random access accepted it", name)
		}
		for _, err := range []error{errSeq, errRA} {
			if err != nil && !errors.Is(err, ErrFormat) {
				t.Errorf("%s: error %v does not wrap ErrFormat", name, err)
			}
		}
	}
}

type countingReaderAt struct {
	r     io.ReaderAt
	reads atomic.Int64
	bytes atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.reads.Add(1)
	c.bytes.Add(int64(len(p)))
	return c.r.ReadAt(p, off)
}

// TestLookupScales builds a tree of 6,000 entries and checks that each
// lookup reads O(depth · log n) records, and that random access and the
// decoder agree on every entry.
func TestLookupScales(t *testing.T) {
	dir := t.TempDir()
	var paths []string
	for i := 0; i < 2; i++ {
		d := filepath.Join(dir, fmt.Sprintf("d%d", i))
		must(t, os.MkdirAll(filepath.Join(d, "sub"), 0o755))
		for j := 0; j < 3000; j++ {
			name := fmt.Sprintf("file-%05d", j)
			p := filepath.Join(d, name)
			if j%2 == 1 {
				p = filepath.Join(d, "sub", name)
			}
			must(t, os.WriteFile(p, []byte(name), 0o644))
			rel, _ := filepath.Rel(dir, p)
			paths = append(paths, rel)
		}
	}
	var buf bytes.Buffer
	_, err := Encode(context.Background(), &buf, dir, EncodeOptions{})
	must(t, err)
	data := buf.Bytes()
	cr := &countingReaderAt{r: bytes.NewReader(data)}
	a, err := Open(cr, int64(len(data)))
	must(t, err)
	sort.Strings(paths)
	for i, p := range paths {
		if i%97 != 0 {
			continue
		}
		cr.reads.Store(0)
		e, err := a.LookupPath(p)
		must(t, err)
		b, _ := io.ReadAll(a.Payload(e))
		if string(b) != filepath.Base(p) {
			t.Fatalf("%s: payload %q", p, b)
		}
		// depth ≤ 3, log2(5000) ≈ 13: a tail, a header and ≤ 14 items per
		// level plus the child's records.
		if n := cr.reads.Load(); n > 3*(3+14+2)+2 {
			t.Fatalf("lookup of %s took %d reads", p, n)
		}
	}
	if seq, ra := decodeAll(t, data), walkAll(t, data); seq != ra {
		t.Fatal("decoder and random access disagree")
	}
}

// TestExtractRoundTrip encodes a tree, extracts it and encodes the result:
// the two archives must be identical.
func TestExtractRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to restore ownership, devices and trusted xattrs")
	}
	src := filepath.Join(t.TempDir(), "src")
	must(t, os.MkdirAll(filepath.Join(src, "a/b"), 0o750))
	must(t, os.WriteFile(filepath.Join(src, "a/b/f"), []byte("data"), 0o640))
	must(t, os.WriteFile(filepath.Join(src, "zero"), make([]byte, 1<<20), 0o600))
	must(t, os.Symlink("a/b/f", filepath.Join(src, "link")))
	must(t, syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644))
	must(t, syscall.Mknod(filepath.Join(src, "null"), syscall.S_IFCHR|0o666, 1<<8|3))
	must(t, syscall.Setxattr(filepath.Join(src, "a/b/f"), "user.x", []byte("1"), 0))
	must(t, os.Lchown(filepath.Join(src, "a/b/f"), 1234, 5678))
	must(t, os.Chmod(filepath.Join(src, "a"), 0o2755))
	var one, two bytes.Buffer
	_, err := Encode(context.Background(), &one, src, EncodeOptions{})
	must(t, err)
	dst := filepath.Join(t.TempDir(), "dst")
	must(t, Extract(context.Background(), NewDecoder(bytes.NewReader(one.Bytes())), dst, ExtractOptions{}))
	_, err = Encode(context.Background(), &two, dst, EncodeOptions{})
	must(t, err)
	if !bytes.Equal(one.Bytes(), two.Bytes()) {
		t.Fatalf("round trip differs:\n%s\n---\n%s", decodeAll(t, one.Bytes()), decodeAll(t, two.Bytes()))
	}
}

func TestExclude(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"a.o", "keep.o", "x/b.o", "x/keep.o", "build/f", "x/build", "top", "x/top", "sub/inner", "sub/other", ".hidden", "x/.h.o"} {
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, p), nil, 0o644))
	}
	must(t, os.WriteFile(filepath.Join(dir, ".caexclude"), []byte("# comment\n*.o\n!keep.o\nbuild/\n/top\nsub/inner\n"), 0o644))
	var buf bytes.Buffer
	_, err := Encode(context.Background(), &buf, dir, EncodeOptions{})
	must(t, err)
	a, err := Open(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	must(t, err)
	var got []string
	must(t, a.Walk(a.Root(), func(e *Entry) error {
		if e.Path != "" {
			got = append(got, e.Path)
		}
		return nil
	}))
	want := ".caexclude .hidden keep.o sub sub/other x x/.h.o x/build x/keep.o x/top"
	if strings.Join(got, " ") != want {
		t.Errorf("got  %s\nwant %s", strings.Join(got, " "), want)
	}
}

func TestFnmatch(t *testing.T) {
	for _, c := range []struct {
		pat, s string
		ok     bool
	}{
		{"*.o", "a.o", true}, {"*.o", ".a.o", false}, {".*", ".a", true}, {"?", "a", true},
		{"[a-c]x", "bx", true}, {"[!a-c]x", "bx", false}, {"[[:digit:]]*", "1a", true},
		{"a\\*", "a*", true}, {"a\\*", "ab", false}, {"*", "", true}, {"[", "[", true},
	} {
		if got := fnmatch(c.pat, c.s); got != c.ok {
			t.Errorf("fnmatch(%q, %q) = %v", c.pat, c.s, got)
		}
	}
}

func fuzzSeeds(f *testing.F) {
	for _, n := range []string{"d.catar", "d-unix.catar", "small.catar", "small-unix.catar", "small-none.catar"} {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(build([]string{"a", "b", "c"}, nil))
}

func FuzzDecoder(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		d := NewDecoder(bytes.NewReader(data))
		for i := 0; ; i++ {
			e, err := d.Next()
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrFormat) {
					t.Fatalf("error not wrapping ErrFormat: %v", err)
				}
				return
			}
			if e.IsRegular() {
				io.Copy(io.Discard, d)
			}
		}
	})
}

func FuzzArchive(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := Open(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		n := 0
		a.Walk(a.Root(), func(e *Entry) error {
			n++
			if e.IsDir() {
				for _, name := range []string{"a", "file.txt", "sub", "é"} {
					a.Lookup(e, name)
				}
			}
			if e.IsRegular() {
				io.Copy(io.Discard, a.Payload(e))
			}
			return nil
		})
	})
}

// TestExtractFeatureMask: features left out of ExtractOptions.Features are
// not restored.
func TestExtractFeatureMask(t *testing.T) {
	src := t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o640))
	must(t, os.Symlink("f", filepath.Join(src, "link")))
	must(t, syscall.Setxattr(filepath.Join(src, "f"), "user.k", []byte("v"), 0))
	var buf bytes.Buffer
	_, err := Encode(context.Background(), &buf, src, EncodeOptions{})
	must(t, err)
	dst := filepath.Join(t.TempDir(), "dst")
	must(t, Extract(context.Background(), NewDecoder(bytes.NewReader(buf.Bytes())), dst,
		ExtractOptions{Features: WithMask &^ (WithSymlinks | WithXattrs)}))
	if _, err := os.Lstat(filepath.Join(dst, "link")); !os.IsNotExist(err) {
		t.Errorf("symlink restored without the symlinks feature: %v", err)
	}
	if n, _ := syscall.Getxattr(filepath.Join(dst, "f"), "user.k", make([]byte, 8)); n > 0 {
		t.Error("xattr restored without the xattrs feature")
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "f")); string(b) != "x" {
		t.Errorf("contents %q", b)
	}
}
