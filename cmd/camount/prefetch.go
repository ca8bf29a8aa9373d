package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/camount/camount/fetch"
	"github.com/camount/camount/vfs"
)

// The blob is what vfs reads: per-open readahead (HintedSource) and
// listing hints (Prefetcher) come from fetch.Blob itself.
var (
	_ vfs.HintedSource = (*fetch.Blob)(nil)
	_ vfs.Prefetcher   = (*fetch.Blob)(nil)
)

// prefetchFlags are the flags of the verbs that serve an image (mount,
// nbd, extract): readahead, background fill, access profiles and stats.
type prefetchFlags struct {
	mode            string
	rateLimit       byteSize
	readaheadMax    byteSize
	recordProfile   string
	prefetchProfile string
	statsJSON       string
	quietExit       bool // no stats line at exit (SIGUSR1 still prints one)
	// seeded, if set, adds an extract's seeded counts to the statistics.
	seeded func() *fetch.SeededStats
}

func addPrefetchFlags(fs *flag.FlagSet) *prefetchFlags {
	o := &prefetchFlags{readaheadMax: fetch.DefaultReadaheadMax}
	fs.StringVar(&o.mode, "prefetch", "readahead", "prefetching: `none`, readahead (fetch ahead of sequential reads), or all (also fetch the whole image in the background while readers are idle)")
	fs.Var(&o.rateLimit, "rate-limit", "cap the --prefetch=all and --prefetch-profile fill at `BYTES`/s of chunk data (K/M/G suffixes; 0: no cap)")
	fs.Var(&o.readaheadMax, "readahead-max", "largest readahead window of a sequential reader, in `BYTES`")
	fs.StringVar(&o.recordProfile, "record-profile", "", "write the chunks read, in first-access order, to `FILE` at exit (and on SIGUSR1)")
	fs.StringVar(&o.prefetchProfile, "prefetch-profile", "", "fetch the chunks of a profile `FILE` (from --record-profile of this image) in the background at start")
	fs.StringVar(&o.statsJSON, "stats-json", "", "write fetch statistics as JSON to `FILE` at exit and on SIGUSR1")
	return o
}

func (o *prefetchFlags) check() error {
	switch o.mode {
	case "none", "readahead", "all":
	default:
		return usagef("--prefetch must be none, readahead or all, not %q", o.mode)
	}
	return o.checkFiles() // locations.go
}

// startBlobServices starts what the prefetch flags ask for on blob: the
// readahead cap, profile recording, the profile and whole-image fills
// (Background priority, in this order), and stats on SIGUSR1. stop ends the
// fills, writes the recorded profile and --stats-json, and prints the stats
// line; call it once, when the image is no longer served.
func startBlobServices(ctx context.Context, e *env, blob *fetch.Blob, bf *blobFlags, o *prefetchFlags) (stop func(), err error) {
	if o == nil {
		o = &prefetchFlags{mode: "readahead", readaheadMax: fetch.DefaultReadaheadMax}
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	var prof *fetch.Profile
	if o.prefetchProfile != "" {
		f, err := os.Open(o.prefetchProfile)
		if err != nil {
			return nil, fmt.Errorf("--prefetch-profile: %w", err)
		}
		prof, err = fetch.ReadProfile(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("--prefetch-profile %s: %w", o.prefetchProfile, err)
		}
		if err := prof.Check(blob.Index()); err != nil {
			return nil, fmt.Errorf("--prefetch-profile %s: %w", o.prefetchProfile, err)
		}
	}
	if o.mode == "none" || bf.cacheSize == 0 {
		blob.SetReadahead(0) // (without a memory cache, read-ahead chunks would be dropped)
	} else {
		blob.SetReadahead(int64(o.readaheadMax))
	}
	var rec *fetch.Recorder
	if o.recordProfile != "" {
		rec = blob.Record()
	}

	fillCtx, cancelFill := context.WithCancel(ctx)
	var wg sync.WaitGroup
	s := blob.Scheduler()
	var maxBytes int64
	if !s.HasDisk() {
		// Without a disk cache the fill can only keep what the memory
		// cache holds; fetching more would evict what readers use.
		maxBytes = max(int64(bf.cacheSize)*3/4, 0)
		if maxBytes == 0 && (prof != nil || o.mode == "all") {
			e.log.Warn("no memory or disk cache to prefetch into: --prefetch=all and --prefetch-profile do nothing")
			prof, o = nil, &prefetchFlags{mode: "readahead", recordProfile: o.recordProfile, statsJSON: o.statsJSON, quietExit: o.quietExit}
		}
	}
	if prof != nil || o.mode == "all" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			if prof != nil {
				res, err := blob.Fill(fillCtx, fetch.FillOptions{Order: prof.Chunks, RateLimit: int64(o.rateLimit), MaxBytes: maxBytes})
				logFill(e, "profile", res, err, start)
				if err != nil {
					return
				}
			}
			if o.mode == "all" {
				if maxBytes > 0 && maxBytes < blob.Size() {
					e.log.Info("prefetch=all without a disk cache (--cache DIR): filling only what the memory cache holds", "bytes", maxBytes)
				}
				res, err := blob.Fill(fillCtx, fetch.FillOptions{RateLimit: int64(o.rateLimit), YieldIdle: 50 * time.Millisecond, MaxBytes: maxBytes})
				logFill(e, "image", res, err, start)
			}
		}()
	}

	report := func(final bool) {
		ss := s.Snapshot()
		if o.seeded != nil {
			ss.Seeded = o.seeded()
		}
		if !final || !o.quietExit {
			fmt.Fprintf(e.stderr, "camount: stats: %s\n", ss)
		}
		if o.statsJSON != "" {
			if err := writeBytesAtomic(o.statsJSON, ss.JSON()); err != nil {
				e.log.Warn("cannot write --stats-json", "file", o.statsJSON, "err", err)
			}
		}
		if rec != nil {
			if err := writeProfile(o.recordProfile, rec.Profile()); err != nil {
				e.log.Warn("cannot write --record-profile", "file", o.recordProfile, "err", err)
			} else if final {
				e.log.Debug("profile written", "file", o.recordProfile, "chunks", len(rec.Profile().Chunks))
			}
		}
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	sigDone := make(chan struct{})
	go func() {
		defer close(sigDone)
		for {
			select {
			case <-usr1:
				report(false)
			case <-fillCtx.Done():
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(usr1)
			cancelFill()
			wg.Wait()
			<-sigDone
			report(true)
		})
	}, nil
}

func logFill(e *env, what string, res fetch.FillResult, err error, start time.Time) {
	if err != nil && !errors.Is(err, context.Canceled) {
		e.log.Warn("background fill stopped", "fill", what, "err", err)
		return
	}
	e.log.Debug("background fill", "fill", what, "done", err == nil, "chunks", res.Fetched, "bytes", res.FetchedBytes,
		"skipped", res.Skipped, "failed", res.Failed, "took", time.Since(start).Round(time.Millisecond))
}

func writeProfile(path string, p *fetch.Profile) error {
	var buf bytes.Buffer
	if _, err := p.WriteTo(&buf); err != nil {
		return err
	}
	return writeBytesAtomic(path, buf.Bytes())
}

// writeBytesAtomic replaces path with data, never leaving a partial file.
func writeBytesAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
