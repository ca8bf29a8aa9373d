package main

import (
	"context"
	"flag"
	"sync/atomic"

	"github.com/camount/camount/extract"
	"github.com/camount/camount/fetch"
	"github.com/camount/camount/location"
)

func init() {
	register(&command{
		name:    "extract",
		args:    "[flags] INDEX.caibx OUT | INDEX.caidx|ARCHIVE.catar DIR",
		summary: "write out an image's file, block device or tree, verifying every chunk",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			bf := addBlobFlags(fs)
			tf := addTreeFlags(fs)
			tf.bf = bf // a .caidx is read with the verb's store and seed flags
			xf := addExtractTreeFlags(fs)
			sf := addSeedFlags(fs, bf, true)
			pf := &prefetchFlags{mode: "none"}
			fs.StringVar(&pf.statsJSON, "stats-json", "", "write fetch statistics of a .caibx extract as JSON to `FILE` at the end")
			stats := fs.Bool("stats", false, "print a line of fetch statistics of a .caibx extract at the end")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 2 {
					return usagef("want an image and an output")
				}
				in, out := args[0], args[1]
				// Every location is checked before any work (locations.go).
				in, err := bf.checkReadLocations(in)
				if err != nil {
					return err
				}
				if out != "-" {
					if out, err = parseLocal("OUT", out, location.Output); err != nil {
						return err
					}
				}
				if err := pf.checkFiles(); err != nil {
					return err
				}
				switch kindOf(in) {
				case kindBlobIndex:
					pf.quietExit = !*stats
					return extractBlob(ctx, e, bf, pf, xf, sf, in, out)
				case kindTreeIndex, kindArchive:
					return extractTree(ctx, e, tf, xf, sf, in, out)
				}
				return usagef("%s: input must end in .caibx, .caidx or .catar", in)
			}
		},
	})
}

// extractBlob writes the blob of a .caibx to a file (through a temporary
// file renamed over it on success), a block device (in place) or, for
// "-", standard output; the pipeline is package extract.
func extractBlob(ctx context.Context, e *env, bf *blobFlags, pf *prefetchFlags, xf *extractTreeFlags, sf *seedFlags, in, out string) error {
	// Extraction reads every chunk once: a memory cache would only cost.
	o := *bf
	o.cacheSize = 0
	o.readTimeout = -1 // not an interactive reader: wait out the stores' retries
	o.bulk = true      // and the only one: readahead may use every fetch worker
	blob, x, err := openBlob(ctx, e, in, &o)
	if err != nil {
		return err
	}
	defer blob.Scheduler().Close()
	// The statistics count seeded chunks apart from fetched ones: live
	// from the progress counts, then the extract's result.
	p := newSeedProgress(e, "extract", blob.Size())
	defer p.done()
	var final atomic.Pointer[extract.Result] // read on SIGUSR1
	pf.seeded = func() *fetch.SeededStats {
		if r := final.Load(); r != nil {
			return &fetch.SeededStats{Chunks: r.SeededChunks, Bytes: r.SeededBytes, ReflinkedBytes: r.ReflinkedBytes}
		}
		return &fetch.SeededStats{Chunks: p.seededChunks.Load(), Bytes: p.seeded.Load()}
	}
	stopStats, err := startBlobServices(ctx, e, blob, &o, pf)
	if err != nil {
		return err
	}
	defer stopStats()
	eo := extract.Options{Log: e.log}
	holes, herr := yesNo("punch-holes", xf.punchHoles)
	if herr != nil {
		return herr
	}
	eo.WriteZeros = !holes
	if eo.SeedOutput, err = yesNo("seed-output", sf.output); err != nil {
		return err
	}
	if eo.Reflink, err = extract.ParseReflink(sf.reflink); err != nil {
		return usagef("%v", err)
	}
	eo.ScanCache = scanCache(&o)
	if len(sf.paths) > 0 && out != "-" {
		set, err := sf.open(e, &o, x, false)
		if err != nil {
			return err
		}
		defer set.Close()
		eo.Seeds = set
	}
	eo.Progress = p.add
	var res *extract.Result
	if out == "-" {
		res, err = extract.Stream(ctx, blob, e.stdout, eo)
	} else {
		res, err = extract.Blob(ctx, blob, out, eo)
	}
	if err == nil {
		final.Store(res)
	}
	if err == nil && res.SeededChunks > 0 {
		e.log.Info("extracted", "seeded chunks", res.SeededChunks, "seeded bytes", res.SeededBytes,
			"reflinked bytes", res.ReflinkedBytes, "fetched chunks", res.FetchedChunks, "fetched bytes", res.FetchedBytes)
	}
	return err
}
