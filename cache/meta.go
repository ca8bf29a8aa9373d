package cache

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Besides chunk files, a cache directory holds what other packages keep
// there: fetched indexes (so that an image starts offline) and seed scans
// (so that a seed is not scanned twice). They live in these
// subdirectories; chunk scans skip them, but the bound and `cache prune`
// count them, so the directory as a whole stays within what was asked.
const (
	IndexDir = "indexes" // fetched index files and their validators (fetch)
	SeedDir  = "seeds"   // file and tree seed scans (seed)
)

// Kinds of metadata entries.
const (
	MetaIndex    = "index"
	MetaSeedScan = "seed scan"
)

// MetaEntry is one unit of metadata, removed whole: an index with its
// validators, a file seed's scan, or a tree seed's scan directory.
type MetaEntry struct {
	Kind  string
	Paths []string // everything removed with it
	Size  int64
	Used  time.Time // last use (newest modification or access time)
}

// Remove deletes the entry.
func (m MetaEntry) Remove() error {
	var first error
	for _, p := range m.Paths {
		if err := os.RemoveAll(p); err != nil && !errors.Is(err, fs.ErrNotExist) && first == nil {
			first = err
		}
	}
	return first
}

// MetaOf counts the metadata entries of one kind (MetaIndex,
// MetaSeedScan) and sums their sizes.
func (c *DirContents) MetaOf(kind string) (n int, size int64) {
	for _, m := range c.Meta {
		if m.Kind == kind {
			n++
			size += m.Size
		}
	}
	return n, size
}

// MetaBytes sums the sizes of the metadata entries.
func (c *DirContents) MetaBytes() int64 {
	var n int64
	for _, m := range c.Meta {
		n += m.Size
	}
	return n
}

// TempPrefix starts the names of metadata files being written (removed
// by a scan once an hour old).
const TempPrefix = ".tmp-"

// ScratchPrefix starts the names of tree scans in progress under SeedDir;
// the seed package removes those left by processes that are gone.
const ScratchPrefix = ".tree-scan-"

// scanMeta lists the metadata entries of the subdirectory sub of dir into
// out; temporary files count as temporaries (stale ones older than old).
func scanMeta(dir, sub string, old time.Time, out *DirContents) {
	d := filepath.Join(dir, sub)
	if ents, err := os.ReadDir(d); err == nil {
		listMeta(d, sub, ents, old, out)
	}
}

// listMeta is scanMeta for the entries ents of the metadata directory d.
func listMeta(d, sub string, ents []os.DirEntry, old time.Time, out *DirContents) {
	byStem := map[string]int{} // index entries: stem → position in out.Meta
	for _, e := range ents {
		name := e.Name()
		p := filepath.Join(d, name)
		info, err := os.Lstat(p)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(name, TempPrefix):
			out.Temps++
			if info.ModTime().Before(old) {
				out.StaleTemps = append(out.StaleTemps, p)
			}
		case strings.HasPrefix(name, ScratchPrefix):
			// a scan in progress, or abandoned: the seed package removes
			// those whose owner is gone.
		case info.IsDir():
			size, used := treeUsage(p)
			out.Meta = append(out.Meta, MetaEntry{Kind: MetaSeedScan, Paths: []string{p}, Size: size, Used: used})
		case !info.Mode().IsRegular():
		case sub == IndexDir:
			stem := strings.TrimSuffix(name, filepath.Ext(name))
			i, ok := byStem[stem]
			if !ok {
				i = len(out.Meta)
				byStem[stem] = i
				out.Meta = append(out.Meta, MetaEntry{Kind: MetaIndex})
			}
			m := &out.Meta[i]
			m.Paths = append(m.Paths, p)
			m.Size += info.Size()
			if u := usedTime(info); u.After(m.Used) {
				m.Used = u
			}
		default:
			out.Meta = append(out.Meta, MetaEntry{Kind: MetaSeedScan, Paths: []string{p}, Size: info.Size(), Used: usedTime(info)})
		}
	}
}

// treeUsage sums the sizes of the regular files under p and finds the
// newest use among them.
func treeUsage(p string) (size int64, used time.Time) {
	filepath.WalkDir(p, func(_ string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return nil
		}
		if u := usedTime(info); u.After(used) {
			used = u
		}
		if info.Mode().IsRegular() {
			size += info.Size()
		}
		return nil
	})
	return size, used
}

// usedTime is a file's last use: the later of its modification and access
// times.
func usedTime(info fs.FileInfo) time.Time {
	used := info.ModTime()
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		if at := time.Unix(int64(st.Atim.Sec), int64(st.Atim.Nsec)); at.After(used) {
			used = at
		}
	}
	return used
}

// TrimMeta keeps the keep most recently used entries of the metadata
// subdirectory sub (IndexDir or SeedDir) of the cache directory dir and
// removes the others: every changed seed and every new index URL (a
// signed URL whose signature changes) makes a new entry.
func TrimMeta(dir, sub string, keep int) {
	d := filepath.Join(dir, sub)
	ents, err := os.ReadDir(d)
	if err != nil || len(ents) <= keep {
		return // no more names than entries to keep: nothing to stat or walk
	}
	var c DirContents
	listMeta(d, sub, ents, time.Time{}, &c)
	if len(c.Meta) <= keep {
		return
	}
	sort.Slice(c.Meta, func(i, j int) bool { return c.Meta[i].Used.After(c.Meta[j].Used) })
	for _, m := range c.Meta[keep:] {
		m.Remove()
	}
}
