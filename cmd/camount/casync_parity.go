package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/camount/camount/catar"

	"github.com/camount/camount/chunker"
)

// digestBlob is casync digest of a BLOB_INDEX (.caibx: the digest of the
// image it describes, with the index's digest) or of a BLOB (a regular
// file or block device of no casync suffix, block devices up to their file
// system's size as make reads them; --digest selects the algorithm).
// handled is false for inputs that are trees.
func digestBlob(ctx context.Context, e *env, tf *treeFlags, in string) (handled bool, err error) {
	var r io.Reader
	var d chunker.Digest
	switch kindOf(in) {
	case kindBlobIndex:
		b, _, err := openBlob(ctx, e, in, tf.blobFlags())
		if err != nil {
			return true, err
		}
		r = io.NewSectionReader(ctxReaderAt{ctx, b}, 0, b.Size())
	case kindUnknown:
		st, err := os.Stat(in)
		if err != nil || st.IsDir() {
			return false, nil
		}
		if !st.Mode().IsRegular() && (st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0) {
			return true, fmt.Errorf("%s: neither a directory, a regular file nor a block device", in)
		}
		f, err := os.Open(in)
		if err != nil {
			return true, err
		}
		defer f.Close()
		r, _ = blockInput(e, f, st, sizeOf(f, st))
	default:
		return false, nil
	}
	// As casync: --digest for a BLOB; SHA-512/256 for a BLOB_INDEX,
	// whatever --digest or the index's digest says.
	d = chunker.SHA512_256
	if tf.sha256() && kindOf(in) != kindBlobIndex {
		d = chunker.SHA256
	}
	h := d.New()
	if _, err := io.CopyBuffer(h, r, make([]byte, 1<<20)); err != nil {
		return true, fmt.Errorf("%s: %w", in, err)
	}
	fmt.Fprintln(e.stdout, hex.EncodeToString(h.Sum(nil)))
	return true, nil
}

// listTop is list --recursive=no over an archive: the entry, then its
// children in archive order (casync lists the same, seeking past each
// child's subtree).
func listTop(a *catar.Archive, start *catar.Entry, w io.Writer, sub string) error {
	fmt.Fprintf(w, "%s %s\n", lsMode(start.Mode), listPath(start.Path, sub))
	if !start.IsDir() {
		return nil
	}
	kids, err := a.ReadDir(start)
	if err != nil {
		return err
	}
	sort.Slice(kids, func(i, j int) bool { return kids[i].Offset < kids[j].Offset })
	for _, k := range kids {
		fmt.Fprintf(w, "%s %s\n", lsMode(k.Mode), listPath(k.Path, sub))
	}
	return nil
}
