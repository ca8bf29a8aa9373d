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
	// pushed: the run's files up to here were stored in the kernel's
	// cache (push.go), so the reader reads them without asking; its next
	// read may come from anywhere up to here and still continue the run.
	pushed int64 // guarded by mu
}

const (
	seqSlack     = 256 << 10 // a read this close to the run's end continues it
	seqMinWindow = 1 << 20   // first window of a run
	seqMaxWindow = 16 << 20  // largest window
	seqAfter     = 2         // reads that start a run
)

// observe records a read of [off, off+n) and returns the range to
// prefetch (n == 0: nothing) and whether the read continues a run.
func (s *seqReads) observe(off, n int64) (pOff, pLen int64, inRun bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	end := off + n
	if off < s.next-seqSlack || off > max(s.next, s.pushed)+seqSlack {
		s.run, s.window, s.ahead = 0, 0, end
		s.next = end
		return 0, 0, false
	}
	s.run++
	s.next = max(s.next, end)
	if s.run < seqAfter {
		return 0, 0, false
	}
	if s.window == 0 {
		s.window = seqMinWindow
	} else if s.ahead-s.next < s.window/2 {
		s.window = min(2*s.window, seqMaxWindow)
	}
	from := max(s.ahead, s.next)
	to := s.next + s.window
	if to-from < s.window/4 { // prefetch in steps, not per read
		return 0, 0, true
	}
	s.ahead = to
	return from, to - from, true
}

// pushedTo records that the files of the run up to archive offset end are
// in the kernel's cache.
func (s *seqReads) pushedTo(end int64) {
	s.mu.Lock()
	s.pushed = max(s.pushed, end)
	s.mu.Unlock()
}

// near reports whether a sequential run is under way and has got to
// about off: the run's reads, or what was pushed for it, end shortly
// before off.
func (s *seqReads) near(off int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.run >= seqAfter && off >= s.next-seqSlack && off <= max(s.next, s.pushed)+seqSlack
}

// active reports whether a sequential run is under way.
func (s *seqReads) active() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.run >= seqAfter
}
