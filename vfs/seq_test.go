package vfs

import "testing"

func TestSeqReads(t *testing.T) {
	var s seqReads
	// Files read one after the other in archive order, with a few hundred
	// bytes of records between them: after seqAfter reads, windows ahead.
	off := int64(1000)
	var fetched, ahead int64
	for i := 0; i < 200; i++ {
		n := int64(20000 + i*100)
		pOff, pLen, _ := s.observe(off, n)
		if pLen > 0 {
			if pOff < ahead || pOff < off {
				t.Fatalf("read %d at %d: prefetch [%d,+%d) overlaps what was prefetched (up to %d) or lies behind the read", i, off, pOff, pLen, ahead)
			}
			fetched += pLen
			ahead = pOff + pLen
		}
		if i >= seqAfter && ahead < off+n {
			t.Fatalf("read %d at %d: prefetched only up to %d", i, off, ahead)
		}
		off += n + 300
	}
	if ahead-off > seqMaxWindow || fetched < off-1000-seqMaxWindow {
		t.Errorf("prefetched %d bytes up to %d; reads ended at %d", fetched, ahead, off)
	}
	// A read elsewhere ends the run: no prefetch until a new run starts.
	if _, n, _ := s.observe(off+100<<20, 4096); n != 0 {
		t.Error("a far read prefetched")
	}
	if _, n, _ := s.observe(5, 4096); n != 0 {
		t.Error("a read behind prefetched")
	}
	// Concurrent kernel readahead of one file arrives slightly out of order.
	base := int64(200 << 20)
	s.observe(base, 128<<10)
	var got int64
	for _, o := range []int64{256 << 10, 128 << 10, 512 << 10, 384 << 10, 640 << 10} {
		_, n, _ := s.observe(base+o, 128<<10)
		got += n
	}
	if got == 0 {
		t.Error("out-of-order sequential reads prefetched nothing")
	}
}
