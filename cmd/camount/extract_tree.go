package main

import (
	"context"
	"flag"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/camount/camount/extract"
	"github.com/camount/camount/fetch"
	"github.com/camount/camount/seed"
)

// extractTreeFlags are extract's flags for writing a tree (and holes).
type extractTreeFlags struct {
	del, hardlink, punchHoles string
	undoImmutable             bool
}

func addExtractTreeFlags(fs *flag.FlagSet) *extractTreeFlags {
	x := &extractTreeFlags{}
	fs.StringVar(&x.del, "delete", "yes", "remove entries of an existing output directory that the archive lacks: yes or no")
	fs.BoolVar(&x.undoImmutable, "undo-immutable", false, "clear chattr +i/+a of entries that must be replaced or removed")
	fs.StringVar(&x.hardlink, "hardlink", "no", "hard-link files equal in contents and metadata to a seed tree's file instead of writing them: yes or no")
	fs.StringVar(&x.punchHoles, "punch-holes", "yes", "leave runs of zeros as holes in regular files: yes or no (no writes the zeros)")
	return x
}

// yesNo parses a casync-style boolean flag value.
func yesNo(name, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "yes", "y", "true", "1", "on":
		return true, nil
	case "no", "n", "false", "0", "off":
		return false, nil
	}
	return false, usagef("--%s: want yes or no, not %q", name, v)
}

// treeOptions turns the flags into extract.TreeOptions.
func (x *extractTreeFlags) treeOptions(e *env, mask uint64) (extract.TreeOptions, error) {
	o := extract.TreeOptions{Features: mask, UndoImmutable: x.undoImmutable}
	o.Log = e.log
	del, err := yesNo("delete", x.del)
	if err != nil {
		return o, err
	}
	holes, err := yesNo("punch-holes", x.punchHoles)
	if err != nil {
		return o, err
	}
	o.KeepExtra, o.WriteZeros = !del, !holes
	return o, nil
}

// wantHardlinks reports --hardlink=yes.
func (x *extractTreeFlags) wantHardlinks() (bool, error) { return yesNo("hardlink", x.hardlink) }

// extractTree recreates the tree of a .catar or .caidx under dir. With
// seeds (--seed, and an existing output directory unless
// --seed-output=no), a .caidx's chunks are taken from them first: the
// seeds are scanned before the archive is read, then every chunk no seed
// holds is prefetched, so the network stays busy while the tree is
// written.
func extractTree(ctx context.Context, e *env, tf *treeFlags, xf *extractTreeFlags, sf *seedFlags, in string, dir string) error {
	mask, err := tf.mask()
	if err != nil {
		return err
	}
	o, err := xf.treeOptions(e, mask)
	if err != nil {
		return err
	}
	if o.UIDShift, err = tf.uid.get(); err != nil {
		return err
	}
	hard, err := xf.wantHardlinks()
	if err != nil {
		return err
	}
	seedOut, err := yesNo("seed-output", sf.output)
	if err != nil {
		return err
	}
	if kindOf(in) == kindTreeIndex {
		bf := tf.blobFlags()
		bf.seeds = sf
		sf.lazy, sf.wait, sf.hardlinks = true, true, hard
		if st, err := os.Stat(dir); err == nil && st.IsDir() && seedOut {
			sf.outputDir = dir
		}
		// Keep the heap near the chunk cache, as mount does: every chunk
		// passes through it, and without a limit the collector lets the
		// heap grow to twice the cache.
		if os.Getenv("GOMEMLIMIT") == "" && bf.cacheSize > 0 {
			debug.SetMemoryLimit(int64(bf.cacheSize) + 64<<20)
		}
	} else if len(sf.paths) > 0 {
		e.log.Info("--seed is not used for a .catar input: every byte is local")
	}
	r, closer, err := openStream(ctx, e, tf, in)
	if err != nil {
		return err
	}
	defer closer()
	if set := sf.set; set != nil {
		defer set.Close()
		for _, sd := range set.Seeds() {
			if h, ok := sd.(extract.HardlinkSource); ok && hard {
				o.Hardlinks = append(o.Hardlinks, h)
			}
		}
		if sr, ok := r.(*seqReader); ok {
			cr := &posReader{r: r}
			r = cr
			pctx, stop := context.WithCancel(ctx)
			defer stop()
			go prefetchUnseeded(pctx, sr.b, set, int64(tf.blobFlags().cacheSize)/4, cr.n.Load)
		}
	}
	res, err := extract.Tree(ctx, r, dir, o)
	if err == nil && sf.set != nil {
		e.log.Info("extracted", "seeded chunks", sf.set.Served.Load(), "seeded bytes", sf.set.ServedBytes.Load(),
			"hardlinked files", res.Hardlinked, "hardlinked bytes", res.HardlinkedBytes, "deleted", res.Deleted)
	}
	return err
}

// prefetchUnseeded keeps every chunk no seed holds requested ahead of the
// reader, all of those within window bytes of archive past its position
// at once: the network fetches them in parallel while seeded chunks are
// regenerated locally. The window is a fraction of the memory cache, so
// that the chunks read meanwhile (seeded ones too pass through the cache)
// do not push the prefetched ones out before they are used.
func prefetchUnseeded(ctx context.Context, b *fetch.Blob, set *seed.Set, window int64, pos func() int64) {
	x := b.Index()
	var list []int
	for i, c := range x.Chunks {
		if b.IsZero(i) {
			continue
		}
		if _, ok := set.Lookup(c.ID); !ok {
			list = append(list, i)
		}
	}
	window = max(window, 8<<20)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for next := 0; next < len(list); {
		limit := pos() + window
		for ; next < len(list) && int64(x.Chunks[list[next]].Start) < limit; next++ {
			c := x.Chunks[list[next]]
			b.Prefetch(int64(c.Start), int64(c.Size), fetch.Readahead)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// posReader counts the bytes read through it (the reader's position).
type posReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *posReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
