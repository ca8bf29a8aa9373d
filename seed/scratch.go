package seed

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/camount/camount/cache"
	"golang.org/x/sys/unix"
)

// A tree scan writes its records into a scratch directory named
// scratchPrefix+random under the cache directory (or the temporary
// directory), renamed into the cache when the scan ends, or removed when
// the seed is closed. A process killed meanwhile leaves it behind; the next
// scan removes it. Its owner holds an flock on the directory while it
// lives, so only directories whose owner is gone are removed (the lock
// dies with the process), and only once untouched for scratchGrace (a
// directory just made, not locked yet, is left alone).
const (
	scratchPrefix = cache.ScratchPrefix
	scratchGrace  = time.Minute
)

// makeScratch creates a locked scratch directory under parent ("" for the
// temporary directory); closing lock releases it.
func makeScratch(parent string) (dir string, lock *os.File, err error) {
	dir, err = os.MkdirTemp(parent, scratchPrefix)
	if err != nil {
		return "", nil, err
	}
	lock, err = os.Open(dir)
	if err == nil {
		err = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		os.RemoveAll(dir)
		return "", nil, err
	}
	return dir, lock, nil
}

// cleanScratch removes the scratch directories under parent ("" for the
// temporary directory) left by processes that are gone: not locked, and
// not modified for scratchGrace. It returns how many it removed; failures
// are only logged (they cost disk space, nothing else).
func cleanScratch(parent string, log *slog.Logger) int {
	if parent == "" {
		parent = os.TempDir()
	}
	ents, err := os.ReadDir(parent)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), scratchPrefix) {
			continue
		}
		p := filepath.Join(parent, e.Name())
		if st, err := os.Lstat(p); err != nil || time.Since(st.ModTime()) < scratchGrace {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			f.Close() // its owner is alive
			continue
		}
		// Locked by us now: a live owner cannot be holding it.
		err = os.RemoveAll(p)
		f.Close()
		if err != nil {
			log.Debug("cannot remove an abandoned seed scan directory", "dir", p, "err", err)
			continue
		}
		log.Debug("removed an abandoned seed scan directory", "dir", p)
		n++
	}
	return n
}
