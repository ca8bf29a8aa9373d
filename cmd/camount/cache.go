package main

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/camount/camount/cache"
	"github.com/camount/camount/location"
)

func init() {
	register(&command{
		name:    "cache",
		args:    "stats|prune|verify [flags] DIR",
		summary: "inspect, shrink or check a --cache directory",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var maxSize byteSize
			fs.Var(&maxSize, "max-size", "prune: keep at most `BYTES` (K/M/G/T suffixes) counting chunks, kept indexes and seed scans; least recently used chunks go first, metadata only once no chunk is left (default 0: empty the cache)")
			remove := fs.Bool("remove", false, "verify: remove chunk files that do not match their ID")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 2 {
					return usagef("want a subcommand (stats, prune, verify) and a cache directory")
				}
				dir, err := parseLocal("DIR", args[1], location.Cache)
				if err != nil {
					return err
				}
				if st, err := os.Stat(dir); err != nil {
					return err
				} else if !st.IsDir() {
					return fmt.Errorf("%s: not a directory", dir)
				}
				switch args[0] {
				case "stats":
					return cacheStats(e, dir)
				case "prune":
					files, n, err := cache.Prune(dir, int64(maxSize))
					if err != nil {
						return err
					}
					fmt.Fprintf(e.stdout, "removed %d files, %s\n", files, human(n))
					return cacheStats(e, dir)
				case "verify":
					return cacheVerify(ctx, e, dir, *remove)
				}
				return usagef("unknown subcommand %q (want stats, prune or verify)", args[0])
			}
		},
	})
}

func cacheStats(e *env, dir string) error {
	c, err := cache.ScanDir(dir)
	if err != nil {
		return err
	}
	var total int64
	var oldest, newest time.Time
	for _, f := range c.Chunks {
		total += f.Size
		if oldest.IsZero() || f.Used.Before(oldest) {
			oldest = f.Used
		}
		if f.Used.After(newest) {
			newest = f.Used
		}
	}
	w := e.stdout
	fmt.Fprintf(w, "Cache:           %s\n", dir)
	fmt.Fprintf(w, "Chunks:          %d (%s)\n", len(c.Chunks), human(total))
	n, size := c.MetaOf(cache.MetaIndex)
	fmt.Fprintf(w, "Indexes kept:    %d (%s)\n", n, human(size))
	n, size = c.MetaOf(cache.MetaSeedScan)
	fmt.Fprintf(w, "Seed scans:      %d (%s)\n", n, human(size))
	all := total + c.MetaBytes()
	fmt.Fprintf(w, "Size:            %d (%s)\n", all, human(all))
	if len(c.Chunks) > 0 {
		fmt.Fprintf(w, "Least recent:    %s\n", oldest.UTC().Format(time.RFC3339))
		fmt.Fprintf(w, "Most recent:     %s\n", newest.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "Temporary files: %d\n", c.Temps)
	if c.Other > 0 {
		fmt.Fprintf(w, "Other files:     %d (not managed by the cache)\n", c.Other)
	}
	return nil
}

// cacheVerify checks every chunk file against its ID. The cache keeps chunks
// uncompressed and an index is not at hand, so both digests casync uses are
// tried: a file is good if either matches its name.
func cacheVerify(ctx context.Context, e *env, dir string, remove bool) error {
	c, err := cache.ScanDir(dir)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var bad, gone int
	var wg sync.WaitGroup
	next := make(chan cache.ChunkFile)
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range next {
				data, err := os.ReadFile(f.Path)
				if errors.Is(err, os.ErrNotExist) {
					mu.Lock()
					gone++ // evicted meanwhile
					mu.Unlock()
					continue
				}
				ok := err == nil && (sha512.Sum512_256(data) == f.ID || sha256.Sum256(data) == f.ID)
				if ok {
					continue
				}
				mu.Lock()
				bad++
				if err != nil {
					fmt.Fprintf(e.stdout, "unreadable %s: %v\n", f.Path, err)
				} else {
					fmt.Fprintf(e.stdout, "corrupt %s\n", f.Path)
				}
				if remove {
					os.Remove(f.Path)
				}
				mu.Unlock()
			}
		}()
	}
	for _, f := range c.Chunks {
		if ctx.Err() != nil {
			break
		}
		next <- f
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%d chunks checked, %d corrupt\n", len(c.Chunks)-gone, bad)
	if bad > 0 {
		if remove {
			return fmt.Errorf("%s: %d corrupt chunk files removed", dir, bad)
		}
		return fmt.Errorf("%s: %d corrupt chunk files (--remove deletes them)", dir, bad)
	}
	return nil
}
