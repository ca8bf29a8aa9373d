package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/camount/camount/chunker"
)

// readcov: what a guest read of a block image, against the chunks holding
// it — the floor of what any lazy reader of that index must fetch.
//
//	prefetchtool readcov -index X.caibx -store DIR.castr -trace FILE
//
// FILE is a qemu trace of blk_co_preadv events (qemu -trace
// enable=blk_co_preadv,file=FILE: "... offset N bytes N ..." per read).
// Prints one line of key=value pairs: reads, read_bytes (requested),
// distinct_bytes (distinct 4 KiB blocks read), chunks (distinct non-zero
// chunks overlapping a read), chunk_bytes (their uncompressed size) and
// stored_bytes (their .cacnk files in DIR); then the whole index's
// all_chunks, all_chunk_bytes and all_stored_bytes, counted the same way.
func readcov(args []string) error {
	fs := flag.NewFlagSet("readcov", flag.ContinueOnError)
	index := fs.String("index", "", "the image's .caibx")
	store := fs.String("store", "", "its local store directory")
	trace := fs.String("trace", "", "qemu blk_co_preadv trace")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := os.Open(*index)
	if err != nil {
		return err
	}
	x, err := chunker.ReadIndex(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", *index, err)
	}
	tr, err := os.Open(*trace)
	if err != nil {
		return err
	}
	defer tr.Close()
	const blk = 4096
	blocks := map[int64]bool{}
	chunks := map[chunker.ID]bool{}
	var reads, readBytes int64
	sc := bufio.NewScanner(tr)
	for sc.Scan() {
		w := strings.Fields(sc.Text())
		off, n := int64(-1), int64(-1)
		for i := 0; i+1 < len(w); i++ {
			switch w[i] {
			case "offset":
				off, _ = strconv.ParseInt(w[i+1], 0, 64)
			case "bytes":
				n, _ = strconv.ParseInt(w[i+1], 0, 64)
			}
		}
		if off < 0 || n <= 0 {
			continue
		}
		reads++
		readBytes += n
		for b := off / blk; b*blk < off+n; b++ {
			blocks[b] = true
		}
		for i := x.Find(off); i >= 0 && i < len(x.Chunks) && int64(x.Chunks[i].Start) < off+n; i++ {
			chunks[x.Chunks[i].ID] = true
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	var n, allN int
	var raw, stored, allRaw, allStored int64
	seen := map[chunker.ID]bool{}
	for _, c := range x.Chunks {
		if seen[c.ID] {
			continue // each distinct chunk once
		}
		seen[c.ID] = true
		h := c.ID.String()
		st, err := os.Stat(filepath.Join(*store, h[:4], h+".cacnk"))
		if err != nil {
			continue // not in the store
		}
		allN++
		allRaw += int64(c.Size)
		allStored += st.Size()
		if chunks[c.ID] {
			n++
			raw += int64(c.Size)
			stored += st.Size()
		}
	}
	fmt.Printf("reads=%d read_bytes=%d distinct_bytes=%d chunks=%d chunk_bytes=%d stored_bytes=%d all_chunks=%d all_chunk_bytes=%d all_stored_bytes=%d\n",
		reads, readBytes, int64(len(blocks))*blk, n, raw, stored, allN, allRaw, allStored)
	return nil
}
