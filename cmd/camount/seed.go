package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/extract"
	"github.com/camount/camount/fetch"
	"github.com/camount/camount/seed"
)

// seedFlags are the --seed flags of extract, mount, nbd and mkdev.
type seedFlags struct {
	paths    stringList
	optional bool
	// extract only
	output, reflink string
	// lazy: openBlob puts the seed set first in the store list and starts
	// its scans in the background (mount, nbd, mkdev); extract handles
	// seeds itself.
	lazy bool
	set  *seed.Set // the set openBlob made, if any
	// Tree extraction (extract_tree.go): scan before reading (wait), with
	// content digests for --hardlink (hardlinks), and the existing output
	// directory as one more seed (outputDir, --seed-output).
	wait      bool
	hardlinks bool
	outputDir string
}

// addSeedFlags registers --seed and --seed-optional on fs, and for extract
// --seed-output and --reflink, and attaches them to bf.
func addSeedFlags(fs *flag.FlagSet, bf *blobFlags, extract bool) *seedFlags {
	sf := &seedFlags{lazy: !extract}
	fs.Var(&sf.paths, "seed", "local `PATH` whose chunks are read instead of fetched (repeatable): a file or block device (chunked as the image), an index .caibx/.caidx with its data beside it without the suffix, or a directory; every seeded chunk is verified")
	fs.BoolVar(&sf.optional, "seed-optional", false, "a missing or unreadable --seed is a warning, not an error")
	if extract {
		fs.StringVar(&sf.output, "seed-output", "yes", "use an existing output file as a seed: yes or no")
		fs.StringVar(&sf.reflink, "reflink", "auto", "clone seeded ranges into the output file instead of copying them (btrfs, xfs): `auto|yes|no` (auto: where the file systems allow)")
	}
	bf.seeds = sf
	return sf
}

// scanCache returns the cache of seed scans: DIR/seeds under --cache DIR,
// else under $XDG_CACHE_HOME/camount (~/.cache/camount); nil if neither
// can be had.
func scanCache(bf *blobFlags) *seed.ScanCache {
	if bf.remote != nil && bf.remote.cacheDir != "" {
		return &seed.ScanCache{Dir: bf.remote.cacheDir}
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return nil
	}
	return &seed.ScanCache{Dir: filepath.Join(d, "camount")}
}

// open opens every --seed for target x into a set (not started). A seed
// that cannot be opened is an error naming it, or with --seed-optional a
// warning.
func (sf *seedFlags) open(e *env, bf *blobFlags, x *chunker.Index, nearby bool) (*seed.Set, error) {
	so := seed.SetOptions{Log: e.log, Optional: sf.optional, Zero: fetch.ZeroChunks(x), Nearby: nearby}
	if bf.readTimeout > 0 {
		// A read waiting for a scan must still have time to fetch.
		so.Wait = min(seed.DefaultWait, bf.readTimeout/2)
	}
	set := seed.NewSet(x, so)
	cache := scanCache(bf)
	for _, p := range sf.paths {
		var sd seed.Seed
		var err error
		if st, serr := os.Stat(p); serr == nil && st.IsDir() && sf.hardlinks {
			sd, err = seed.OpenDir(p, set.Params(), cache, true)
		} else {
			sd, err = seed.Open(p, set.Params(), cache)
		}
		if err != nil {
			if sf.optional {
				e.log.Warn("seed not used", "err", err)
				continue
			}
			set.Close()
			return nil, fmt.Errorf("--seed: %w", err)
		}
		set.Add(sd)
	}
	if sf.outputDir != "" && !sf.isSeed(sf.outputDir) {
		if sd, err := seed.OpenDir(sf.outputDir, set.Params(), cache, sf.hardlinks); err == nil {
			set.Add(sd)
		} else {
			e.log.Debug("output not used as a seed", "err", err)
		}
	}
	return set, nil
}

// isSeed reports whether dir is one of the --seed paths.
func (sf *seedFlags) isSeed(dir string) bool {
	a, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return false
	}
	for _, p := range sf.paths {
		if b, err := filepath.EvalSymlinks(p); err == nil && filepath.Clean(b) == filepath.Clean(a) {
			return true
		}
	}
	return false
}

// lazyStores is called by openBlob: for mount, nbd and mkdev with --seed,
// the seed set becomes the first store and its scans start in the
// background (index seeds and cached scans are usable at once, file seeds
// as the scan reaches them); readiness does not wait for them.
func (sf *seedFlags) lazyStores(ctx context.Context, e *env, bf *blobFlags, x *chunker.Index) ([]fetch.Store, error) {
	if sf == nil || !sf.lazy || len(sf.paths) == 0 && sf.outputDir == "" {
		return nil, nil
	}
	// A read of a chunk the scan has not reached first scans the seeds
	// around the chunk's offset (seeds of an image mostly hold a chunk
	// near its own offset), then is fetched if they lack it.
	set, err := sf.open(e, bf, x, true)
	if err != nil {
		return nil, err
	}
	sf.set = set
	if sf.wait {
		// A tree extract reads the archive front to back: the seeds are
		// scanned first (on every core), so that nothing a seed holds is
		// fetched.
		set.Start(ctx)
		if err := set.Wait(ctx); err != nil {
			set.Close()
			return nil, err
		}
		e.log.Debug("seeds scanned", "chunks found", set.Known())
		return []fetch.Store{set}, nil
	}
	set.Start(seed.Background(ctx))
	go func() {
		if err := set.Wait(context.Background()); err != nil {
			e.log.Warn("a seed could not be scanned whole; its chunks found so far are used", "err", err)
		} else {
			e.log.Debug("seeds scanned", "chunks found", set.Known(), "reads that waited", set.Waits.Load(),
				"delivered by the scan", set.Delivered.Load(), "gave up behind the scan", set.Passed.Load(), "timed out", set.WaitTimeouts.Load())
		}
	}()
	return []fetch.Store{set}, nil
}

// seedProgress shows an extract's progress on a terminal, telling bytes
// taken from seeds from bytes fetched from stores.
type seedProgress struct {
	*progress
	seeded, fetched atomic.Int64
	seededChunks    atomic.Int64
}

func newSeedProgress(e *env, verb string, total int64) *seedProgress {
	sp := &seedProgress{}
	sp.progress = newProgress(e, verb, total, nil, func() string {
		return fmt.Sprintf(" (seeds %s, stores %s)", human(sp.seeded.Load()), human(sp.fetched.Load()))
	})
	return sp
}

func (sp *seedProgress) add(n int64, from extract.From) {
	sp.progress.add(n)
	switch from {
	case extract.FromSeed:
		sp.seeded.Add(n)
		sp.seededChunks.Add(1)
	case extract.FromStore:
		sp.fetched.Add(n)
	}
}
