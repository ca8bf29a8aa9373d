package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/fetch"
)

func init() {
	register(&command{
		name:    "extract",
		args:    "[flags] INDEX.caibx OUT | INDEX.caidx|ARCHIVE.catar DIR",
		summary: "write out an image's file, block device or tree, verifying every chunk",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			bf := addBlobFlags(fs)
			tf := addTreeFlags(fs)
			pf := &prefetchFlags{mode: "none"}
			fs.StringVar(&pf.statsJSON, "stats-json", "", "write fetch statistics of a .caibx extract as JSON to `FILE` at the end")
			stats := fs.Bool("stats", false, "print a line of fetch statistics of a .caibx extract at the end")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 2 {
					return usagef("want an image and an output")
				}
				in, out := args[0], args[1]
				switch kindOf(in) {
				case kindBlobIndex:
					pf.quietExit = !*stats
					return extractBlob(ctx, e, bf, pf, in, out)
				case kindTreeIndex, kindArchive:
					return extractTree(ctx, e, tf, in, out)
				}
				return usagef("%s: input must end in .caibx, .caidx or .catar", in)
			}
		},
	})
}

// extractBlob writes the blob of a .caibx to a file (sparse where chunks are
// zero) or a block device (every byte written). Chunks are fetched, decoded
// and verified on all cores; identical chunks are written from one fetch.
func extractBlob(ctx context.Context, e *env, bf *blobFlags, pf *prefetchFlags, in, out string) error {
	// Extraction reads every chunk once: a memory cache would only cost.
	o := *bf
	o.cacheSize = 0
	blob, x, err := openBlob(ctx, e, in, &o)
	if err != nil {
		return err
	}
	defer blob.Scheduler().Close()
	stopStats, err := startBlobServices(ctx, e, blob, &o, pf)
	if err != nil {
		return err
	}
	defer stopStats()
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	regular := st.Mode().IsRegular()
	if regular {
		// Start from a hole of the right size so zero chunks need no writes.
		if err := f.Truncate(0); err != nil {
			return err
		}
		if err := f.Truncate(blob.Size()); err != nil {
			return err
		}
	} else if n := sizeOf(f, st); n >= 0 && n < blob.Size() {
		return fmt.Errorf("%s: device holds %d bytes, the image needs %d", out, n, blob.Size())
	}
	p := newProgress(e, "extract", blob.Size())
	defer p.done()

	// Identical chunks are fetched once and written at each of their places:
	// the memory cache is off, so a repeat would otherwise be fetched again.
	firstOf := make(map[chunker.ID]int, len(x.Chunks))
	copies := map[int][]int{}
	for i, c := range x.Chunks {
		if blob.IsZero(i) && regular {
			continue
		}
		if j, ok := firstOf[c.ID]; ok {
			copies[j] = append(copies[j], i)
			continue
		}
		firstOf[c.ID] = i
	}
	// Every chunk is a fresh allocation and almost nothing stays live, so
	// the default GC would run every few MB: let the heap grow further.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	// Enough fetches in flight to hide network latency (remote stores);
	// the scheduler bounds the real concurrency.
	workers := max(16, 2*runtime.GOMAXPROCS(0))
	var next atomic.Int64
	var wg sync.WaitGroup
	var errOnce sync.Once
	var firstErr error
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(x.Chunks) || ctx.Err() != nil {
					return
				}
				c := x.Chunks[i]
				if blob.IsZero(i) && regular {
					p.add(int64(c.Size))
					continue
				}
				if firstOf[c.ID] != i {
					continue // written with the first copy
				}
				data, err := blob.Chunk(ctx, i, fetch.Foreground)
				for _, j := range append([]int{i}, copies[i]...) {
					if err == nil {
						_, err = f.WriteAt(data, int64(x.Chunks[j].Start))
					}
					if err == nil {
						p.add(int64(c.Size))
					}
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if !regular {
		return f.Sync()
	}
	return f.Close()
}
