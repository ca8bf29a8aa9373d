package vfs

import "sync"

// Archive readahead: tar, cp -r and rsync read a tree's files in directory
// order, which is archive order, so their reads of file contents walk the
// archive almost sequentially (the records between two files are a few
// hundred bytes). seqReads notices such a run across files and asks the
// source to prefetch the archive ahead of it; reads from elsewhere end the
// run. One detector serves the whole mount: the kernel's readahead of one
// file arrives as several concurrent reads, slightly out of order, which
// the slack absorbs.
type seqReads struct {
	mu     sync.Mutex
	next   int64 // guarded by mu: end of the run so far
	ahead  int64 // guarded by mu: prefetched up to here
	window int64 // guarded by mu: current window, 0 outside a run
	run    int   // guarded by mu: reads in the run
}

const (
	seqSlack     = 256 << 10 // a read this close to the run's end continues it
	seqMinWindow = 1 << 20   // first window of a run
	seqMaxWindow = 16 << 20  // largest window
	seqAfter     = 2         // reads that start a run
)

// observe records a read of [off, off+n) and returns the range to
// prefetch (n == 0: nothing).
func (s *seqReads) observe(off, n int64) (pOff, pLen int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	end := off + n
	if off < s.next-seqSlack || off > s.next+seqSlack {
		s.run, s.window, s.ahead = 0, 0, end
		s.next = end
		return 0, 0
	}
	s.run++
	s.next = max(s.next, end)
	if s.run < seqAfter {
		return 0, 0
	}
	if s.window == 0 {
		s.window = seqMinWindow
	} else if s.ahead-s.next < s.window/2 {
		s.window = min(2*s.window, seqMaxWindow)
	}
	from := max(s.ahead, s.next)
	to := s.next + s.window
	if to-from < s.window/4 { // prefetch in steps, not per read
		return 0, 0
	}
	s.ahead = to
	return from, to - from
}
