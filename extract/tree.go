package extract

import (
	"context"
	"io"
	"path/filepath"

	"github.com/camount/camount/catar"
)

// HardlinkSource is a seed tree that can name its files equal in size and
// contents to a target file (seed.Tree implements it).
type HardlinkSource interface {
	Dir() string
	HardlinkCandidates(size int64, sum [32]byte) []string
}

// TreeOptions configure Tree. The zero value of each field is the
// documented default.
type TreeOptions struct {
	Options
	// Features selects what to restore (WITH_* bits); 0 means everything
	// the archive holds.
	Features uint64
	// KeepExtra leaves entries the archive lacks in a directory that
	// already existed; by default they are removed (casync's --delete=yes).
	KeepExtra bool
	// UndoImmutable clears chattr +i/+a of entries that must be replaced
	// or removed (casync's --undo-immutable); without it they are an error.
	UndoImmutable bool
	// Hardlinks, if any, are asked for a file equal in contents and
	// metadata to each regular file of the archive; such a file is
	// hard-linked instead of written (casync's --hardlink=yes).
	Hardlinks []HardlinkSource
	// UIDShift maps the archive's owners to the file system's (casync's
	// --uid-shift/--uid-range); nil restores them as stored.
	UIDShift *catar.UIDShift
}

// TreeResult counts what a tree extract did.
type TreeResult struct {
	Hardlinked      int64 // files linked to a seed's file
	HardlinkedBytes int64
	Deleted         int64 // entries removed because the archive lacks them
}

// Tree recreates the archive read from r under dir, which is created if
// missing. Every non-directory that may replace an existing entry is
// written under a temporary name and renamed into place (in a directory
// that was empty, under its own name); runs of zeros stay holes unless
// WriteZeros.
func Tree(ctx context.Context, r io.Reader, dir string, o TreeOptions) (*TreeResult, error) {
	xo := catar.ExtractOptions{Log: o.Log, Features: o.Features, Delete: !o.KeepExtra,
		UndoImmutable: o.UndoImmutable, NoHoles: o.WriteZeros, UIDShift: o.UIDShift}
	if len(o.Hardlinks) > 0 {
		xo.Hardlink = func(e *catar.Entry, sum [32]byte) []string {
			var out []string
			for _, h := range o.Hardlinks {
				for _, p := range h.HardlinkCandidates(e.Size, sum) {
					out = append(out, filepath.Join(h.Dir(), p))
				}
			}
			return out
		}
	}
	st, err := catar.ExtractWithStats(ctx, catar.NewDecoder(r), dir, xo)
	res := &TreeResult{}
	if st != nil {
		res.Hardlinked, res.HardlinkedBytes, res.Deleted = st.Hardlinked, st.HardlinkedBytes, st.Deleted
	}
	return res, err
}
