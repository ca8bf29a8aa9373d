package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/camount/camount/chunker"
	"github.com/camount/camount/location"
	"github.com/camount/camount/publish"
)

func init() {
	register(&command{
		name:    "push",
		args:    "--from=STORE --to=STORE [--index-to=LOCATION] INDEX...",
		summary: "copy the chunks of indexes between stores (directories, HTTP, S3, sftp), then the indexes",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			from := fs.String("from", "", "chunk `STORE` to read chunks from (a directory, http(s)://, s3+http(s)://, sftp://, or 'URL1|URL2' mirrors); default: $CASYNC_STORE, else default.castr beside the first index")
			to := fs.String("to", "", "chunk `STORE` to copy the missing chunks to (a directory, s3+http(s)://HOST/BUCKET[/PREFIX] or sftp://[USER@]HOST/PATH)")
			indexTo := fs.String("index-to", "", "after the chunks, publish each index to this `LOCATION`: a directory, S3 prefix or sftp directory (the index keeps its name), or a file or object name when there is one index")
			jobs := fs.Int("jobs", 32, "chunks copied at once")
			rf := addRemoteFlags(fs)
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) == 0 {
					return usagef("want at least one index")
				}
				if *to == "" {
					return usagef("--to is required")
				}
				// Every location is checked before any work.
				toLoc, err := location.Parse("--to", *to, location.WriteStore)
				if err != nil {
					return err
				}
				var idxLoc location.Location
				if *indexTo != "" {
					if idxLoc, err = location.Parse("--index-to", *indexTo, location.WriteStore); err != nil {
						return err
					}
				}
				for _, a := range args {
					if _, err := location.Parse("INDEX", a, location.Index); err != nil {
						return err
					}
				}
				src := *from
				if src == "" {
					src = defaultPushSource(args[0])
				}
				if src == "" {
					return usagef("--from is required (no $CASYNC_STORE and no store beside %s)", args[0])
				}
				for _, m := range strings.Split(src, "|") {
					if _, err := location.Parse("--from", m, location.ReadStore); err != nil {
						return err
					}
				}
				var xs []*chunker.Index
				for _, a := range args {
					x, err := rf.loadIndex(ctx, e, a)
					if err != nil {
						return err
					}
					xs = append(xs, x)
				}
				// Where each index goes, decided before copying anything.
				var dests []indexWriter
				if *indexTo != "" {
					for _, a := range args {
						d, err := indexDest(e, rf, idxLoc, a, len(args))
						if err != nil {
							return err
						}
						dests = append(dests, d)
					}
				}
				fromStore, err := rf.openStore(e, src)
				if err != nil {
					return err
				}
				toStore, err := openWriteStore(e, rf, toLoc)
				if err != nil {
					return err
				}
				prog := &publish.Progress{}
				var total int64
				for _, x := range xs {
					total += int64(x.Size())
				}
				if p := newProgress(e, "push", 0, prog.Bytes.Load, storedDetail(prog)); p != nil {
					defer p.done()
				}
				res, err := publish.Push(ctx, xs, publish.PushOptions{From: fromStore, To: toStore, Jobs: *jobs, Progress: prog, Log: e.log})
				if err != nil {
					return fmt.Errorf("push to %s: %w (copied %d chunks before failing; run again to copy the rest)", toLoc, err, res.Copied)
				}
				fmt.Fprintf(e.stdout, "%d chunks: %d copied (%s), %d already in %s\n", res.Chunks, res.Copied, human(res.Bytes), res.Present, toLoc)
				// The indexes last: a reader never sees one whose chunks
				// are missing.
				for i, d := range dests {
					// A signature beside the index (INDEX.minisig) goes
					// first, so a reader checking signatures never finds
					// the new index without its own.
					if err := pushSignature(ctx, e, rf, args[i], d); err != nil {
						return err
					}
					b, err := indexBytes(xs[i])
					if err != nil {
						return err
					}
					if err := d.Write(ctx, b); err != nil {
						return fmt.Errorf("publishing index %s: %w", d, err)
					}
					fmt.Fprintf(e.stdout, "published %s\n", d)
				}
				return nil
			}
		},
	})
}
