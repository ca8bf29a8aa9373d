package vfs

import (
	"context"
	"sort"
	"syscall"
	"time"
)

// Pushing file contents into the kernel's page cache.
//
// A reader of a tree's file contents in archive order (tar, cp -r) costs a
// FUSE round trip per file: the reader blocks in read(2) while the kernel
// asks camount for the file's pages, however fast camount answers. Where
// files are small that round trip is most of the time. So while such a
// reader is under way (seqReads), a pusher stores the small files ahead of
// it in the kernel's page cache (FUSE_NOTIFY_STORE), up to pushLead bytes
// of archive ahead: the following files of the directory whose file the
// reader starts to read, and the files of a directory the reader lists
// when it gets there. The reader then finds them cached and the kernel
// sends no READ for them (OPEN is answered with ENOSYS, which keeps the
// page cache, and the image never changes). Only files whose inode the
// kernel holds (listed by readdirplus) can be pushed; the kernel refuses
// the others and they are read as usual. The pushed bytes are the verified
// ones a READ would return. A walk that reads no file contents (find, du)
// pushes nothing.

const (
	pushLead = 32 << 20 // bytes of archive pushed ahead of the reader
	pushMax  = 1 << 20  // larger files are left to the kernel's readahead
)

// pushJob asks for the small files of a listed directory that start
// after archive offset after to be pushed.
type pushJob struct {
	dir   *TreeNode
	after int64
}

// push queues a push job. It never blocks: when the pusher is busy the
// job is dropped.
func (t *tree) push(j pushJob) {
	select {
	case t.pushJobs <- j:
	default:
	}
}

// pushAfter asks for the files after n in its directory to be pushed (a
// sequential reader starts reading n).
func (t *tree) pushAfter(n *TreeNode) {
	if _, pi := n.Parent(); pi != nil {
		if pn, ok := pi.Operations().(*TreeNode); ok {
			t.push(pushJob{dir: pn, after: n.e.End})
		}
	}
}

// pusher serves push jobs, in order, on its own goroutine. When a job
// pushed the rest of its directory, it goes on with the files that follow
// the directory in its parent (the reader comes back there next), within
// the same lead. It returns when the tree is stopped.
func (t *tree) pusher() {
	defer t.background.Done()
	p := &pushState{t: t}
	for {
		var j pushJob
		select {
		case j = <-t.pushJobs:
		case <-t.done:
			return // stopped
		}
		limit := j.after + pushLead
		for p.pushDir(j, limit) {
			_, pi := j.dir.Parent()
			if pi == nil {
				break
			}
			pn, ok := pi.Operations().(*TreeNode)
			if !ok {
				break
			}
			j = pushJob{dir: pn, after: j.dir.e.End}
		}
	}
}

// pushState is the pusher's.
type pushState struct {
	t     *tree
	buf   []byte
	ahead int64 // prefetched up to here
}

// pushDir pushes the small files of j.dir after j.after, ending at its
// first subdirectory or at limit. It reports whether it got to the end of
// the directory.
func (p *pushState) pushDir(j pushJob, limit int64) (done bool) {
	t := p.t
	dl := j.dir.listing.Load()
	if dl == nil {
		return false
	}
	l := dl.list
	from := max(j.after, dl.pushed)
	i := sort.Search(len(l), func(i int) bool { return l[i].Offset >= from })
	if i == len(l) {
		return true
	}
	if l[i].Offset >= limit {
		return false
	}
	// All of it is read soon, in this order (subdirectories in between
	// too): fetch it in parallel.
	start, end := l[i].Offset, min(limit, l[len(l)-1].End)
	if start > p.ahead || start < p.ahead-2*pushLead { // a new run
		p.ahead = start
	}
	if end > p.ahead {
		t.pre.PrefetchRange(p.ahead, end-p.ahead)
		p.ahead = end
	}
	dir := j.dir.EmbeddedInode()
	for ; i < len(l); i++ {
		c := l[i]
		if c.End > limit {
			return false
		}
		if c.IsDir() {
			// The reader goes into it next: its files are pushed
			// when it is listed, and this directory's later files
			// when the reader is back.
			return false
		}
		if !c.IsRegular() || c.Size == 0 || c.Size > pushMax {
			dl.pushed = c.End
			continue
		}
		if c.PayloadOffset < t.pos.Load() {
			dl.pushed = c.End
			continue // the reader got there first
		}
		ci := dir.GetChild(c.Name)
		for try := 0; ci == nil && try < 10; try++ {
			// A job from a listing can come before the listing's
			// entries reach the kernel.
			time.Sleep(200 * time.Microsecond)
			ci = dir.GetChild(c.Name)
		}
		if ci == nil {
			return false // not known to the kernel; a later job goes on
		}
		dl.pushed = c.End
		if int64(cap(p.buf)) < c.Size {
			p.buf = make([]byte, pushMax)
		}
		b := p.buf[:c.Size]
		// At a reader's priority: the reader is right behind.
		if m, err := readFull(context.Background(), t.src, b, c.PayloadOffset, 0); err != nil || m != len(b) {
			continue // the reader gets the error when it reads the file
		}
		errno := ci.WriteCache(0, b)
		for try := 0; errno == syscall.ENOENT && try < 3; try++ {
			// The kernel may not have taken in the listing that
			// names the file yet.
			time.Sleep(100 * time.Microsecond)
			errno = ci.WriteCache(0, b)
		}
		if errno != 0 {
			t.log.Debug("storing file contents in the kernel cache failed", "path", "/"+c.Path, "err", errno)
			continue
		}
		t.seq.pushedTo(c.End)
		t.pushed.Add(1)
	}
	return true
}
