package fetch

import "testing"

// TestStreamReadaheadBoundedByRun: the readahead window never runs further
// ahead than the sequential run has read (but at least ReadaheadMin), so a
// reader that reads a few hundred KiB and stops — a file read during a boot
// on an NBD device — leaves little unread readahead behind, while a long run
// still reaches the cap.
func TestStreamReadaheadBoundedByRun(t *testing.T) {
	st := newGateStore()
	b, _ := fakeBlob(t, st, 2048, 16<<10, 23) // 32 MiB
	b.SetReadahead(16 << 20)
	st.gateAll = make(chan struct{}) // nothing completes: only the window counts
	defer close(st.gateAll)
	s := b.NewStream()
	defer s.Close()
	const rd = 128 << 10
	start := int64(1 << 20)
	var off int64
	for off = start; off < start+6*rd; off += rd {
		s.observe(off, rd)
		span := off + rd - start
		if w := s.Window(); w > max(int64(ReadaheadMin), span) {
			t.Fatalf("after %d KiB read sequentially the window is %d KiB", span>>10, w>>10)
		}
	}
	if s.Window() == 0 {
		t.Fatal("no readahead after six sequential 128 KiB reads")
	}
	// What was requested ahead of the reader is bounded by what it read.
	var requested int64
	for _, rt := range s.tickets {
		if c := b.idx.Chunks[rt.i]; int64(c.Start) >= off {
			requested += int64(c.Size)
		}
	}
	if read := off - start; requested > read+(32<<10) {
		t.Fatalf("%d KiB read, %d KiB of readahead requested", read>>10, requested>>10)
	}
	// A long run reaches the cap.
	for ; off < start+17<<20; off += rd {
		s.observe(off, rd)
	}
	if w := s.Window(); w != 16<<20 {
		t.Fatalf("after %d MiB the window is %d KiB, want the 16 MiB cap", (off-start)>>20, w>>10)
	}
}
