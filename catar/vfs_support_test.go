package catar

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestChildSpans checks that the spans read from goodbye tables alone are
// exactly where ReadDir finds the children, and cost one read.
func TestChildSpans(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"a", "a/b", "c", "empty"} {
		must(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	for i := 0; i < 50; i++ {
		must(t, os.WriteFile(filepath.Join(dir, "a", fmt.Sprintf("f%02d", i)), bytes.Repeat([]byte{byte(i)}, i*100), 0o644))
	}
	must(t, os.WriteFile(filepath.Join(dir, "a/b/x"), []byte("x"), 0o644))
	must(t, os.Symlink("a", filepath.Join(dir, "link")))
	var buf bytes.Buffer
	_, err := Encode(context.Background(), &buf, dir, EncodeOptions{})
	must(t, err)
	data := buf.Bytes()
	cr := &countingReaderAt{r: bytes.NewReader(data)}
	a, err := Open(cr, int64(len(data)))
	must(t, err)
	checked := 0
	must(t, a.Walk(a.Root(), func(e *Entry) error {
		if !e.IsDir() {
			return nil
		}
		cr.reads.Store(0)
		spans, err := a.ChildSpans(e)
		must(t, err)
		if n := cr.reads.Load(); n > 3 {
			t.Errorf("ChildSpans(%q) took %d reads", e.Path, n)
		}
		kids, err := a.ReadDir(e)
		must(t, err)
		for _, size := range []int{0, 1, 100, 1 << 20} {
			listed, err := a.ListDir(e, size)
			must(t, err)
			if describeAll(listed) != describeAll(kids) {
				t.Errorf("%q: ListDir(%d) and ReadDir disagree:\n%s\n%s", e.Path, size, describeAll(listed), describeAll(kids))
			}
		}
		if len(kids) != len(spans) {
			t.Fatalf("%q: %d spans, %d children", e.Path, len(spans), len(kids))
		}
		for i, k := range kids {
			if spans[i].Start != k.NameOffset || spans[i].Start+spans[i].Size != k.End {
				t.Errorf("%q: span %v, child %q at %d..%d", e.Path, spans[i], k.Name, k.NameOffset, k.End)
			}
		}
		checked++
		return nil
	}))
	if checked != 5 {
		t.Errorf("checked %d directories, want 5", checked)
	}
	if _, err := a.ChildSpans(&Entry{Mode: ModeReg}); err == nil {
		t.Error("ChildSpans of a file: no error")
	}
}

func describeAll(l []*Entry) string {
	var b bytes.Buffer
	for _, e := range l {
		fmt.Fprintf(&b, "%s %d %d %d %o %d %q\n", e.Path, e.Offset, e.NameOffset, e.End, e.Mode, e.Size, e.Target)
	}
	return b.String()
}

// TestListDirRejects checks that ListDir keeps ReadDir's checks: a
// corrupted goodbye table fails both.
func TestListDirRejects(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 5; i++ {
		must(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), []byte("x"), 0o644))
	}
	var buf bytes.Buffer
	_, err := Encode(context.Background(), &buf, dir, EncodeOptions{})
	must(t, err)
	data := buf.Bytes()
	// Swap two goodbye items of the root (its table ends 24 bytes before
	// the archive's end): the binary-search-tree layout breaks.
	g := len(data) - int(le.Uint64(data[len(data)-16:]))
	a0, a1 := g+16, g+16+24
	tmp := append([]byte(nil), data[a0:a0+24]...)
	copy(data[a0:a0+24], data[a1:a1+24])
	copy(data[a1:a1+24], tmp)
	a, err := Open(bytes.NewReader(data), int64(len(data)))
	must(t, err)
	_, errR := a.ReadDir(a.Root())
	_, errL := a.ListDir(a.Root(), 0)
	if errR == nil || errL == nil {
		t.Fatalf("corrupted goodbye table: ReadDir %v, ListDir %v", errR, errL)
	}
}
