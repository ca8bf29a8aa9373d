package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"

	"github.com/camount/camount/fetch"
	"github.com/camount/camount/location"
	"github.com/camount/camount/trust"
)

func init() {
	register(&command{
		name:    "info",
		args:    "[--json] INDEX",
		summary: "show an index's size, chunks, chunk sizes, digest and flags",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			asJSON := fs.Bool("json", false, "print JSON")
			rf := addHTTPFlags(fs) // an index URL (remote.go)
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 1 {
					return usagef("want one index")
				}
				x, raw, err := rf.loadIndexBytes(ctx, e, args[0])
				if err != nil {
					return err
				}
				kind := "blob"
				if kindOf(args[0]) == kindTreeIndex {
					kind = "tree"
				}
				zero, distinct := 0, map[[32]byte]bool{}
				for i, z := range fetch.ZeroChunks(x) {
					if z {
						zero++
					}
					distinct[x.Chunks[i].ID] = true
				}
				info := struct {
					Index          string `json:"index"`
					Kind           string `json:"kind"`
					Size           uint64 `json:"size"`
					Chunks         int    `json:"chunks"`
					DistinctChunks int    `json:"distinct_chunks"`
					ZeroChunks     int    `json:"zero_chunks"`
					Min            uint64 `json:"chunk_size_min"`
					Avg            uint64 `json:"chunk_size_avg"`
					Max            uint64 `json:"chunk_size_max"`
					Digest         string `json:"digest"`
					Flags          string `json:"feature_flags"`
					IndexDigest    string `json:"index_digest"` // of the index file: --index-digest pins it
				}{location.Redact(args[0]), kind, x.Size(), len(x.Chunks), len(distinct), zero, x.Min, x.Avg, x.Max,
					x.Digest().String(), fmt.Sprintf("%#016x", x.Flags), trust.DigestOf(raw).String()}
				if *asJSON {
					enc := json.NewEncoder(e.stdout)
					enc.SetIndent("", "  ")
					return enc.Encode(info)
				}
				w := e.stdout
				fmt.Fprintf(w, "Index:           %s (%s)\n", info.Index, info.Kind)
				fmt.Fprintf(w, "Size:            %d (%s)\n", info.Size, human(int64(info.Size)))
				fmt.Fprintf(w, "Chunks:          %d (%d distinct, %d zero)\n", info.Chunks, info.DistinctChunks, info.ZeroChunks)
				fmt.Fprintf(w, "Chunk size:      min %d, avg %d, max %d\n", info.Min, info.Avg, info.Max)
				fmt.Fprintf(w, "Digest:          %s\n", info.Digest)
				fmt.Fprintf(w, "Feature flags:   %s\n", info.Flags)
				fmt.Fprintf(w, "Index digest:    %s (pin with --index-digest)\n", info.IndexDigest)
				return nil
			}
		},
	})
	register(&command{
		name:    "list-chunks",
		args:    "INDEX",
		summary: "print the chunk IDs of an index, one per line, in stream order",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			verbose := fs.Bool("offsets", false, "also print each chunk's offset and size")
			rf := addHTTPFlags(fs) // an index URL (remote.go)
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 1 {
					return usagef("want one index")
				}
				x, err := rf.loadIndex(ctx, e, args[0])
				if err != nil {
					return err
				}
				w := bufferedStdout(e)
				defer w.Flush()
				for _, c := range x.Chunks {
					if *verbose {
						fmt.Fprintf(w, "%s %d %d\n", c.ID, c.Start, c.Size)
					} else {
						fmt.Fprintln(w, c.ID)
					}
				}
				return nil
			}
		},
	})
}
