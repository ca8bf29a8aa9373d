package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/camount/camount/fetch"
	"github.com/camount/camount/gc"
	"github.com/camount/camount/location"
)

// gcStores opens a remote store for gc by URL scheme; remote store kinds
// add theirs from their own file's init.
var gcStores = map[string]func(ctx context.Context, loc location.Location) (gc.Store, error){}

func init() {
	register(&command{
		name:    "gc",
		args:    "[--dry-run] [--store=DIR] [--grace=DURATION] INDEX...",
		summary: "remove the chunks of a store that none of the given indexes references, as casync gc",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			store := fs.String("store", "", "chunk store `DIR` to clean (a casync store or a --cache directory; default: $CASYNC_STORE, else default.castr beside the first index, as casync)")
			dry := fs.Bool("dry-run", false, "only print what would be removed")
			grace := fs.Duration("grace", time.Hour, "keep unreferenced chunks modified within this `DURATION` before gc started (a make writing into the store meanwhile keeps its chunks; 0: keep none)")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) == 0 {
					return usagef("want the indexes that use the store (every one: chunks no given index references are removed)")
				}
				if *grace < 0 {
					return usagef("--grace=%s: must not be negative", *grace)
				}
				spec, flagName := *store, "--store"
				if spec == "" {
					if s := os.Getenv("CASYNC_STORE"); s != "" {
						spec, flagName = s, "$CASYNC_STORE"
					} else {
						spec = defaultLocalStore(args[0])
					}
				}
				loc, err := location.Parse(flagName, spec, location.WriteStore)
				if err != nil {
					return err
				}
				var st gc.Store
				if loc.IsLocal() {
					if fi, err := os.Stat(loc.Path); err != nil {
						return fmt.Errorf("%s %s: %w", flagName, loc.Path, err)
					} else if !fi.IsDir() {
						return fmt.Errorf("%s %s: not a directory", flagName, loc.Path)
					}
					st = gc.Local{Dir: loc.Path}
				} else if open := gcStores[loc.Scheme]; open != nil {
					if st, err = open(ctx, loc); err != nil {
						return err
					}
				} else if ws, err := openWriteStore(e, nil, loc); err != nil {
					return err
				} else if ls, ok := ws.(fetch.ListStore); ok {
					st = gc.List{S: ls}
				} else {
					return &location.Error{Flag: flagName, Value: spec, Use: location.WriteStore, Why: "gc cannot list this store kind"}
				}
				for i, a := range args { // gc reads local indexes (locations.go)
					if args[i], err = parseLocal("INDEX", a, location.Input); err != nil {
						return err
					}
				}
				refs, err := gc.Referenced(args)
				if err != nil {
					return err
				}
				e.log.Debug("gc", "store", loc.String(), "indexes", len(args), "references", refs.Refs, "chunks", refs.Len())
				out := bufferedStdout(e)
				defer out.Flush()
				verb := "removed"
				if *dry {
					verb = "would remove"
				}
				stats, err := gc.Sweep(ctx, st, refs, gc.Options{
					DryRun: *dry,
					MinAge: *grace,
					Log:    e.log,
					OnRemove: func(en gc.Entry) {
						name := en.Name
						if loc.IsLocal() {
							if r, err := filepath.Rel(loc.Path, name); err == nil {
								name = r
							}
						}
						fmt.Fprintf(out, "%s %s (%s)\n", verb, name, human(en.Size))
					},
				})
				fmt.Fprintf(out, "%s %d chunks, %s; kept %d referenced chunks, %s", verb, stats.Removed, human(stats.RemovedBytes), stats.Referenced, human(stats.ReferencedBytes))
				if stats.Young+stats.Changed > 0 {
					fmt.Fprintf(out, ", and %d unreferenced chunks written within --grace=%s or while gc ran, %s", stats.Young+stats.Changed, *grace, human(stats.YoungBytes))
				}
				fmt.Fprintln(out)
				if errors.Is(err, context.Canceled) {
					return fmt.Errorf("interrupted: %w", err)
				}
				return err
			}
		},
	})
}
